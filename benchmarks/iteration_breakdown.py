"""End-to-end time per training iteration, broken down by stage, from runs' metrics.jsonl.

    python benchmarks/iteration_breakdown.py [RUN_DIR ...]   (default: benchmarks/results/learning*/*/)

The trainer logs `iteration_s` and one `time/<stage>` per stage for every iteration (stages:
rollout for grpo; source, extract, downstream for evolving; learn, broadcast, library for both).
The unaccounted remainder (`other`: trajectory writing, checkpoints, eval when it falls inside an
iteration) is iteration_s minus the stages. Baseline: the whole iteration (shares sum to 100%).
Writes benchmarks/results/iteration_breakdown.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ORDER = ("rollout", "source", "extract", "downstream", "learn", "broadcast", "library")


def breakdown(metrics_file: Path) -> dict:
    rows = [json.loads(ln) for ln in metrics_file.read_text().splitlines() if ln.strip()]
    iters = [r for r in rows if "iteration_s" in r]
    if not iters:
        raise ValueError(f"{metrics_file}: no iteration rows (iteration_s) to break down")
    stages = [s for s in ORDER if any(f"time/{s}" in r for r in iters)]
    mean = {s: statistics.mean(r.get(f"time/{s}", 0.0) for r in iters) for s in stages}
    total = statistics.mean(r["iteration_s"] for r in iters)
    mean["other"] = max(0.0, total - sum(mean.values()))
    return {"iterations": len(iters), "mean_iteration_s": total, "mean_stage_s": mean}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    dirs = [Path(a) for a in args] or sorted(
        p.parent
        for sub in ("learning", "learning_solver_sft")
        for p in (RESULTS / sub).glob("*/metrics.jsonl")
    )
    if not dirs:
        print("iteration_breakdown: no run folders with metrics.jsonl", file=sys.stderr)
        return 2
    from cluster.core.storage import atomic_write_bytes, write_json_plain

    out = {f"{d.parent.name}/{d.name}": breakdown(d / "metrics.jsonl") for d in dirs}
    lines = [
        "# Time per training iteration by stage",
        "",
        "From the runs' metrics.jsonl (`time/*`, `iteration_s`), mean over iterations; seconds and share",
        "of the iteration. Machine and date: those of the runs (benchmarks/results/learning*/learning.md).",
        "",
        "| run | iterations | s/iteration | " + " | ".join((*ORDER, "other")) + " |",
        "|---" * (len(ORDER) + 4) + "|",
    ]
    for name, b in out.items():
        cells = []
        for s in (*ORDER, "other"):
            v = b["mean_stage_s"].get(s)
            cells.append(f"{v:.1f} ({100 * v / b['mean_iteration_s']:.0f}%)" if v is not None else "-")
        lines.append(
            f"| {name} | {b['iterations']} | {b['mean_iteration_s']:.1f} | " + " | ".join(cells) + " |"
        )
    write_json_plain(RESULTS / "iteration_breakdown.json", out)
    atomic_write_bytes(RESULTS / "iteration_breakdown.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
