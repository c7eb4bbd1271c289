"""The benchmark report helpers: Wilson intervals, eval-output parsing, demo selection, table splicing."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


report = _load("learning_report")
demos = _load("learning_demos")
tables = _load("write_tables")
trl_bench = _load("trl_grpo")


def test_wilson_known_values():
    lo, hi = report.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)  # not the degenerate [0, 0]
    lo, hi = report.wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-3), pytest.approx(0.7634, abs=1e-3))
    assert report.wilson(0, 0) == (0.0, 1.0)


def test_eval_stdout_parsing_skips_log_lines(tmp_path):
    f = tmp_path / "eval.json"
    f.write_text('[evorl] Ray dashboard disabled\n(RolloutWorker pid=1) INFO {x}\n{\n "eval/s/a": 0.5\n}\n')
    assert report.read_eval_stdout(f) == {"eval/s/a": 0.5}
    (tmp_path / "bad.json").write_text("no json here\n")
    with pytest.raises(ValueError, match="bad.json"):
        report.read_eval_stdout(tmp_path / "bad.json")


def test_counts_groups_and_missing_type():
    stats = {"eval/v/a": 0.5, "eval/v/b": 0.25, "eval/v/h": 0.0}
    c = report.counts(stats, "v", Counter({"a": 4, "b": 4, "h": 2}), {"a", "b"})
    assert c["trained_success"] == (3, 8) and c["heldout_success"] == (0, 2) and c["success"] == (3, 10)
    with pytest.raises(ValueError, match="eval/v/z"):
        report.counts(stats, "v", Counter({"z": 1}), set())


def test_pooled_rows_sum_wins_and_games_over_seeds():
    rows = [("sft", {"t": (1, 8)}), ("after grpo-seed0", {"t": (2, 8), "h": (0, 4)}),
            ("after grpo-seed1", {"t": (3, 8), "h": (1, 4)}), ("after evolving-seed0", {"t": (1, 8)}),
            ("sft+candidates-seed0", {"t": (2, 8)}), ("sft+candidates-seed1", {"t": (0, 8)})]  # fmt: skip
    assert report.pooled(rows) == [  # one seed (evolving): no row
        ("grpo, 2 seeds pooled", {"t": (5, 16), "h": (1, 8)}),
        ("sft+candidates, 2 seeds pooled", {"t": (2, 16)}),
    ]


def test_demo_selection_drops_heldout_types():
    recs = [{"task_id": f"t{i}", "task_type": t} for i, t in enumerate(
        ["pick_and_place_simple"] * 3 + ["pick_two_obj_and_place", "look_at_obj_in_light"]
    )]  # fmt: skip
    kept = demos.select(recs, per_type=2)
    assert [r["task_id"] for r in kept] == ["t0", "t1"]


def test_splice_keeps_hand_written_text():
    text = f"intro\n{tables.BEGIN}\nold\n{tables.END}\noutro\n"
    out = tables.splice(text, "| new |", "doc")
    assert out == f"intro\n{tables.BEGIN}\n| new |\n{tables.END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        tables.splice("no markers", "x", "doc")


def test_jaccard_reward_is_graded():
    adm = ["go to sink 1", "take apple 1 from table 1"]
    assert trl_bench.jaccard_reward("go to sink 1", adm) == 1.0
    assert 0 < trl_bench.jaccard_reward("go to table 1", adm) < 1
    assert trl_bench.jaccard_reward("", adm) == 0.0


def test_mind2web_learning_report_tables_each_model_and_keeps_run_records(tmp_path, monkeypatch):
    m2w = _load("mind2web_learning_report")
    res, runs = tmp_path / "results", tmp_path / "runs"
    res.mkdir()
    monkeypatch.setattr(m2w, "RES", res)

    def scored(acc: float) -> dict:
        r = {"element_acc": acc, "op_f1": 0.5, "step_sr": acc / 2, "task_sr": 0.0}
        return {"date": "d", "model": "m", "machine": "cpu", "max_candidates": 20,
                "results": {"test_task": {"model": r, "random": r | {"element_acc": 0.1}}}}  # fmt: skip

    (res / "mind2web_model.json").write_text(json.dumps(scored(0.2)))
    for i, mode in enumerate(("grpo", "evolving")):
        (res / f"mind2web_model_{mode}-seed0.json").write_text(json.dumps(scored(0.3 + i / 10)))
        run = runs / f"{mode}-seed0"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"library": {"skills": 2 * i, "accepted": 0}}))
        (run / "config.yaml").write_text("x: 1\n")
        lines = [{"iteration_s": 10.0, "source/success": 0.5}, {"eval": 1}, {"iteration_s": 5.0}]
        (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    assert m2w.main(["--runs", str(runs)]) == 0
    assert m2w.main(["--runs", str(tmp_path / "gone")]) == 0  # a fresh clone: the kept copies are read
    md = (res / "mind2web_learning.md").read_text()
    assert "| test_task | evolving-seed0 | 0.400 | 0.500 | 0.200 | 0.000 |" in md
    assert "| test_task | random (untrained run) | 0.100 |" in md
    assert "| grpo-seed0 | success | 2 | 15 | 0.50 | - | None | - |" in md and "2 skills (0 accepted)" in md
    assert (res / "mind2web_learning" / "evolving-seed0" / "metrics.jsonl").exists()
