"""The benchmark helpers (statistics, tables, demo selection, time breakdown) and that make bench
names only scripts that exist. Pure Python: no benchmark runs."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # the scripts import `common` by name
    spec.loader.exec_module(mod)
    return mod


_env = dict(os.environ)
common = _load("common")  # sets benchmark defaults in os.environ: not this test session's business
learning = _load("learning")
tables = _load("write_tables")
demos = _load("learning_demos")
breakdown = _load("iteration_breakdown")
os.environ.clear()
os.environ.update(_env)


# ---- common.py ---------------------------------------------------------------------------------
def test_interleave_alternates_order_and_discards_warmup():
    calls: list[str] = []

    def arm(name: str):
        def fn() -> dict:
            calls.append(name)
            return {"x": len(calls)}

        return fn

    runs = common.interleave({"a": arm("a"), "b": arm("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B, B A, A B
    assert [r["repeat"] for r in runs["a"]] == [0, 1, 2]
    assert [r["x"] for r in runs["a"]] == [3, 6, 7]  # warm-up calls are not kept
    assert all({"load_before", "wall_s"} <= r.keys() for r in runs["a"] + runs["b"])
    assert common.median(runs["b"], "x") == 5


def test_cpu_names_model_and_the_isa_that_sets_matmul_speed(tmp_path):
    info = tmp_path / "cpuinfo"
    core = "model name\t: {m}\nflags\t\t: fpu sse4_2 avx2 {x}\n\n"
    info.write_text(core.format(m="Intel Xeon", x="avx512f avx512_bf16") * 2)
    assert common.cpu(info) == {"model": "Intel Xeon", "isa": ["avx2", "avx512f", "avx512_bf16"]}
    info.write_text(core.format(m="AMD EPYC", x=""))
    assert common.cpu(info) == {"model": "AMD EPYC", "isa": ["avx2"]}
    assert common.cpu(tmp_path / "absent")["isa"] is None
    assert learning._host({"cpu": common.cpu(tmp_path / "absent")}).endswith("ISA unknown")
    assert learning._host({"cpu": {"model": "Old", "isa": []}}) == "Old, no AVX2"
    assert learning._host({"cpu": {"model": "AMD EPYC", "isa": ["avx2"]}}) == "AMD EPYC, avx2"


def test_verdict_says_met_or_missed():
    assert common.verdict(1.234, ">= 1", True) == "1.23 (target >= 1: met)"
    assert common.verdict(0.5, ">= 0.9", False) == "0.50 (target >= 0.9: MISSED)"


# ---- learning.py statistics ---------------------------------------------------------------------
def _ev(rows: list[tuple[str, str, str, bool]]) -> dict:
    return {"episodes": [{"task_id": t, "task_type": ty, "arm": a, "won": w} for t, ty, a, w in rows]}


def test_outcomes_filter_arm_and_types():
    ev = _ev(
        [("g1", "x", "no_skill", True), ("g2", "y", "no_skill", False), ("g1", "x", "with_skill", False)]
    )
    assert learning.outcomes(ev, "no_skill", None) == {"g1": True, "g2": False}
    assert learning.outcomes(ev, "no_skill", {"y"}) == {"g2": False}
    assert learning.outcomes(ev, "with_skill", {"y"}) == {}


def test_bootstrap_known_values():
    assert learning.bootstrap([{"a": True, "b": True}]) == (1.0, 1.0, 1.0)
    point, lo, hi = learning.bootstrap([{"a": True, "b": False}])
    assert (point, lo, hi) == (0.5, 0.0, 1.0)  # 2 games: P(both resampled = a) = 1/4 > 2.5%
    # seeds are averaged on the same resampled games: one seed all won, one all lost -> always 0.5
    assert learning.bootstrap([{"a": True, "b": True}, {"a": False, "b": False}]) == (0.5, 0.5, 0.5)
    # only games every seed played count
    assert learning.bootstrap([{"a": True, "b": False}, {"a": True}])[0] == 1.0
    assert all(math.isnan(v) for v in learning.bootstrap([]))
    assert all(math.isnan(v) for v in learning.bootstrap([{"a": True}, {"b": True}]))


def test_paired_diff_counts_discordant_pairs():
    w = [True, True, True, False]
    o = [False, False, True, False]
    rows = [(f"g{i}", "t", "with_skill", x) for i, x in enumerate(w)]
    rows += [(f"g{i}", "t", "no_skill", x) for i, x in enumerate(o)]
    rows += [("g9", "t", "with_skill", True)]  # no paired no-skill game: left out
    d = learning.paired_diff(_ev(rows), None, n=2000)
    assert (d["games"], d["with_skill"], d["no_skill"]) == (4, 3, 1)
    assert (d["with_only"], d["no_skill_only"]) == (2, 0)
    assert d["diff"] == 0.5
    assert d["mcnemar_p"] == pytest.approx(0.5)  # exact two-sided binomial on 2 vs 0
    lo, hi = d["ci95"]
    assert -1.0 <= lo <= 0.5 <= hi <= 1.0
    assert learning.paired_diff(_ev(rows), {"other"}) == {}


def test_versus_pairs_each_arm_of_two_models_on_shared_games():
    run = _ev([("g1", "t", "with_skill", True), ("g2", "t", "with_skill", True), ("g1", "t", "no_skill", False),
               ("g2", "t", "no_skill", True), ("g3", "h", "no_skill", True)])  # fmt: skip
    start = _ev([("g1", "t", "with_skill", False), ("g2", "t", "with_skill", True), ("g1", "t", "no_skill", True),
                 ("g2", "t", "no_skill", True)])  # fmt: skip
    d = learning.versus(run, start, {"trained": {"t"}, "heldout": {"h"}}, n=500)
    w = d["with_skill"]["trained"]
    assert (w["games"], w["a"], w["b"], w["a_only"], w["b_only"], w["diff"]) == (2, 2, 1, 1, 0, 0.5)
    o = d["no_skill"]["trained"]
    assert (o["a"], o["b"], o["a_only"], o["b_only"], o["diff"]) == (1, 2, 0, 1, -0.5)
    assert d["no_skill"]["heldout"] == {}  # g3 has no start episode: not paired
    assert "1/2 vs 2/2: -0.500" in learning._pv(o) and "(0 vs 1 discordant)" in learning._pv(o)


def test_learning_markdown_tables_paired_rows():
    pd = {"games": 4, "with_skill": 3, "no_skill": 1, "diff": 0.5, "ci95": [0.25, 0.75], "mcnemar_p": 0.5}
    ci = (0.25, 0.1, 0.4)
    report = {
        "machine": {"date": "2026-12-01 10:00 UTC", "cpus": 2}, "config": "c.yaml", "seeds": [0],
        "budget": {"iterations_per_run": 10, "grpo": "G", "evolving": "E"}, "protocol": "online",
        "gonogo": {"start_teacher": {"trained": pd, "heldout": {}}, "untrained_no_skill": {"trained": ci, "heldout": ci}},
        "modes": {"grpo": {"with_skill": {"trained": ci, "heldout": (float("nan"),) * 3}, "no_skill": {"trained": ci, "heldout": ci}},
                  "start": {"with_skill": {"trained": ci, "heldout": ci}, "no_skill": {"trained": ci, "heldout": ci}}},
        "start": "start-e3",
        "runs": {}, "transfer": {}, "mind2web": {},
        "starts": {"start": {"sft_epochs": 4, "skill_cards": 0.5, "max_steps": 10}},
    }  # fmt: skip
    md = learning.markdown(report)
    how = "start: SFT 4 epochs, skill cards on 50% of the solver demos, horizon 10"
    assert (
        f"| {how}; teacher card (rule-written from the planner) | 3/4 vs 1/4: +0.500 [+0.250, +0.750], McNemar p 0.500 | - |"
        in md
    )
    assert f"| {how}; its own extraction (online) | - | - |" in md
    assert "| grpo | 0.250 [0.100, 0.400] | - | 0.250 [0.100, 0.400] | 0.250 [0.100, 0.400] |" in md
    assert "| start (start-e3) | 0.250 [0.100, 0.400] |" in md  # the start row names its recipe
    # a run resumed at iteration 1: its wall time is its iterations' times, not the time since the resume
    curves = {"iteration": [1, 2], "iteration_s": [100.0, 20.0]}
    assert (
        learning.run_wall_s(curves, 20.0) == 120.0 and learning.run_wall_s({"iteration_s": []}, 20.0) == 20.0
    )
    run = {"iterations": 2, "policy_version": 2, "train_wall_s": 20.0, "library": {}, "resumed_from_iteration": 1,
           "online": {"trained": pd}, "curves": curves, "wall_s": learning.run_wall_s(curves, 20.0)}  # fmt: skip
    md = learning.markdown({**report, "runs": {"grpo": {0: run}}, "seeds_completed": [0]})
    assert "| grpo seed 0 | 2 | 2 | 120 | - | {} | 3/4 vs 1/4" in md
    assert "against the start" not in md  # no start evaluation paired: no such table
    pv = {
        "games": 4,
        "a": 3,
        "b": 2,
        "diff": 0.25,
        "ci95": [-0.25, 0.75],
        "a_only": 1,
        "b_only": 0,
        "mcnemar_p": 1.0,
    }
    run["vs_start"] = {
        "with_skill": {"trained": pv, "heldout": {}},
        "no_skill": {"trained": pv, "heldout": pv},
    }
    md = learning.markdown({**report, "runs": {"grpo": {0: run}}, "seeds_completed": [0]})
    assert (
        "| grpo seed 0; with skill | 3/4 vs 2/4: +0.250 [-0.250, +0.750], McNemar p 1.000 (1 vs 0 discordant) | - |"
        in md
    )
    assert "Transfer" not in md and "Mind2Web" not in md  # empty sections are left out


def test_learning_keeps_finished_runs_for_later_sessions(tmp_path, monkeypatch):
    """Checkpoints are not committed: a finished run's summary, metrics and skills are, and a later
    session (no runs/ folder) reports from that copy and does not train the run again once evaluated."""
    monkeypatch.setattr(learning, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(learning, "OUT", tmp_path / "results")
    args = type("A", (), {"start": "start-e3"})()
    live = learning.run_dir(learning.run_name(args, "grpo", 0))
    (live / "skills").mkdir(parents=True)
    (live / "summary.json").write_text('{"iteration": 2}')
    (live / "metrics.jsonl").write_text('{"iteration": 1, "iteration_s": 5.0}\n')
    (live / "skills" / "manifest.json").write_text("{}")
    (live / "ckpt").mkdir()  # a checkpoint: not kept
    kept = learning.keep(live)
    assert (
        kept
        == learning.kept_dir(live)
        == tmp_path / "results" / "run_records" / "alfworld-start-e3-grpo-seed0"
    )
    assert sorted(p.name for p in kept.iterdir()) == ["metrics.jsonl", "skills", "summary.json"]
    assert learning.finished("start-e3-grpo-seed0") == live  # the live run first
    import shutil

    shutil.rmtree(tmp_path / "runs")  # a new session: no checkpoints
    assert learning.finished("start-e3-grpo-seed0") == kept
    assert not learning.done_run(args, "grpo", 0)  # kept, but never evaluated: it must be trained again
    (tmp_path / "results" / "eval_start-e3-grpo-seed0_online.json").write_text("{}")
    assert learning.done_run(args, "grpo", 0) and not learning.done_run(args, "evolving", 0)
    assert learning.finished("start-e3-evolving-seed0") is None
    assert learning.curves(kept)["iteration_s"] == [5.0]


# ---- write_tables.py -----------------------------------------------------------------------------
def test_splice_keeps_hand_written_text():
    text = f"intro\n{tables.BEGIN}\nold\n{tables.END}\noutro\n"
    out = tables.splice(text, "| new |", "doc")
    assert out == f"intro\n{tables.BEGIN}\n| new |\n{tables.END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        tables.splice("no markers", "x", "doc")


def test_write_tables_splices_results_and_leaves_out_missing_rows(tmp_path, monkeypatch, capsys):
    res = tmp_path / "benchmarks" / "results"
    res.mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    block = f"{tables.BEGIN}\nold\n{tables.END}\n"
    (tmp_path / "docs" / "results.md").write_text("# Results\n\nhand text\n\n" + block)
    (tmp_path / "README.md").write_text("readme\n" + block + "tail\n")
    (res / "learner_step.md").write_text("# Learner step\n\nbody\n# Part\n")
    (res / "rollout_constrained.json").write_text(json.dumps({
        "ratio": 0.95, "target": ">= 0.9", "target_met": True, "tokens_per_s": {"pool": 10.0, "bare": 10.5},
        "machine": {"date": "2026-12-01 10:00 UTC"}}))  # fmt: skip
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    monkeypatch.setattr(tables, "RESULTS", res)
    assert tables.main() == 0
    doc = (tmp_path / "docs" / "results.md").read_text()
    assert doc.startswith("# Results\n\nhand text\n\n")
    assert "<!-- from benchmarks/results/learner_step.md -->\n## Learner step\n\nbody\n## Part" in doc
    assert "old" not in doc
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("readme\n") and readme.endswith(f"{tables.END}\ntail\n")
    assert ("| rollout pool generation, tokens/s | 10.0 | bare constrained vLLM 10.5 | **0.95** (target >= 0.9: met)"
            " | 2026-12-01 |") in readme  # fmt: skip
    assert "learning: left out" in capsys.readouterr().err  # no learning.json: its row is named, not invented


# ---- learning_demos.py ---------------------------------------------------------------------------
def test_demo_selection_drops_heldout_types():
    recs = [{"task_id": f"t{i}", "task_type": t} for i, t in enumerate(
        ["pick_and_place_simple"] * 3 + ["pick_two_obj_and_place", "look_at_obj_in_light"]
    )]  # fmt: skip
    kept = demos.select(list(reversed(recs)), per_type=2)
    assert [r["task_id"] for r in kept] == ["t0", "t1"]  # by task id, whatever the input order


# ---- iteration_breakdown.py ----------------------------------------------------------------------
def test_iteration_breakdown_counts_only_trained_iterations(tmp_path, monkeypatch):
    run = tmp_path / "learning" / "alfworld-grpo-seed0"
    run.mkdir(parents=True)
    rows = [
        {"iteration_s": 10.0, "learner/loss": 0.1, "time/rollout": 6.0, "time/learn": 2.0, "time/broadcast": 1.0},
        {"iteration_s": 20.0, "learner/loss": 0.2, "time/rollout": 16.0, "time/learn": 2.0},
        {"iteration_s": 5.0, "time/rollout": 5.0},  # did not train: not counted
        {"eval/valid_seen/success": 0.5},
    ]  # fmt: skip
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    b = breakdown.breakdown(run / "metrics.jsonl")
    assert b["trained_iterations"] == 2 and b["mean_iteration_s"] == 15.0
    assert b["mean_stage_s"] == {"rollout": 11.0, "learn": 2.0, "broadcast": 0.5, "other": 1.5}
    assert b["generation_share"] == pytest.approx(0.7)  # median of 0.6 and 0.8
    written = {}
    monkeypatch.setattr(
        breakdown, "write", lambda name, payload, md: written.update(name=name, payload=payload)
    )
    assert breakdown.main([str(run)]) == 0
    assert written["name"] == "iteration_breakdown"
    assert written["payload"]["runs"].keys() == {"learning/alfworld-grpo-seed0"}
    assert written["payload"]["target_met"] is True
    assert breakdown.main([str(tmp_path / "none")]) == 2


# ---- the scripts make bench and the learning experiment name ------------------------------------
STANDALONE = {"common.py", "soak.py", "gpu_smoke.sh", "run_all.sh"}  # helpers and by-hand runs


def _referenced() -> set[str]:
    text = "".join(
        (BENCH / f).read_text() for f in ("run_all.sh", "learning.sh", "learning.py", "gpu_smoke.sh")
    )
    return set(re.findall(r"benchmarks/([a-z0-9_]+\.(?:py|sh))", text))


def test_every_named_script_exists_and_every_script_is_run():
    named = _referenced()
    # trl_multiturn.py: run_all.sh runs it only when it exists
    assert {n for n in named if not (BENCH / n).exists()} <= {"trl_multiturn.py"}
    scripts = {p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh")}
    assert scripts - named - STANDALONE == set(), "a benchmark nobody runs: add it to run_all.sh or delete it"


def test_learning_sh_runs_learning_py():
    text = (BENCH / "learning.sh").read_text()
    assert 'exec .venv/bin/python benchmarks/learning.py "$@"' in text


def test_gpu_smoke_mirror_matches_learner_defaults():
    """gpu_smoke.py copies LearnerConfig's loss defaults for machines without PyYAML: keep them equal."""
    from cluster.core.config import LearnerConfig

    tree = ast.parse((BENCH / "gpu_smoke.py").read_text())
    node = next(
        n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "MIRROR_LCFG"
    )
    mirror = ast.literal_eval(node.value)
    defaults = dataclasses.asdict(LearnerConfig())
    assert mirror == {k: defaults[k] for k in mirror}


