"""Mind2Web from the Hugging Face Hub's Parquet release (one row per action): same records, same checks."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from envs.mind2web import hub
from envs.mind2web.env import Mind2WebEnv
from envs.mind2web.evaluate import evaluate
from envs.mind2web.loader import (
    SPLITS,
    Mind2WebFormatError,
    TaskStore,
    available_splits,
    find_split_files,
    iter_json_records,
    iter_records,
)
from envs.mind2web.tasks import SAMPLE_DIR, list_tasks
from tests.test_mind2web import make_task, write_split

# ------------------------------------------------------------------ the Hub's format, written by hand

# Column order and types of osunlp/Multimodal-Mind2Web's dataset card (`screenshot` is datasets' Image:
# a struct of bytes and path; `target_action_index` is a string there).
HUB_SCHEMA = pa.schema(
    [
        ("action_uid", pa.string()),
        ("raw_html", pa.string()),
        ("cleaned_html", pa.string()),
        ("operation", pa.string()),
        ("pos_candidates", pa.list_(pa.string())),
        ("neg_candidates", pa.list_(pa.string())),
        ("website", pa.string()),
        ("domain", pa.string()),
        ("subdomain", pa.string()),
        ("annotation_id", pa.string()),
        ("confirmed_task", pa.string()),
        ("screenshot", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("action_reprs", pa.list_(pa.string())),
        ("target_action_index", pa.string()),
        ("target_action_reprs", pa.string()),
    ]
)
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def hub_rows(task: dict) -> list[dict]:
    """A JSON-release task -> its Hub rows, one per action, in the Hub's encoding."""
    rows = []
    for i, a in enumerate(task["actions"]):
        rows.append(
            {
                "action_uid": a["action_uid"],
                "raw_html": a.get("raw_html"),
                "cleaned_html": a["cleaned_html"],
                "operation": json.dumps(a["operation"]),
                "pos_candidates": [json.dumps(c) for c in a["pos_candidates"]],
                "neg_candidates": [json.dumps(c) for c in a["neg_candidates"]],
                **{k: task[k] for k in ("website", "domain", "subdomain", "annotation_id", "confirmed_task")},
                "screenshot": {"bytes": PNG, "path": None},
                "action_reprs": task["action_reprs"],
                "target_action_index": str(i),
                "target_action_reprs": task["action_reprs"][i],
            }
        )
    return rows


