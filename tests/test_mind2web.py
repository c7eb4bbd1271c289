"""Mind2Web: loader (validation, layouts, Parquet cache), snapshot, replay env, evaluation, CLI."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import random
from pathlib import Path

import pytest

from envs.mind2web import make_sample
from envs.mind2web.cli import add_commands
from envs.mind2web.env import Mind2WebEnv, parse_web_action
from envs.mind2web.evaluate import evaluate
from envs.mind2web.loader import (
    SPLITS,
    Mind2WebFormatError,
    cached_parquet,
    find_split_files,
    iter_json_records,
    iter_records,
    write_parquet,
)
from envs.mind2web.metrics import aggregate
from envs.mind2web.snapshot import build_page_snapshot, build_snapshot, find_elements, value_phrases
from envs.mind2web.tasks import SAMPLE_DIR, list_tasks

# ------------------------------------------------------------------ a tiny official-format builder


def _cand(nid: str, tag: str, positive: bool, **attrs) -> dict:
    return {
        "tag": tag,
        "attributes": json.dumps({"backend_node_id": nid, **attrs}),
        "backend_node_id": nid,
        "is_original_target": positive,
        "is_top_level_target": positive,
    }


def _page(title: str, base: int) -> tuple[str, list[tuple[str, str, dict]]]:
    """A small page: (html, [(node id, tag, attrs)]) with a text box, a select, two buttons, a link."""
    ids = [str(base + i) for i in range(8)]
    html = (
        f'<html backend_node_id="{ids[0]}"><body backend_node_id="{ids[1]}">'
        f'<a backend_node_id="{ids[2]}" href="/">{title} home</a>'
        f'<input backend_node_id="{ids[3]}" type="text" aria_label="Search {title}"/>'
        f'<select backend_node_id="{ids[4]}" aria_label="Size"><option backend_node_id="{ids[5]}">Small</option>'
        f'<option backend_node_id="{ids[6]}">Large</option></select>'
        f'<button backend_node_id="{ids[7]}"><span>Go</span></button>'
        f'<button backend_node_id="{base + 20}">Cancel</button></body></html>'
    )
    elems = [
        (ids[2], "a", {"href": "/"}),
        (ids[3], "input", {"type": "text"}),
        (ids[4], "select", {}),
        (ids[7], "button", {}),
        (str(base + 20), "button", {}),
    ]
    return html, elems


def make_task(aid: str, website: str, domain: str, query: str, size: str) -> dict:
    """Three steps: TYPE the query, SELECT the size, CLICK Go."""
    steps = [(1, "TYPE", query), (2, "SELECT", size), (3, "CLICK", "")]
    actions = []
    for i, (target, op, value) in enumerate(steps):
        html, elems = _page(website, 100 * (i + 1))
        actions.append(
            {
                "action_uid": f"{aid}-{i}",
                "raw_html": html,
                "cleaned_html": html,
                "operation": {"op": op, "original_op": op, "value": value},
                "pos_candidates": [_cand(elems[target][0], elems[target][1], True, **elems[target][2])],
                "neg_candidates": [
                    _cand(n, t, False, **a) for j, (n, t, a) in enumerate(elems) if j != target
                ],
            }
        )
    return {
        "annotation_id": aid,
        "website": website,
        "domain": domain,
        "subdomain": "Misc",
        "confirmed_task": f'Search {website} for "{query}" in size {size}',
        "action_reprs": [
            f"[textbox]  Search -> TYPE: {query}",
            f"[combobox]  Size -> SELECT: {size}",
            "[button]  Go -> CLICK",
        ],
        "actions": actions,
    }


def write_split(root: Path, split: str, records: list[dict], name: str | None = None) -> Path:
    folder = root / "data" / split
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{split}_0.json")
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def small_dir(tmp_path):
    recs = [
        make_task(f"t{i}", site, dom, q, s)
        for i, (site, dom, q, s) in enumerate(
            [
                ("bikeshop", "Shopping", "gravel bike", "Large"),
                ("petstore", "Shopping", "cat food", "Small"),
                ("parkpass", "Travel", "Yosemite", "Large"),
                ("libraryhub", "Info", "poetry", "Small"),
            ]
        )
    ]
    write_split(tmp_path / "m2w", "test_task", recs)
    return tmp_path / "m2w"


# ------------------------------------------------------------------ loader


def test_find_split_files_layouts(tmp_path):
    rec = [make_task("a", "site", "D", "x", "Small")]
    official = tmp_path / "official"
    write_split(official, "train", rec, "train_0.json")
    write_split(official, "train", rec, "train_1.json")
    assert [p.name for p in find_split_files(official, "train")] == ["train_0.json", "train_1.json"]
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("test_task_0.json", "test_website_0.json", "test_domain.json"):
        (flat / name).write_text(json.dumps(rec))
    assert [p.name for p in find_split_files(flat, "test_task")] == ["test_task_0.json"]
    assert [p.name for p in find_split_files(flat, "test_domain")] == ["test_domain.json"]
    with pytest.raises(FileNotFoundError, match="data/train"):
        find_split_files(flat, "train")


def _bad(tmp_path, mutate) -> Path:
    recs = [make_task("ok0", "s", "D", "q", "Small"), make_task("bad1", "s", "D", "q", "Small")]
    mutate(recs[1])
    return write_split(tmp_path / "bad", "train", recs)


@pytest.mark.parametrize(
    "mutate,field,msg",
    [
        (lambda r: r.pop("confirmed_task"), "confirmed_task", "missing"),
        (lambda r: r.__setitem__("website", 7), "website", "expected str, got int"),
        (lambda r: r["action_reprs"].__setitem__(1, None), "action_reprs[1]", "expected str"),
        (
            lambda r: r["actions"][1]["operation"].__setitem__("op", "HOVER"),
            "actions[1].operation.op",
            "HOVER",
        ),
        (
            lambda r: r["actions"][0]["pos_candidates"][0].__setitem__("is_original_target", "yes"),
            "actions[0].pos_candidates[0].is_original_target",
            "expected bool",
        ),
        (
            lambda r: r["actions"][2]["neg_candidates"][1].__setitem__("attributes", "{not json"),
            "actions[2].neg_candidates[1].attributes",
            "not a JSON string",
        ),
        (lambda r: r["actions"][0].pop("cleaned_html"), "actions[0].cleaned_html", "missing"),
        (lambda r: r["actions"].pop(), "action_reprs", "3 entries but 2 actions"),
    ],
)
def test_malformed_record_names_file_record_field(tmp_path, mutate, field, msg):
    path = _bad(tmp_path, mutate)
    with pytest.raises(Mind2WebFormatError) as ei:
        list(iter_json_records(path))
    e = ei.value
    assert (e.file, e.index, e.annotation_id, e.field) == (str(path), 1, "bad1", field)
    assert str(path) in str(e) and "record 1" in str(e) and "bad1" in str(e) and msg in str(e)


def test_bad_json_and_wrong_top_level(tmp_path):
    good = json.dumps([make_task("a", "s", "D", "q", "Small")])
    trunc = tmp_path / "trunc.json"
    trunc.write_text(good[:-1] + ', {"annotation_id": "b", ')
    with pytest.raises(Mind2WebFormatError, match=r"trunc\.json: record 1: invalid JSON"):
        list(iter_json_records(trunc))
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"annotation_id": "a"}))
    with pytest.raises(Mind2WebFormatError, match="JSON array"):
        list(iter_json_records(obj))


def test_malformed_file_leaves_no_cache(tmp_path):
    path = _bad(tmp_path, lambda r: r.pop("domain"))
    cache = tmp_path / "cache"
    with pytest.raises(Mind2WebFormatError, match="field domain"):
        list_tasks(tmp_path / "bad", "train", cache)
    assert not any(cache.iterdir())  # the temp file is removed, nothing half-written stays
    assert path.exists()


def test_duplicate_annotation_id_across_files(tmp_path):
    rec = [make_task("same", "s", "D", "q", "Small")]
    write_split(tmp_path / "d", "train", rec, "train_0.json")
    write_split(tmp_path / "d", "train", rec, "train_1.json")
    with pytest.raises(Mind2WebFormatError, match="'same' also in"):
        list_tasks(tmp_path / "d", "train", tmp_path / "cache")


def test_parquet_round_trip_and_stale_cache(tmp_path):
    src = write_split(
        tmp_path / "d", "train", [make_task(f"t{i}", "s", "D", f"q{i}", "Large") for i in range(20)]
    )
    cache = tmp_path / "cache"
    original = list(iter_json_records(src))
    full = tmp_path / "full.parquet"
    assert write_parquet(iter(original), full, keep_raw_html=True) == 20
    assert list(iter_records(full)) == original  # exact, raw_html included
    p = cached_parquet(src, cache)  # default: raw_html dropped
    assert [r.actions[0].raw_html for r in iter_records(p)] == [None] * 20
    assert list(iter_records(p)) == [
        dataclasses.replace(r, actions=tuple(dataclasses.replace(a, raw_html=None) for a in r.actions))
        for r in original
    ]
    assert cached_parquet(src, cache) == p  # reused
    # an edited source gets a new cache file and the stale one goes
    src.write_text(json.dumps([make_task("new", "s", "D", "q", "Small")]))
    os.utime(src, ns=(p.stat().st_mtime_ns + 10**9, p.stat().st_mtime_ns + 10**9))
    p2 = cached_parquet(src, cache)
    assert p2 != p and not p.exists()
    assert [r.annotation_id for r in iter_records(p2)] == ["new"]


# ------------------------------------------------------------------ snapshot


def test_find_elements_text_options_void_and_stray_tags():
    html = (
        '<div backend_node_id="1"><p>Hello <b backend_node_id="2">big</b></p></i>'
        '<input backend_node_id="3" aria_label="Email">'
        '<select backend_node_id="4"><option>One</option><option> Two  </option></select>'
        '<script>var x = "<b>";</script><a backend_node_id="5">Next &amp; more</a></div>'
    )
    els = find_elements(html, {"1", "2", "3", "4", "5"})
    assert els["1"].text == "Hello big One Two Next & more"
    assert els["2"].text == "big" and els["3"].text == "" and els["3"].attrs["aria_label"] == "Email"
    assert els["4"].options == ["One", "Two"]
    assert els["5"].text == "Next & more"


def test_snapshot_caps_negatives_keeps_positive_and_is_seeded(tmp_path):
    rec = next(iter_json_records(write_split(tmp_path, "train", [make_task("a", "s", "D", "q", "Small")])))
    step = rec.actions[2]  # CLICK Go; 4 negatives
    snap = build_snapshot(rec.confirmed_task, [], step, max_candidates=3, rng=random.Random(1))
    assert len(snap.elements) == 3 and sum(e.is_positive for e in snap.elements) == 1
    orders = {
        tuple(
            e.backend_node_id
            for e in build_snapshot(rec.confirmed_task, [], step, 10, random.Random(s)).elements
        )
        for s in range(8)
    }
    assert len(orders) > 1  # shuffled
    again = build_snapshot(rec.confirmed_task, [], step, 3, random.Random(1))
    assert again == snap  # same seed, same snapshot
    text = snap.render()
    assert "Task: " in text and "Previous actions:\nNone" in text and "is_positive" not in text
    # an element missing from cleaned_html falls back to the candidate's attributes
    cancel = build_snapshot("t", [], step, 10, random.Random(0))
    assert any(e.role == "button" and e.text == "Cancel" for e in cancel.elements)


def test_value_phrases():
    assert value_phrases("Find flights from New York to London for 2 adults on April 3")[:4] == [
        "flights",
        "New York",
        "London",
        "2 adults",
    ]
    assert "jane@example.com" in value_phrases("Email the receipt to jane@example.com")
    assert value_phrases('Search for "red shoes" please')[0] == "red shoes"


# ------------------------------------------------------------------ env


def test_parse_action():
    assert parse_web_action("CLICK [3]").ref == 3
    a = parse_web_action("  type [12]   New York \nmore")
    assert (a.op, a.ref, a.value) == ("TYPE", 12, "New York")
    assert parse_web_action("SELECT 4 2 adults").value == "2 adults"
    assert parse_web_action("CLICK [3] extra").value == ""
    assert (
        parse_web_action("PRESS [3]") is None
        and parse_web_action("CLICK") is None
        and parse_web_action("") is None
    )


def _refs(env):
    pos = next(e for e in env.snapshot.elements if e.is_positive)
    neg = next(e for e in env.snapshot.elements if not e.is_positive)
    return pos.ref, neg.ref


def test_env_scoring_both_modes(small_dir, tmp_path):
    task = next(
        t for t in list_tasks(small_dir, "test_task", tmp_path / "c") if t.text.startswith("Search bikeshop")
    )
    assert task.task_type == "Shopping/Misc" and task.env == "mind2web" and task.split == "test_task"
    env = Mind2WebEnv(mode="paper", seed=3)
    obs = env.reset(task)
    assert obs.task_text == task.text and 'textbox "Search bikeshop"' in obs.text
    pos, neg = _refs(env)
    r = env.step(f"TYPE [{pos}]   GRAVEL  bike ")  # case and whitespace are normalised
    assert r.info["step_success"] and not r.done and r.reward == 0.0
    pos, neg = _refs(env)
    r = env.step(f"SELECT [{pos}] Small")  # right element, wrong option
    assert r.info["element_correct"] and not r.info["op_correct"] and r.info["op_f1"] == pytest.approx(0.5)
    assert r.done and not r.won and r.reward == 0.0  # paper mode: the first wrong step ends it
    assert env.episode_score.prefix == 1 and len(env.episode_score.steps) == 2
    with pytest.raises(RuntimeError):
        env.step("CLICK [0]")

    env = Mind2WebEnv(mode="teacher_forced", seed=3)
    env.reset(task)
    pos, neg = _refs(env)
    r = env.step(f"CLICK [{neg}]")
    assert not r.info["element_correct"] and not r.done  # scored, and the episode goes on
    r = env.step("nonsense")
    assert r.invalid_action and r.info["invalid"] and not r.done
    assert "[textbox]  Search -> TYPE: gravel bike" in r.observation.text  # gold history
    pos, _ = _refs(env)
    r = env.step(f"CLICK [{pos}]")
    assert r.done and not r.won and r.info["step_success"]
    assert [s.success for s in r.info["episode_score"].steps] == [False, False, True]


def test_progress_reward_pays_each_right_step(small_dir, tmp_path):
    """env.reward=progress: 1/n per right step, so a return is the fraction of the task done right."""
    task = next(
        t for t in list_tasks(small_dir, "test_task", tmp_path / "c") if t.text.startswith("Search bikeshop")
    )
    env = Mind2WebEnv(mode="paper", seed=3, reward="progress")
    env.reset(task)
    n = len(env.store.get(task.ref).actions)
    pos, _ = _refs(env)
    r = env.step(f"TYPE [{pos}] gravel bike")
    assert r.info["step_success"] and r.reward == pytest.approx(1 / n) and not r.won
    pos, _ = _refs(env)
    r = env.step(f"SELECT [{pos}] Small")  # wrong option: no reward, and paper mode ends the episode
    assert r.done and not r.won and r.reward == 0.0
    env.reset(task)
    total = 0.0
    while True:
        r = env.step(env.gold_action())
        total += r.reward
        if r.done:
            break
    assert r.won and total == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reward"):
        Mind2WebEnv(reward="steps")


def test_step_reward_pays_one_per_right_step(small_dir, tmp_path):
    """env.reward=step (the paper's): 1 for every right step; the return counts the right steps."""
    task = next(
        t for t in list_tasks(small_dir, "test_task", tmp_path / "c") if t.text.startswith("Search bikeshop")
    )
    env = Mind2WebEnv(mode="paper", seed=3, reward="step")
    env.reset(task)
    rewards = []
    while True:
        r = env.step(env.gold_action())
        rewards.append(r.reward)
        if r.done:
            break
    assert r.won and rewards == [1.0] * len(env.store.get(task.ref).actions)
    env.reset(task)
    pos, neg = _refs(env)
    assert env.step(f"CLICK [{neg}]").reward == 0.0


def test_page_observation_is_every_interactive_element_cut_by_position(small_dir, tmp_path):
    """observation=page: all interactive elements in page order with refs (the paper's view), cut after
    max_page_elements by position alone; whether the cut kept the gold is reported, never arranged."""
    task = next(
        t for t in list_tasks(small_dir, "test_task", tmp_path / "c") if t.text.startswith("Search bikeshop")
    )
    rec = Mind2WebEnv().store.get(task.ref)
    step = rec.actions[0]
    full = build_page_snapshot(rec.confirmed_task, [], step, 1000)
    ids = [e.backend_node_id for e in full.elements]
    page_order = [nid for nid in find_elements(step.cleaned_html, None)]
    assert ids == page_order and full.page_elements == len(ids) and full.gold_visible
    assert [e.ref for e in full.elements] == list(range(len(ids)))
    gold_at = next(e.ref for e in full.elements if e.is_positive)
    cut = build_page_snapshot(rec.confirmed_task, [], step, gold_at)  # the gold is the first element cut
    assert [e.backend_node_id for e in cut.elements] == ids[:gold_at] and not cut.gold_visible
    env = Mind2WebEnv(observation="page", max_page_elements=gold_at)
    env.reset(task)
    r = env.step("CLICK [0]")
    assert not r.info["gold_visible"] and not r.info["step_success"] and not r.info["gold_included"]
    env = Mind2WebEnv(observation="candidates", seed=3)
    env.reset(task)
    assert env.step("CLICK [0]").info["gold_included"]  # MindAct's view says that the gold is shown
    with pytest.raises(ValueError, match="observation"):
        Mind2WebEnv(observation="screenshot")


def test_env_max_steps_truncates(small_dir, tmp_path):
    task = list_tasks(small_dir, "test_task", tmp_path / "c")[0]
    env = Mind2WebEnv(max_steps=2, mode="teacher_forced")
    env.reset(task)
    env.step(env.gold_action())
    r = env.step(env.gold_action())
    assert r.done and not r.won and r.info["truncated"]


def test_admissible_covers_click_select_and_type(small_dir, tmp_path):
    task = list_tasks(small_dir, "test_task", tmp_path / "c")[0]
    env = Mind2WebEnv(mode="teacher_forced")
    obs = env.reset(task)
    assert env.gold_action() in obs.admissible_actions  # TYPE <quoted query> is offered
    assert all(parse_web_action(a) is not None for a in obs.admissible_actions)
    obs = env.step(env.gold_action()).observation
    sel = next(e for e in env.snapshot.elements if e.tag == "select")
    assert {f"SELECT [{sel.ref}] Small", f"SELECT [{sel.ref}] Large"} <= set(obs.admissible_actions)


# ------------------------------------------------------------------ evaluation on the sample and fresh data


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("mode", ["paper", "teacher_forced"])
def test_oracle_scores_one_on_sample(split, mode, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "m2w-sample-cache"
    m = evaluate(None, split, "oracle", mode, cache_dir=cache)
    keys = [
        "element_acc",
        "op_f1",
        "step_sr",
        "macro_element_acc",
        "macro_op_f1",
        "macro_step_sr",
        "task_sr",
        "action_acc",
    ]
    assert m["tasks"] > 0 and m["scored_steps"] == m["gold_steps"]
    assert {k: m[k] for k in keys} == dict.fromkeys(keys, 1.0)
    assert m["gold_in_admissible"] == 1.0 and m["invalid_actions"] == 0


def test_negative_policy_scores_zero_elements(tmp_path):
    env_holder = {}

    def negative(obs):
        snap = env_holder["env"].snapshot
        return f"CLICK [{next(e.ref for e in snap.elements if not e.is_positive)}]"

    # the policy needs the gold flags of the env's snapshot, so drive the env here
    tasks = list_tasks(SAMPLE_DIR, "test_task", tmp_path)
    env = env_holder["env"] = Mind2WebEnv(mode="teacher_forced")
    scores = []
    for t in tasks:
        obs, done = env.reset(t), False
        while not done:
            r = env.step(negative(obs))
            obs, done = r.observation, r.done
        scores.append(env.episode_score)
    m = aggregate(scores)
    assert m["element_acc"] == 0.0 and m["step_sr"] == 0.0 and m["task_sr"] == 0.0
    assert m["scored_steps"] == m["gold_steps"] > 0


def test_random_and_callable_policies(tmp_path):
    r1 = evaluate(None, "train", "random", "teacher_forced", seed=5, cache_dir=tmp_path)
    r2 = evaluate(None, "train", "random", "teacher_forced", seed=5, cache_dir=tmp_path)
    assert r1 == r2 and 0.0 < r1["element_acc"] < 0.5 and r1["task_sr"] < 0.2
    seen = []

    def first_action(obs):
        seen.append(obs.task_type)
        return obs.admissible_actions[0]

    r = evaluate(None, "test_domain", first_action, "paper", cache_dir=tmp_path)
    assert r["policy"] == "first_action" and r["tasks"] == 6 and all(t.startswith("Service/") for t in seen)
    with pytest.raises(ValueError, match="policy"):
        evaluate(None, "train", "greedy", cache_dir=tmp_path)


def test_oracle_on_fresh_official_folder(tmp_path):
    """Data the sample generator never saw: other websites, the flat layout, several files."""
    root = tmp_path / "fresh"
    root.mkdir()
    sites = [
        ("harborferry", "Travel", "ferry to Nantucket", "Large"),
        ("quillpens", "Shopping", "fountain pen", "Small"),
        ("gardenclub", "Info", "tomato seedlings", "Large"),
        ("chesshall", "Entertainment", "blitz", "Small"),
    ]
    for i in range(2):
        recs = [make_task(f"f{i}-{j}", s, d, q, z) for j, (s, d, q, z) in enumerate(sites)]
        (root / f"test_website_{i}.json").write_text(json.dumps(recs, indent=1))
    for mode in ("paper", "teacher_forced"):
        m = evaluate(root, "test_website", "oracle", mode, cache_dir=tmp_path / "c")
        assert m["tasks"] == 8 and m["step_sr"] == 1.0 and m["task_sr"] == 1.0 and m["element_acc"] == 1.0
        assert set(m["per_website"]) == {s[0] for s in sites}


# ------------------------------------------------------------------ sample and CLI


def test_sample_meets_spec_and_is_regenerated_identically(tmp_path):
    recs = {s: [r for f in find_split_files(SAMPLE_DIR, s) for r in iter_json_records(f)] for s in SPLITS}
    allr = [r for rs in recs.values() for r in rs]
    assert len(allr) >= 40 and len({r.website for r in allr}) >= 8 and len({r.domain for r in allr}) >= 4
    assert all(2 <= len(r.actions) <= 8 for r in allr)
    assert len({r.annotation_id for r in allr}) == len(allr)
    train_sites = {r.website for r in recs["train"]}
    assert {r.website for r in recs["test_task"]} <= train_sites
    assert not {r.website for r in recs["test_website"]} & train_sites
    assert not {r.domain for r in recs["test_domain"]} & {r.domain for r in recs["train"]}
    make_sample.write_sample(tmp_path)
    for f in (SAMPLE_DIR / "data").rglob("*.json"):
        assert (tmp_path / f.relative_to(SAMPLE_DIR)).read_bytes() == f.read_bytes(), f


def _cli(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data")
    add_commands(sub, data.add_subparsers(dest="data_command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_eval_and_check(small_dir, tmp_path, capsys):
    rc = _cli(
        [
            "data",
            "mind2web-eval",
            "--data",
            str(small_dir),
            "--split",
            "test_task",
            "--policy",
            "oracle",
            "--cache-dir",
            str(tmp_path / "c"),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["step_sr"] == 1.0 and out["task_sr"] == 1.0 and out["tasks"] == 4
    assert _cli(["data", "mind2web-check", "--data", str(small_dir), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "test_task: 4 tasks" in capsys.readouterr().out
    bad = copy.deepcopy(make_task("x", "s", "D", "q", "Small"))
    bad["actions"][0]["operation"]["value"] = 3
    write_split(tmp_path / "bad", "train", [bad])
    rc = _cli(
        [
            "data",
            "mind2web-eval",
            "--data",
            str(tmp_path / "bad"),
            "--split",
            "train",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert rc == 2 and "actions[0].operation.value" in capsys.readouterr().err