def test_mind2web_step_sr_pooled_over_splits():
    stats = {"eval/a/no_skill/step_sr": 0.25, "eval/a/no_skill/scored_steps": 8.0,
             "eval/b/no_skill/step_sr": 0.0, "eval/b/no_skill/scored_steps": 3.0, "eval/b/no_skill/task_sr": 0.0}  # fmt: skip
    assert tables._pooled_step_sr(stats) == (2, 11)


def test_learning_mode_row_names_the_seeds_run_and_their_pairing_with_the_start(tmp_path, monkeypatch):
    res = tmp_path / "learning"
    res.mkdir()
    ci = [0.3, 0.2, 0.4]
    pv = {"games": 96, "a": 32, "b": 26, "diff": 0.0625, "ci95": [-0.02, 0.15], "mcnemar_p": 0.24}
    arms = {"with_skill": {"trained": ci, "heldout": ci}, "no_skill": {"trained": ci, "heldout": ci}}
    (res / "learning.json").write_text(json.dumps({
        "machine": {"date": "2026-12-02 04:00 UTC"}, "seeds": [0, 1, 2], "gonogo": {}, "mind2web": {},
        "modes": {"evolving": arms, "start": arms},
        "runs": {"evolving": {"0": {"run": "s-evolving-seed0", "vs_start": {"with_skill": {"trained": pv}}}}}}))  # fmt: skip
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    (row,) = tables._learning()
    assert row.startswith(
        "| evolving (seed 0), online protocol with skill: trained / held-out | 0.300 [0.200, 0.400]"
    )
    paired = "paired vs start, trained: seed 0: +0.062 [-0.020, +0.150], McNemar p 0.24"
    assert f"{paired} | report 2026-12-02 |" in row, "an eval that recorded no date is dated by the report"
    d = json.loads((res / "learning.json").read_text())
    d["eval_dates"] = {"s-evolving-seed0_online": "2026-11-30 09:00 UTC"}
    (res / "learning.json").write_text(json.dumps(d))
    (row,) = tables._learning()
    assert f"{paired} | 2026-11-30 |" in row, "the date is the evaluation's own, not the report's"
    d["transfer"] = {"s-from-evolving-seed0": {"trained": pv | {"with_skill": 20, "no_skill": 26}}}
    (res / "learning.json").write_text(json.dumps(d))
    _, row = tables._learning()
    assert row.startswith("| transfer, s-from-evolving-seed0: library protocol, trained types (paired) | 20/96 | "
                          "no skill 26/96 | +0.062"), row  # fmt: skip


