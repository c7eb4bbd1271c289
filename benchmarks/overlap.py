"""What `trainer.overlap` gains: runs of M iterations with and without it, on one stack.

    .venv/bin/python benchmarks/overlap.py [--block 3] [--repeats 2]

One Trainer on the bench config (configs/bench_alfworld_easy.yaml, grpo) is switched between the two
arms block by block (off, on, on, off, ...; a warm-up iteration first), so both arms use the same
engines, learner and task stream. A block is a short run of M iterations: with overlap, its first
iteration collects its own batch and every later one was collected while the learner trained on the
one before (the block's last iteration collects nothing ahead), so a block pays the same number of
collections either way.

The arms are what a user switches between: off = the defaults (behaviour logprobs recomputed in the
learner's first pass); on = `trainer.overlap=true rollout.engine_logprobs=true` (overlap needs the
engine's behaviour logprobs, and under constrained decoding those cost a rescoring prefill per
sample: benchmarks/results/rollout_constrained.md). Reported: seconds per trained sample per block,
`gain` = off / on.
Writes benchmarks/results/overlap.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from common import load, machine, median, write

OVERRIDES = [
    "trainer.mode=grpo",
    "learner.skip_zero_advantage=false",
    "trainer.eval_tasks=1",
    "env.eval_splits=[]",
]
ON = ["trainer.overlap=true", "rollout.engine_logprobs=true"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--block", type=int, default=3, help="iterations per block (M)")
    ap.add_argument("--repeats", type=int, default=2, help="blocks per arm")
    args = ap.parse_args()
    import ray

    from cluster.core.config import load_config
    from cluster.data import ensure_data
    from cluster.factory import build_parts
    from cluster.trainer import Trainer

    cfg = load_config("configs/bench_alfworld_easy.yaml", OVERRIDES)
    ensure_data(cfg)
    info = machine()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # one pool + one learner
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, build_parts(cfg, Path(tmp)), None)
        trainer.step()  # warm-up: engine and learner first calls

        def block(overlap: bool) -> dict:
            cfg.trainer.overlap = cfg.rollout.engine_logprobs = overlap
            trainer.solver_gen = dataclasses.replace(trainer.solver_gen, logprobs=overlap)
            threads = trainer.parts.learners.call("set_cpu_threads", overlap)[0]  # as a run with it set would
            before, t0, its = load(), time.perf_counter(), []
            for i in range(args.block):
                trainer.prefetch = i + 1 < args.block
                s = trainer.step()
                its.append({"iteration_s": s["iteration_s"], "samples": s.get("adv/samples", 0.0),
                            "times": {k[5:]: v for k, v in s.items() if k.startswith("time/")}})  # fmt: skip
            wall = time.perf_counter() - t0
            samples = sum(x["samples"] for x in its)
            return {"overlap": overlap, "learner_threads": threads, "load_before": before, "load_after": load(), "wall_s": wall,
                    "samples": samples, "s_per_sample": wall / max(samples, 1.0), "iterations": its}  # fmt: skip

        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for r in range(args.repeats):
            for arm in ("off", "on") if r % 2 == 0 else ("on", "off"):
                runs[arm].append(block(arm == "on"))
        trainer.close()
    ray.shutdown()
    off, on = median(runs["off"], "s_per_sample"), median(runs["on"], "s_per_sample")

    def stage(arm: str, name: str) -> float:
        return statistics.median(it["times"].get(name, 0.0) for b in runs[arm] for it in b["iterations"])

    stages = ("rollout", "learn", "overlap_wait", "broadcast")
    payload = {
        "machine": info,
        "config": "configs/bench_alfworld_easy.yaml",
        "overrides": {"both": OVERRIDES, "on": ON},
        "block_iterations": args.block,
        "repeats": args.repeats,
        "runs": runs,
        "s_per_sample": {"off": off, "on": on},
        "gain": off / on,
        "median_stage_s": {arm: {s: stage(arm, s) for s in stages} for arm in runs},
    }
    lines = [
        "# trainer.overlap: collecting the next batch while the learner trains",
        "",
        f"{info['date']}, {info['cpus']} CPU cores, load {info['load_average_1m']}; blocks of {args.block} grpo "
        f"iterations of configs/bench_alfworld_easy.yaml on one stack, {args.repeats} blocks per arm, alternating.",
        f"Both arms: `{' '.join(OVERRIDES)}`; on: `{' '.join(ON)}`. Learner threads: off "
        f"{runs['off'][0]['learner_threads']}, on {runs['on'][0]['learner_threads']} (the rollout worker's core is busy).",
        "",
        "| arm | s per trained sample (median block) | blocks (s/sample; load before) | median rollout s | median learn s | median wait s |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ("off", "on"):
        reps = ", ".join(f"{b['s_per_sample']:.2f} ({b['load_before']})" for b in runs[arm])
        lines.append(
            f"| {arm} | {median(runs[arm], 's_per_sample'):.2f} | {reps} | {stage(arm, 'rollout'):.1f} | "
            f"{stage(arm, 'learn'):.1f} | {stage(arm, 'overlap_wait'):.1f} |"
        )
    lines += [
        "",
        f"**gain = {off / on:.2f}x** (off / on). With overlap the rollout of iteration t+1 and the update of t "
        "share the machine's cores; the wait is the part of the collection the update did not hide.",
    ]
    write("overlap", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
