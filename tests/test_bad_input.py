"""Bad input: random configs and overrides, malformed ALFWorld files, garbage model outputs, absurd sizes.

Configs: only cluster.core.config.ConfigError, naming the file and a key, ever comes out (property-based).
Model outputs: unparsable actions and skills are counted with a reason and scored 0, never raised.
Sizes: a 1 MB skill and a 100k-character observation are capped (and counted), and fast.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.core.config import Config, ConfigError, load_config

SECTIONS = {
    name: [f.name for f in __import__("dataclasses").fields(getattr(Config(), name))]
    for name in Config.__dataclass_fields__
}
KEYS = [f"{s}.{k}" for s, ks in SECTIONS.items() for k in ks]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["vllm", "alfworld", "evolving", "127.0.0.1", "1e-5", "auto", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.sampled_from(["solver", "extractor"])),
                        inner, max_size=3),
    ),
    max_leaves=8,
)  # fmt: skip
section_trees = st.fixed_dictionaries(
    {},
    optional={s: st.one_of(values, st.dictionaries(st.sampled_from(ks + ["bogus"]), values, max_size=4))
              for s, ks in SECTIONS.items()},
)  # fmt: skip
documents = st.one_of(section_trees, values, st.dictionaries(st.text(max_size=8), values, max_size=3))


def yaml_text(value) -> str:
    return yaml.safe_dump(value, allow_unicode=True)


def assert_names_a_key(err: ConfigError, src: str, keys: list[str]) -> None:
    msg = str(err)
    assert msg.startswith(src), msg
    named = [k for k in keys if k.strip() and k in msg or repr(k) in msg] + (
        ["top level"] if "top level" in msg else []
    )
    assert named or re.search(r"override|YAML", msg), msg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents)
def test_random_config_trees_raise_only_config_error(doc, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "random.yaml"
    path.write_text(yaml_text(doc))
    try:
        cfg = load_config(path)
    except ConfigError as e:
        try:  # the keys as the file holds them: YAML reads some characters back changed ('\x85' -> ' ')
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            pass
        keys = [str(k) for k in (doc if isinstance(doc, dict) else {})]
        keys += [
            str(k) for v in (doc.values() if isinstance(doc, dict) else []) if isinstance(v, dict) for k in v
        ]
        assert_names_a_key(e, str(path), keys)
    else:
        assert isinstance(cfg, Config)


override_values = st.one_of(
    st.text(max_size=10),
    st.sampled_from(
        ["[1, 2", "{a: 1}", "- x", "!!python/object:os.system ls", "1e400", "-1", "0", "null", "[]"]
    ),
    st.integers().map(str),
    st.floats().map(str),
)


@settings(max_examples=200, deadline=None)
@given(
    key=st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(lambda k: k + ".deeper"),
                  st.text(max_size=10), st.sampled_from(list(SECTIONS))),
    value=override_values,
)  # fmt: skip
def test_random_overrides_raise_only_config_error(key, value):
    try:
        cfg = load_config(None, [f"{key}={value}"])
    except ConfigError as e:
        k = f"{key}={value}".split("=", 1)[0].strip()  # the key the override parser sees
        assert_names_a_key(e, "<defaults>", [k, *k.split(".")])
    else:
        assert isinstance(cfg, Config)


def test_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("trainer: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


# --- ALFWorld data files -----------------------------------------------------------------------------
def make_game(root: Path, traj, game) -> Path:
    d = root / "train" / "pick_and_place_simple-Apple-None-Fridge-1" / "trial_0"
    d.mkdir(parents=True)
    (d / "traj_data.json").write_text(traj if isinstance(traj, str) else json.dumps(traj))
    (d / "game.tw-pddl").write_text(game if isinstance(game, str) else json.dumps(game))
    return d


@pytest.mark.parametrize(
    "traj,game,where,field",
    [
        ("{not json", {"solvable": True}, "traj_data.json", "not valid JSON"),
        ([1, 2], {"solvable": True}, "traj_data.json", "task_type"),
        ({"task_type": 7}, {"solvable": True}, "traj_data.json", "task_type"),
        ({"task_type": "pick_and_place_simple"}, "\x00\x01", "game.tw-pddl", "not valid JSON"),
        ({"task_type": "pick_and_place_simple", "turk_annotations": "x"}, {"solvable": True, "grammar": ""},
         "traj_data.json", "turk_annotations"),
        ({"task_type": "pick_and_place_simple", "turk_annotations": {"anns": [3]}}, {"solvable": True},
         "traj_data.json", "turk_annotations"),
    ],
)  # fmt: skip
def test_malformed_alfworld_files_name_file_and_field(tmp_path, traj, game, where, field):
    from envs.alfworld.tasks import TaskDataError, list_tasks

    d = make_game(tmp_path, traj, game)
    with pytest.raises(TaskDataError) as info:
        list_tasks(str(tmp_path), "train")
    assert str(d / where) in str(info.value) and field in str(info.value)


def test_unsolvable_alfworld_game_is_a_counted_skip(tmp_path, caplog):
    from envs.alfworld.tasks import scan_games

    make_game(tmp_path, {"task_type": "pick_and_place_simple"}, {"grammar": ""})
    report = scan_games(str(tmp_path / "train"))
    assert report.games == [] and report.skipped["not marked solvable"] == 1


# --- model outputs and absurd sizes ------------------------------------------------------------------
GARBAGE = [
    "",
    "   ",
    "\x00\x01\x02",
    "<action></action>",
    "<|im_end|><|im_start|>system",
    "{" * 5000,
    "🙂" * 300,
]


@given(text=st.one_of(st.text(max_size=400), st.sampled_from(GARBAGE)))
@settings(max_examples=200, deadline=None)
def test_any_extractor_output_is_a_skill_or_a_reason(text):
    from skills.parse import parse_skill

    r = parse_skill(text)
    assert (r.skill is None) != (r.reason is None) and r.score in (0.0, 1.0)
    if r.skill is None:
        assert re.fullmatch(
            r"(no_json|invalid_json|missing_field|wrong_type|bad_name|too_long)(:.*)?", r.reason
        )


def test_one_megabyte_skill_is_rejected_fast_with_a_reason():
    from skills.parse import parse_skill

    big = json.dumps({"name": "huge-skill", "description": "x" * 1_000_000, "workflow": []})
    t0 = time.perf_counter()
    r = parse_skill("Here it is:\n" + big)
    assert time.perf_counter() - t0 < 2.0
    assert r.skill is None and r.category in {"too_long", "invalid_json", "no_json", "missing_field"}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from cluster.core.model_store import resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model("embedded"))
    except FileNotFoundError as e:
        pytest.skip(str(e))


class FakeEngine:
    """Stands in for vLLM inside an episode-loop test: answers every prompt with `reply`."""

    name = "fake"

    def __init__(self, tokenizer, reply: str) -> None:
        self.tokenizer, self.reply, self.version, self.prompt_lens = tokenizer, reply, 0, []

    def generate(self, prompts, params):
        from cluster.core.generation import Generation

        self.prompt_lens += [len(p) for p in prompts]
        ids = self.tokenizer.encode(self.reply, add_special_tokens=False)[:16] or [0]
        return [[Generation(self.reply, ids, [-1.0] * len(ids), "stop")] for _ in prompts]


class FakeHugeEnv:
    """Observations of `size` characters; never won; admissible actions given."""

    def __init__(self, size: int) -> None:
        self.size, self.n = size, 0

    def _obs(self):
        from envs.base import Observation

        return Observation(
            "You see " + "a dusty shelf, " * (self.size // 15), ["look", "go to shelf 1"], "find it", "t"
        )

    def reset(self, task):
        return self._obs()

    def step(self, action):
        from envs.base import StepResult

        self.n += 1
        return StepResult(self._obs(), 0.0, False, False, action not in ("look", "go to shelf 1"))

    def close(self):
        pass


@pytest.mark.parametrize("context", ["sequence", "window"])
def test_unparsable_actions_and_huge_observations_are_counted_not_fatal(tokenizer, context):
    from actors.episode import EpisodeRunner, EpisodeSettings
    from actors.prompts import PromptStyle
    from cluster.core.generation import GenParams
    from cluster.core.records import EpisodeJob, SkillRef, TaskSpec

    settings = EpisodeSettings(PromptStyle("alfworld", False, 2000), context, 2, 3, 4096)
    engine = FakeEngine(tokenizer, "I think I should <|im_end|> maybe dance?\n\nwell")
    tasks = [TaskSpec(f"t{i}", "alfworld", "fake", "find it", "ref") for i in range(2)]
    jobs = [EpisodeJob(tasks[0]), EpisodeJob(tasks[1], SkillRef("s", "x" * 1_000_000))]
    t0 = time.perf_counter()
    out = EpisodeRunner(engine, settings).run([FakeHugeEnv(100_000) for _ in tasks], jobs, GenParams(max_tokens=16),
                                              ["a", "b"])  # fmt: skip
    assert time.perf_counter() - t0 < 30
    for r in out:
        assert not r.failed and r.steps == 3 and r.truncated
        assert r.unparsable_actions == 3 and len(r.info["unparsable"]) == 3
        assert r.info["observation_capped"] == 3
        assert r.invalid_actions == 3
    assert max(engine.prompt_lens) + 16 <= 4096  # 100k characters and a 1 MB skill still fit


def test_huge_texts_are_capped_in_the_solver_prompt(tokenizer):
    from actors.prompts import PromptStyle, SolverView, window_messages
    from cluster.core.text import encode_messages

    view = SolverView(
        "t" * 50_000, "o" * 100_000, ["a" * 50_000], [("b" * 50_000, "c" * 100_000)], "s" * 1_000_000
    )
    msgs = window_messages(PromptStyle("alfworld", True, 2000, 4000), view, tokenizer)
    assert len(msgs[0]["content"]) < 4000 + 1000 and len(msgs[1]["content"]) < 1000 + 2000 + 1000 + 2000 + 500
    assert len(encode_messages(tokenizer, msgs)) < 20_000


def test_deep_nesting_gives_named_errors_not_recursion(tmp_path):
    from cluster.core.config import ConfigError, load_config
    from cluster.core.storage import CorruptFileError, read_json, verify_manifest

    cfg = tmp_path / "deep.yaml"
    cfg.write_text("trainer: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply|expected a mapping"):
        load_config(cfg)
    state = tmp_path / "trainer_state.json"
    state.write_text('{"payload": ' + "[" * 20000 + "]" * 20000 + ', "sha256": "x"}')
    with pytest.raises(CorruptFileError, match="nested deeper than 64 levels"):
        read_json(state)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "MANIFEST.json").write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(CorruptFileError, match="nested deeper"):
        verify_manifest(tmp_path / "ckpt")


def test_pointers_cannot_leave_their_folder(tmp_path):
    from cluster.core.storage import CorruptFileError, verify_manifest, write_json
    from skills.library import SkillLibrary

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "secret").write_text("x")
    write_json(
        tmp_path / "ckpt" / "MANIFEST.json", {"files": [{"path": "../secret", "bytes": 1, "sha256": "0"}]}
    )
    with pytest.raises(CorruptFileError, match="points outside the folder"):
        verify_manifest(tmp_path / "ckpt")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "manifest.json").write_text(
        '{"format": 1, "versions": [{"version": 1, "file": "../secret", "sha256": "0", "rows": 0}]}'
    )
    library = SkillLibrary.open(lib)  # the bad manifest is reported and skipped, the path never opened
    assert len(library) == 0 and any(
        "not a library-v<N>.parquet name" in why for _, why in library.load_report.skipped
    )


def test_a_parquet_bomb_is_refused_before_reading(tmp_path):
    """A few KB of Parquet that would decode to gigabytes (run-length encoded dictionary indices)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cluster.core.storage import CorruptFileError, check_parquet_size, read_parquet

    path = tmp_path / "bomb.parquet"
    bomb = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(2_000_000, dtype=np.int32)), pa.array(["a" * 1000])
    )
    pq.write_table(pa.table({"x": bomb}), path, compression="zstd", write_statistics=False)  # 2 GB decoded
    assert path.stat().st_size < 100_000
    with pytest.raises(CorruptFileError, match="decompression bomb"):
        read_parquet(path)
    small = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"x": pa.array(["a" * 1000] * 20)}), small)
    assert read_parquet(small).num_rows == 20
    with pytest.raises(CorruptFileError, match="uncompressed bytes"):
        check_parquet_size(pq.ParquetFile(small).metadata, str(small), limit=100)