def test_learning_variant_runs_carry_their_overrides_and_their_own_names(tmp_path, monkeypatch):
    """A training variant (VARIANTS) is trained with its config overrides under its own run name, so
    the base run's record and evaluation never stand in for it, and its mode key and transfer labels
    are its own while the base keeps the names it was committed with."""
    monkeypatch.setattr(learning, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(learning, "OUT", tmp_path / "results")
    calls = []
    monkeypatch.setattr(learning, "FORCE", False)

    def fake_train(cmd, log, retries=1):  # a fake `evorl train`: records the call, writes the run's summary
        calls.append(cmd)
        run = Path(next(c for c in cmd if c.startswith("trainer.run_dir=")).split("=", 1)[1])
        run.mkdir(parents=True)
        (run / "summary.json").write_text("{}")

    monkeypatch.setattr(learning, "sh", fake_train)
    monkeypatch.setattr(learning, "machine", lambda: {"cpu": {"model": "test", "isa": []}})
    args = type("A", (), {"start": "start-e3", "seeds": [0], "modes": ["evolving"], "variants": ["base", "lr5e-6"],
                          "iterations": 3, "max_steps": 15})()  # fmt: skip
    assert learning.run_name(args, "evolving", 0, "lr5e-6") == "start-e3-evolving-lr5e-6-seed0"
    assert (
        learning.mode_key("evolving", "lr5e-6") == "evolving-lr5e-6" and learning.mode_key("grpo") == "grpo"
    )
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "eval_start-e3-evolving-seed0_online.json").write_text("{}")
    kept = tmp_path / "results" / "run_records" / "alfworld-start-e3-evolving-seed0"
    kept.mkdir(parents=True)
    (kept / "summary.json").write_text("{}")  # base: trained and evaluated in an earlier session
    live_base = tmp_path / "runs" / "alfworld-start-e3-evolving-seed0"
    live_base.mkdir(parents=True)
    (live_base / "summary.json").write_text("{}")  # and still on disk: kept again, not retrained
    assert learning.done_run(args, "evolving", 0) and not learning.done_run(args, "evolving", 0, "lr5e-6")
    learning.stage_runs(args)
    assert len(calls) == 1, "only the variant is trained"
    cmd = calls[0]
    assert (
        "learner.lr=5e-6" in cmd
        and f"trainer.run_dir={tmp_path / 'runs' / 'alfworld-start-e3-evolving-lr5e-6-seed0'}" in cmd
    )
    kept_variant = tmp_path / "results" / "run_records" / "alfworld-start-e3-evolving-lr5e-6-seed0"
    assert json.loads((kept_variant / "host.json").read_text())["cpu"]["model"] == "test", "the host is kept"
    assert (kept / "summary.json").exists() and not (kept / "host.json").exists(), (
        "a run kept but not trained here gets no host of this machine"
    )
    assert (
        learning.transfer_label("untrained", 0, "lr5e-6") == "transfer-untrained-from-evolving-lr5e-6-seed0"
    )
    # the base keeps the labels it was committed with
    assert learning.transfer_label("start-e3", 0) == "transfer-start-e3-seed0"