def write_hub(
    root: Path, split: str, rows: list[dict], shards: int = 1, schema: pa.Schema = HUB_SCHEMA, **kw
) -> list[Path]:
    """`data/<split>-0000k-of-0000n.parquet`, rows cut contiguously (a task may straddle two shards)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    kw.setdefault("row_group_size", 2)
    out = []
    per = -(-len(rows) // shards)
    for k in range(shards):
        path = root / "data" / f"{split}-{k:05d}-of-{shards:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[k * per : (k + 1) * per], schema=schema), path, **kw)
        out.append(path)
    return out


SITES = [
    ("bikeshop", "Shopping", "gravel bike", "Large"),
    ("petstore", "Shopping", "cat food", "Small"),
    ("parkpass", "Travel", "Yosemite", "Large"),
    ("libraryhub", "Info", "poetry", "Small"),
]


def _tasks() -> list[dict]:
    return [make_task(f"t{i}", *site) for i, site in enumerate(SITES)]


def _no_raw(r):
    return dataclasses.replace(r, actions=tuple(dataclasses.replace(a, raw_html=None) for a in r.actions))


def _same(a, b) -> bool:
    """Equal records apart from the file they came from."""
    return [dataclasses.replace(_no_raw(r), source="") for r in a] == [
        dataclasses.replace(_no_raw(r), source="") for r in b
    ]


# ------------------------------------------------------------------ loading


def test_hub_shards_load_into_the_json_releases_records(tmp_path):
    tasks = _tasks()
    src = write_split(tmp_path / "json", "test_task", tasks)
    shards = write_hub(tmp_path / "hub", "test_task", [r for t in tasks for r in hub_rows(t)], shards=5)
    from_json = list(iter_json_records(src))
    from_hub = list(hub.iter_hub_records(shards))
    assert _same(from_hub, from_json)  # 12 rows in 5 shards: tasks straddle shards
    assert [r.record_index for r in from_hub] == [0, 1, 2, 3] and from_hub[1].source == str(shards[1])
    assert all(a.raw_html is None for r in from_hub for a in r.actions)  # raw_html is never read

    # list_tasks / the cache / TaskStore: identical specs and records, only the refs differ
    jt, ht = (
        list_tasks(tmp_path / "json", "test_task", tmp_path / "c"),
        list_tasks(tmp_path / "hub", "test_task", tmp_path / "c"),
    )
    strip = [dataclasses.replace(t, ref="") for t in ht]
    assert strip == [dataclasses.replace(t, ref="") for t in jt]
    assert len({t.ref.rpartition("#")[0] for t in ht}) == 1  # one cache for the split's shards
    store = TaskStore()
    assert _same([store.get(t.ref) for t in ht], from_json)


def test_hub_rows_in_any_order_and_decoded_variants(tmp_path):
    """Rows shuffled within and across tasks; an int index; operation and candidates as structs."""
    tasks = _tasks()
    rows = [r for t in tasks for r in hub_rows(t)]
    rows = rows[::-1]  # every task's rows backwards, the tasks backwards
    cand = pa.struct(
        [
            ("tag", pa.string()),
            ("attributes", pa.string()),
            ("backend_node_id", pa.string()),
            ("is_original_target", pa.bool_()),
            ("is_top_level_target", pa.bool_()),
        ]
    )
    schema = (
        HUB_SCHEMA.set(
            HUB_SCHEMA.get_field_index("target_action_index"), pa.field("target_action_index", pa.int64())
        )
        .set(
            HUB_SCHEMA.get_field_index("operation"),
            pa.field(
                "operation",
                pa.struct([("op", pa.string()), ("original_op", pa.string()), ("value", pa.string())]),
            ),
        )
        .set(HUB_SCHEMA.get_field_index("pos_candidates"), pa.field("pos_candidates", pa.list_(cand)))
    )
    for r in rows:
        r["target_action_index"] = int(r["target_action_index"])
        r["operation"] = json.loads(r["operation"])
        r["pos_candidates"] = [json.loads(c) for c in r["pos_candidates"]]
        # attributes decoded inside the candidate's JSON: re-encoded to the official string
        r["neg_candidates"] = [
            json.dumps({**json.loads(c), "attributes": json.loads(json.loads(c)["attributes"])})
            for c in r["neg_candidates"]
        ]
    shards = write_hub(tmp_path, "train", rows, shards=2, schema=schema)
    got = sorted(hub.iter_hub_records(shards), key=lambda r: r.annotation_id)
    want = list(iter_json_records(write_split(tmp_path / "j", "train", tasks)))
    assert _same(
        [dataclasses.replace(r, record_index=0) for r in got],
        [dataclasses.replace(r, record_index=0) for r in want],
    )


def test_find_split_files_and_available_splits_for_hub_layouts(tmp_path):
    rows = hub_rows(make_task("a", "site", "D", "x", "Small"))
    root = tmp_path / "m2w"
    write_hub(root, "test_task", rows)
    write_hub(root, "train", rows, shards=2)
    assert [p.name for p in find_split_files(root, "train")] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert available_splits(root) == ["train", "test_task"]
    # pointed at data/ itself, or shards under data/<split>/ (datasets' parquet export)
    assert [p.name for p in find_split_files(root / "data", "test_task")] == [
        "test_task-00000-of-00001.parquet"
    ]
    (tmp_path / "x" / "data" / "test_domain").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(rows, schema=HUB_SCHEMA), tmp_path / "x/data/test_domain/0000.parquet"
    )
    assert len(list_tasks(tmp_path / "x", "test_domain", tmp_path / "c")) == 1
    with pytest.raises(FileNotFoundError, match=r"data/test_website-\*\.parquet"):
        find_split_files(root, "test_website")
    # our own cache files never pass for Hub shards, even when cached into the data folder
    list_tasks(root, "test_task", root / "data")
    assert len(find_split_files(root, "test_task")) == 1


def test_only_the_needed_columns_are_read(tmp_path, monkeypatch):
    shards = write_hub(tmp_path, "train", hub_rows(make_task("a", "s", "D", "q", "Small")))
    seen = []
    orig = pq.ParquetFile.iter_batches

    def spy(self, *a, **kw):
        seen.append(kw.get("columns"))
        assert len(kw.get("row_groups") or []) == 1  # one row group at a time
        return orig(self, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    assert len(list(iter_records(shards[0]))) == 1  # iter_records recognises a Hub shard
    assert seen and all(
        cols is not None and {"screenshot", "raw_html", "target_action_reprs"}.isdisjoint(cols)
        for cols in seen
    )


def test_cache_is_reused_and_replaced_when_a_shard_changes(tmp_path):
    rows = [r for t in _tasks() for r in hub_rows(t)]
    shards = write_hub(tmp_path / "d", "train", rows, shards=2)
    cache = tmp_path / "cache"
    ref = list_tasks(tmp_path / "d", "train", cache)[0].ref.rpartition("#")[0]
    assert list_tasks(tmp_path / "d", "train", cache)[0].ref.rpartition("#")[0] == ref
    st = shards[1].stat()
    os.utime(shards[1], ns=(st.st_mtime_ns + 10**9, st.st_mtime_ns + 10**9))
    ref2 = list_tasks(tmp_path / "d", "train", cache)[0].ref.rpartition("#")[0]
    assert ref2 != ref and not Path(ref).exists() and Path(ref2).exists()


# ------------------------------------------------------------------ the env and evaluation


def test_episode_runs_on_hub_files(tmp_path):
    write_hub(tmp_path / "hub", "test_task", [r for t in _tasks() for r in hub_rows(t)], shards=3)
    task = next(t for t in list_tasks(tmp_path / "hub", "test_task", tmp_path / "c") if "bikeshop" in t.text)
    env = Mind2WebEnv(mode="paper", seed=3)
    obs = env.reset(task)
    assert 'textbox "Search bikeshop"' in obs.text
    done, steps = False, 0
    while not done:
        res = env.step(env.gold_action())
        done, steps = res.done, steps + 1
        assert res.info["step_success"]
    assert res.won and res.reward == 1.0 and steps == 3


def _sample_as_hub(root: Path) -> Path:
    for split in SPLITS:
        tasks = [t for f in find_split_files(SAMPLE_DIR, split) for t in json.loads(f.read_text())]
        write_hub(root, split, [r for t in tasks for r in hub_rows(t)], shards=2, row_group_size=8)
    return root


def test_sample_as_hub_evaluates_exactly_like_the_json_release(tmp_path):
    root = _sample_as_hub(tmp_path / "hub")
    assert available_splits(root) == list(SPLITS)
    for policy, mode in (("oracle", "paper"), ("random", "teacher_forced")):
        a = evaluate(SAMPLE_DIR, "test_domain", policy, mode, seed=1, cache_dir=tmp_path / "c")
        b = evaluate(root, "test_domain", policy, mode, seed=1, cache_dir=tmp_path / "c")
        a.pop("data_dir"), b.pop("data_dir")
        assert a == b
    assert a["tasks"] > 0


# ------------------------------------------------------------------ malformed files


def _bad_rows(mutate) -> list[dict]:
    """ok0 on rows 0-2, bad1 on rows 3-5; `mutate(rows)` breaks them."""
    rows = [
        r
        for t in (make_task("ok0", "s", "D", "q", "Small"), make_task("bad1", "s", "D", "q", "Large"))
        for r in hub_rows(t)
    ]
    mutate(rows)
    return rows


def _set(row: int, key: str, val):
    return lambda rows: rows[row].__setitem__(key, val)


def _neg(row: int, i: int, **changes):
    def mutate(rows):
        c = json.loads(rows[row]["neg_candidates"][i])
        rows[row]["neg_candidates"][i] = json.dumps({**c, **changes})

    return mutate


@pytest.mark.parametrize(
    "mutate,row,aid,field,msg",
    [
        (_set(4, "operation", '{"op": "CLICK", "value": '), 4, "bad1", "operation", "not valid JSON"),
        (_set(4, "operation", '["CLICK"]'), 4, "bad1", "operation", "expected dict"),
        (
            _set(5, "operation", json.dumps({"op": "HOVER", "original_op": "HOVER", "value": ""})),
            5,
            "bad1",
            "operation.op",
            "HOVER",
        ),
        (
            _set(3, "operation", json.dumps({"op": "TYPE", "value": "x"})),
            3,
            "bad1",
            "operation.original_op",
            "missing",
        ),
        (
            lambda rows: rows[3]["pos_candidates"].__setitem__(0, "{tag: a"),
            3,
            "bad1",
            "pos_candidates[0]",
            "not valid JSON",
        ),
        (_neg(4, 1, attributes="{nope"), 4, "bad1", "neg_candidates[1].attributes", "not a JSON string"),
        (
            _neg(4, 0, is_original_target="no"),
            4,
            "bad1",
            "neg_candidates[0].is_original_target",
            "expected bool",
        ),
        (_set(3, "target_action_index", "one"), 3, "bad1", "target_action_index", "expected an integer"),
        (_set(3, "target_action_index", "3"), 3, "bad1", "target_action_index", "out of range"),
        (_set(4, "target_action_index", "0"), 4, "bad1", "target_action_index", "duplicate 0: also"),
        (lambda rows: rows.pop(4), 3, "bad1", "target_action_index", "no row for target_action_index [1]"),
        (
            _set(5, "confirmed_task", "something else"),
            5,
            "bad1",
            "confirmed_task",
            "differs from the task's first row",
        ),
        (_set(4, "action_reprs", ["a", "b", "c"]), 4, "bad1", "action_reprs", "differs"),
        (_set(3, "website", None), 3, "bad1", "website", "expected str, got NoneType"),
        (_set(3, "annotation_id", None), 3, "", "annotation_id", "expected str"),
        (_set(5, "cleaned_html", None), 5, "bad1", "cleaned_html", "expected str"),
    ],
)
def test_malformed_row_names_file_row_and_field(tmp_path, mutate, row, aid, field, msg):
    (path,) = write_hub(tmp_path, "train", _bad_rows(mutate))
    with pytest.raises(Mind2WebFormatError) as ei:
        list(hub.iter_hub_records([path]))
    e = ei.value
    assert (e.file, e.index, e.annotation_id, e.field) == (str(path), row, aid, field)
    assert f"{path}: row {row}" in str(e) and msg in str(e)


def test_a_row_after_its_task_was_complete_is_a_duplicate(tmp_path):
    rows = _bad_rows(lambda rows: rows.append(dict(rows[1])))  # ok0's index 1 again, in the next shard
    shards = write_hub(tmp_path, "train", rows, shards=2)
    with pytest.raises(
        Mind2WebFormatError, match=r"row 2 \(annotation_id='ok0'\): field target_action_index: duplicate 1"
    ) as ei:
        list(hub.iter_hub_records(shards))
    assert ei.value.file == str(shards[1])


def test_missing_column_is_named(tmp_path):
    rows = _bad_rows(lambda rows: None)
    for col in ("target_action_index", "operation", "annotation_id"):
        schema = HUB_SCHEMA.remove(HUB_SCHEMA.get_field_index(col))
        (path,) = write_hub(
            tmp_path / col, "train", [{k: v for k, v in r.items() if k != col} for r in rows], schema=schema
        )
        with pytest.raises(Mind2WebFormatError, match=f"missing column.*{col}") as ei:
            list(hub.iter_hub_records([path]))
        assert ei.value.field == col and ei.value.file == str(path)
    # screenshot, raw_html and target_action_reprs are optional (never read)
    schema = pa.schema(
        [f for f in HUB_SCHEMA if f.name not in ("screenshot", "raw_html", "target_action_reprs")]
    )
    (path,) = write_hub(tmp_path / "lean", "train", rows, schema=schema)
    assert len(list(hub.iter_hub_records([path]))) == 2


def test_errors_surface_through_list_tasks_and_leave_no_cache(tmp_path):
    write_hub(tmp_path / "d", "test_task", _bad_rows(_set(5, "confirmed_task", "other")), shards=2)
    cache = tmp_path / "cache"
    with pytest.raises(Mind2WebFormatError, match="test_task-00001-of-00002.parquet: row 2 .*confirmed_task"):
        list_tasks(tmp_path / "d", "test_task", cache)
    assert not cache.exists() or not any(cache.iterdir())


def test_a_small_file_claiming_huge_row_groups_is_refused_before_reading(tmp_path):
    rows = _bad_rows(lambda rows: None)
    rows[0]["cleaned_html"] = os.urandom(600_000).hex()  # 1.2 MB that does not compress much
    (path,) = write_hub(tmp_path / "real", "train", rows, row_group_size=100)
    data = path.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little")
    forged = tmp_path / "train-00000-of-00001.parquet"  # the footer alone: its row group lies past the end
    forged.write_bytes(b"PAR1" + data[-(footer + 8) :])
    assert forged.stat().st_size < 20_000
    with pytest.raises(
        Mind2WebFormatError, match="but the file has .* bytes \\(truncated or corrupt\\)"
    ) as ei:
        list(hub.iter_hub_records([forged]))
    assert ei.value.file == str(forged) and "row group 0" in str(ei.value)

    # honest claims, but a row group that would decompress to far more than the file holds
    bomb_rows = _bad_rows(lambda rows: rows[0].__setitem__("cleaned_html", "a" * 10_000_000))
    (bomb,) = write_hub(tmp_path / "bomb", "train", bomb_rows, row_group_size=100, compression="zstd")
    assert bomb.stat().st_size < 50_000
    with pytest.raises(Mind2WebFormatError, match="row group 0 claims .* compressed"):
        list(hub.iter_hub_records([bomb]))

    # and a row group over the memory bound (default 2 GiB of the columns read; lowered here)
    with pytest.raises(Mind2WebFormatError, match="limit 10000\\): rewrite the file with smaller row groups"):
        list(hub.iter_hub_records([path], max_row_group_bytes=10_000))

    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not parquet at all")
    with pytest.raises(Mind2WebFormatError, match="not a readable Parquet file"):
        list(hub.iter_hub_records([junk]))
