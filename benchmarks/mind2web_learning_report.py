"""Mind2Web learning table: untrained vs `grpo` vs `evolving` on the bundled sample, one row per split.

Reads benchmarks/results/mind2web_model[_MODE-seedS].json (written by mind2web_model.py) and the runs'
summary/metrics under runs/bench/mind2web/ (copied into benchmarks/results/mind2web_learning/, which
is read instead where the runs are absent) and writes benchmarks/results/mind2web_learning.{json,md}. Run by benchmarks/mind2web_learning.sh.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RES = ROOT / "benchmarks" / "results"
METRICS = ("element_acc", "op_f1", "step_sr", "task_sr")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench" / "mind2web"))
    args = p.parse_args(argv)

    from learning_report import run_stats  # benchmarks/: the same per-run figures as the ALFWorld report

    from cluster.core.storage import atomic_write_bytes, write_json_plain

    models = {"untrained": json.loads((RES / "mind2web_model.json").read_text())}
    runs = {}
    labels = (f.stem.removeprefix("mind2web_model_") for f in RES.glob("mind2web_model_*.json"))
    for label in sorted(labels, key=lambda x: ("-progress-" in x, x)):  # paper's reward first
        models[label] = json.loads((RES / f"mind2web_model_{label}.json").read_text())
        run, keep = Path(args.runs) / label, RES / "mind2web_learning" / label
        if (run / "summary.json").exists():  # else (a fresh clone): the committed copies
            keep.mkdir(parents=True, exist_ok=True)
            for name in ("summary.json", "metrics.jsonl", "config.yaml"):
                shutil.copyfile(run / name, keep / name)
        runs[label] = run_stats(keep)
        runs[label]["reward"] = "progress" if "-progress-" in label else "success"
    splits = list(models["untrained"]["results"])
    table = {
        split: {
            name: {m: m_res["results"][split]["model"][m] for m in METRICS} for name, m_res in models.items()
        }
        | {"random (untrained run)": {m: models["untrained"]["results"][split]["random"][m] for m in METRICS}}
        for split in splits
    }
    first = models["untrained"]
    write_json_plain(RES / "mind2web_learning.json", {"eval": table, "runs": runs, "scored": {
        name: {"date": m["date"], "model": m["model"], "machine": m["machine"]} for name, m in models.items()}})  # fmt: skip
    lines = [
        "# Mind2Web bundled sample: untrained vs `grpo` vs `evolving` (embedded SmolLM2-135M)",
        "",
        "Training: `configs/quickstart_mind2web.yaml` from the untrained model, iterations per run in the "
        "runs table; reward `success` (the paper's: 1 for a finished task) or `progress` (1/n per right step). Scoring: benchmarks/mind2web_model.py, teacher-forced (every step "
        f"scored, gold applied), greedy constrained decoding, top {first['max_candidates']} candidates; "
        f"{first['machine']}. A hand-written sample (32 train, 20 test tasks): not the Mind2Web benchmark.",
        "",
        "| split | model | element acc | op F1 | step SR | task SR |",
        "|---|---|---|---|---|---|",
    ]
    for split, by_model in table.items():
        for name, r in by_model.items():
            lines.append(f"| {split} | {name} | " + " | ".join(f"{r[m]:.3f}" for m in METRICS) + " |")
    lines += [
        "",
        "| run | reward | iterations | wall (s) | source success per iteration | turns trained | "
        "policy version | library | scored |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in runs.items():
        src = ", ".join(f"{x:.2f}" for x in r["train_source_success"] if x is not None) or "-"
        lib = r["library"] or {}
        lib_s = (
            f"{lib.get('skills', 0)} skills ({lib.get('accepted', 0)} accepted)" if lib.get("skills") else "-"
        )
        turns = ", ".join(f"{x:.0f}" for x in r["trained_turns"] if x is not None) or "-"
        lines.append(
            f"| {label} | {r['reward']} | {r['iterations']} | {r['wall_s']:.0f} | {src} | {turns} | "
            f"{r['policy_version']} | {lib_s} | {models[label]['date']} |"
        )
    lines.append(f"\nUntrained model scored {first['date']}.")
    atomic_write_bytes(RES / "mind2web_learning.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