def test_learning_report_pools_only_runs_with_the_stated_budget(tmp_path, monkeypatch):
    """A run with another iteration count is listed under its mode but never pooled into the
    "same budget" row: pooling a 5-iteration run with 10-iteration ones would misstate the budget."""
    monkeypatch.setattr(learning, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(learning, "OUT", tmp_path / "learning")
    args = type("A", (), {"start": "start-e3", "seeds": [0, 1], "iterations": 10, "m2w_iterations": 8,
                          "transfer_seeds": []})()  # fmt: skip
    wins = {0: [True, True, False, False], 1: [False, False, False, False]}
    for seed, iters in ((0, 10), (1, 5)):
        name = learning.run_name(args, "evolving", seed)
        kept = learning.kept_dir(learning.run_dir(name))
        kept.mkdir(parents=True)
        (kept / "summary.json").write_text(
            json.dumps({"iteration": iters, "policy_version": iters, "library": {}})
        )
        (kept / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "iteration_s": 5.0, "source/success": 0.5,
                                                        "downstream/success": 0.4, "learner/kl": 0.01}) + "\n")  # fmt: skip
        episodes = [{"task_id": f"g{i}", "won": w, "arm": arm, "task_type": "pick_and_place_simple"}
                    for i, w in enumerate(wins[seed]) for arm in ("with_skill", "no_skill")]  # fmt: skip
        (tmp_path / "learning" / f"eval_{name}_online.json").write_text(json.dumps({"episodes": episodes}))
        if seed == 0:
            (kept / "host.json").write_text(json.dumps({"cpu": {"model": "AMD EPYC", "isa": ["avx2"]}}))
            (tmp_path / "learning" / "eval_start-e3_online.json").write_text(
                json.dumps({"episodes": episodes, "finished": "2026-12-03 10:00 UTC"})
            )
    # grpo seed 0 from the same start, on the same games: evolving is paired against it seed by seed
    grpo = learning.run_name(args, "grpo", 0)
    kept = learning.kept_dir(learning.run_dir(grpo))
    kept.mkdir(parents=True)
    (kept / "summary.json").write_text(json.dumps({"iteration": 10, "policy_version": 10, "library": {}}))
    episodes = [{"task_id": f"g{i}", "won": i == 0, "arm": arm, "task_type": "pick_and_place_simple"}
                for i in range(4) for arm in ("with_skill", "no_skill")]  # fmt: skip
    (tmp_path / "learning" / f"eval_{grpo}_online.json").write_text(json.dumps({"episodes": episodes}))
    learning.stage_report(args)
    report = json.loads((tmp_path / "learning" / "learning.json").read_text())
    vg = report["evolving_vs_grpo"]
    assert list(vg) == ["base"] and list(vg["base"]) == ["0"], "only seed 0 has both modes"
    assert vg["base"]["0"]["runs"] == {"evolving": learning.run_name(args, "evolving", 0), "grpo": grpo}
    d = vg["base"]["0"]["with_skill"]["trained"]
    assert (d["games"], d["a"], d["b"], d["a_only"], d["b_only"]) == (4, 2, 1, 1, 0), d
    assert report["eval_dates"]["start-e3_online"] == "2026-12-03 10:00 UTC", "each eval read is dated"
    assert report["eval_dates"]["start-e3-evolving-seed0_online"] is None, "an eval without a date: None"
    assert sorted(report["runs"]["evolving"]) == ["0", "1"], "both runs are listed"
    assert report["off_budget"] == {"evolving": [1]}
    assert (tmp_path / "learning" / "curve_learner_kl.png").exists(), "the curves are drawn from the runs"
    assert report["modes"]["evolving"]["with_skill"]["trained"][0] == 0.5, "seed 0 alone: 2 of 4"
    md = (tmp_path / "learning" / "learning.md").read_text()
    assert "seeds [1] ran another number of iterations than 10" in md
    assert "| evolving seed 0 | 10 | 10 | 5 | AMD EPYC, avx2 |" in md, "each run names the host it trained on"
    assert "| base, seed 0; with skill | 2/4 vs 1/4: +0.250" in md, "the evolving-vs-grpo table"
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    (row,) = [r for r in tables._learning() if r.startswith("| evolving (")]
    assert row.startswith("| evolving (seed 0), online"), "the README row names only the pooled seeds"
    assert "seed 1:" not in row
    (row,) = [r for r in tables._learning() if r.startswith("| evolving vs grpo")]
    assert "| seed 0: 2/4 vs 1/4 | grpo | seed 0: +0.250" in row, row
