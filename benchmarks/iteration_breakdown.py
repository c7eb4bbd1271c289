"""Time per training iteration by stage, over the iterations that trained, from runs' metrics.jsonl.

    python benchmarks/iteration_breakdown.py [RUN_DIR ...]   (default: the committed learning runs)

The trainer logs `iteration_s` and one `time/<stage>` per stage for every iteration (stages:
rollout for grpo; source, extract, downstream for evolving; learn, broadcast, library for both).
Only iterations in which the learner stepped (`learner/loss` logged) count: an iteration that did
not train spends all its time generating and would flatter the share. `generation_share` = the
generation stages (rollout, source, extract, downstream) over the iteration, median over iterations
(target >= 0.7: the GPU-bound part of an iteration should dominate). The remainder (`other`:
trajectory writing, checkpoints, in-loop eval) is iteration_s minus the stages.
Writes benchmarks/results/iteration_breakdown.{json,md}.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from common import RESULTS, machine, verdict, write

ORDER = ("rollout", "source", "extract", "downstream", "learn", "broadcast", "library")
GENERATION = ("rollout", "source", "extract", "downstream")


def breakdown(metrics_file: Path) -> dict | None:
    from cluster.metrics import read_metrics

    iters = [r for r in read_metrics(metrics_file.parent) if "iteration_s" in r and "learner/loss" in r]
    if not iters:
        return None
    stages = [s for s in ORDER if any(f"time/{s}" in r for r in iters)]
    mean = {s: statistics.mean(r.get(f"time/{s}", 0.0) for r in iters) for s in stages}
    total = statistics.mean(r["iteration_s"] for r in iters)
    mean["other"] = max(0.0, total - sum(mean.values()))
    shares = [sum(r.get(f"time/{s}", 0.0) for s in GENERATION) / r["iteration_s"] for r in iters]
    return {"trained_iterations": len(iters), "mean_iteration_s": total, "mean_stage_s": mean,
            "generation_share": statistics.median(shares)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    dirs = [Path(a) for a in args] or sorted(p.parent for p in (RESULTS / "learning").glob("*/metrics.jsonl"))
    out = {f"{d.parent.name}/{d.name}": b for d in dirs if (b := breakdown(d / "metrics.jsonl"))}
    if not out:
        print("iteration_breakdown: no run folder with a trained iteration", file=sys.stderr)
        return 2
    share = statistics.median(b["generation_share"] for b in out.values())
    lines = [
        "# Time per training iteration by stage (iterations that trained)",
        "",
        "From the runs' metrics.jsonl (`time/*`, `iteration_s`), mean over the iterations in which the learner",
        "stepped; seconds and share of the iteration. Machine and date: those of the runs.",
        "",
        "| run | trained iterations | s/iteration | generation share | "
        + " | ".join((*ORDER, "other"))
        + " |",
        "|---" * (len(ORDER) + 5) + "|",
    ]
    for name, b in out.items():
        cells = []
        for s in (*ORDER, "other"):
            v = b["mean_stage_s"].get(s)
            cells.append(f"{v:.1f} ({100 * v / b['mean_iteration_s']:.0f}%)" if v is not None else "-")
        lines.append(f"| {name} | {b['trained_iterations']} | {b['mean_iteration_s']:.1f} | "
                     f"{b['generation_share']:.2f} | " + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", f"**generation_share (median over runs) = {verdict(share, '>= 0.7', share >= 0.7)}**"]
    write("iteration_breakdown", {"machine": machine(), "runs": out, "generation_share": share, "target": ">= 0.7",
                                  "target_met": share >= 0.7}, "\n".join(lines))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
