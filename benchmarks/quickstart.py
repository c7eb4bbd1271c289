"""The README's main job, timed: `evorl train --config configs/quickstart.yaml` from a fresh run folder.

    .venv/bin/python benchmarks/quickstart.py [--run-dir runs/bench-quickstart]

Records the wall time of the whole command (Ray start, actors, three iterations of every stage, the
final online evaluation, shutdown), the per-stage seconds from its summary, and the load average
before and after (target: <= 600 s on the 2-core machine). Writes benchmarks/results/quickstart.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

from common import ROOT, load, machine, speed_probe, verdict, write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default="runs/bench-quickstart")
    args = ap.parse_args()
    info = machine()
    run = ROOT / args.run_dir
    cmd = [str(ROOT / ".venv/bin/evorl"), "train", "--config", "configs/quickstart.yaml", "--overwrite",
           f"trainer.run_dir={run}"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(
            f"quickstart failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    summary = json.loads((run / "summary.json").read_text())
    stages = summary["time_per_stage_s"]
    payload = {"machine": info, "command": " ".join(cmd[1:]), "wall_s": wall, "load_after": load(),
               "matmul_gflops_after": speed_probe(),
               "iterations": summary["iteration"], "policy_version": summary["policy_version"],
               "time_per_stage_s": stages, "final_eval": summary["final_eval"], "target": "<= 600 s",
               "target_met": wall <= 600}  # fmt: skip
    md = "\n".join([
        "# Quickstart wall time",
        "",
        f"{info['date']}, {info['cpus']} CPU cores, load {info['load_average_1m']} before / {payload['load_after']} after, "
        f"fp32 matmul {info['matmul_gflops']} / {payload['matmul_gflops_after']} GFLOP/s before / after (a shared host); "
        f"`evorl train --config configs/quickstart.yaml` ({summary['iteration']} iterations, every stage, final online eval).",
        "",
        f"**wall time {verdict(wall, '<= 600 s', wall <= 600)} s**; policy version {summary['policy_version']}.",
        "",
        "| stage | seconds (all iterations) |",
        "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in stages.items()),
    ])  # fmt: skip
    write("quickstart", payload, md)


if __name__ == "__main__":
    main()
