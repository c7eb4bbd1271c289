"""Seconds per trained sample of a training iteration: the legacy path against the current one.

    .venv/bin/python benchmarks/iteration_cost.py [--repeats 3] [--mode grpo]

Both arms are whole `Trainer.step` iterations on the bench config (configs/bench_alfworld_easy.yaml:
generated easy ALFWorld games, the embedded SmolLM2-135M, constrained decoding), built side by side
in one Ray session with their own pools and learners, on the same task sequence (same seed), run
A, B, B, A, ... after one warm-up iteration each. Every sampled trace is trained
(`learner.skip_zero_advantage=false`), so both arms train the same samples.

- legacy: the flags that restore the behaviour before the throughput work: one trace per turn
  (`env.context=window`), behaviour logprobs from the engine (constrained samples rescored by an
  extra prefill), one token mean over the batch, ZeRO-2 on the single CPU rank, gradient
  checkpointing always on, only identical prompts shared in the learner (no prefix tree), one thread
  for the engine and one for the learner (Ray's OMP_NUM_THREADS=num_cpus in each actor);
- current: the defaults: whole episodes as one sequence (prefix-cached turns), logprobs recomputed
  in the learner's first pass, sample-mean loss, ZeRO stage 0 and no recomputation for this model,
  the G samples' common turns stored once (`learner.prefix_tree`), the engine and the learner each
  using the node's cores while the other waits (`rollout.num_threads`, `learner.num_threads`: 0).
Reported: seconds per trained sample (iteration seconds / samples trained), learner tokens processed
per trained token, per-stage seconds; `speedup` = legacy / current (target >= 3).
Writes benchmarks/results/iteration_cost.{json,md} (`--mode evolving`: iteration_cost_evolving.*, the
paper's loop with extraction and downstream play; the bench config's own mode is grpo).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import interleave, machine, median, verdict, write

LEGACY = ["env.context=window", "rollout.engine_logprobs=true", "learner.loss_agg=token_mean",
          "learner.zero_stage=2", "learner.gradient_checkpointing=true", "learner.prefix_tree=false",
          "rollout.num_threads=1", "learner.num_threads=1"]  # fmt: skip
CURRENT = ["env.context=sequence"]
# micro_batch_tokens 2048 for both arms: two learners and two pools share one 24 GiB machine here
COMMON = ["learner.skip_zero_advantage=false", "trainer.eval_tasks=1", "env.eval_splits=[]",
          "learner.micro_batch_tokens=2048"]  # fmt: skip


def arm(name: str, cfg, run_dir: Path):
    from cluster.factory import build_parts
    from cluster.trainer import Trainer

    trainer = Trainer(cfg, build_parts(cfg, run_dir, prefix=f"{name}-"), None)

    def step() -> dict:
        s = trainer.step()
        samples = s.get("adv/samples", 0.0)
        return {
            "iteration_s": s["iteration_s"],
            "samples_trained": samples,
            "s_per_sample": s["iteration_s"] / max(samples, 1.0),
            "processed_per_trained": s.get("learner/processed_per_trained", float("nan")),
            "learner_seq_tokens": s.get("learner/seq_tokens", 0.0),
            "trained_tokens": s.get("learner/tokens", 0.0),
            "times": {k[5:]: v for k, v in s.items() if k.startswith("time/")},
        }

    return trainer, step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mode", default="grpo", choices=["grpo", "evolving"])
    args = ap.parse_args()
    import ray

    from cluster.core.config import load_config
    from cluster.data import ensure_data

    over = [*COMMON, f"trainer.mode={args.mode}"]
    cfgs = {
        n: load_config("configs/bench_alfworld_easy.yaml", over + o)
        for n, o in (("legacy", LEGACY), ("current", CURRENT))
    }
    ensure_data(cfgs["current"])
    info = machine()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)  # 2 pools + 2 learners, alternating
    with tempfile.TemporaryDirectory() as tmp:
        stacks = {n: arm(n, c, Path(tmp) / n) for n, c in cfgs.items()}
        runs = interleave({n: step for n, (_, step) in stacks.items()}, args.repeats)
    ray.shutdown()
    legacy, current = median(runs["legacy"], "s_per_sample"), median(runs["current"], "s_per_sample")
    ppt = {n: median(r, "processed_per_trained") for n, r in runs.items()}
    speedup = legacy / current
    payload = {
        "machine": info,
        "config": "configs/bench_alfworld_easy.yaml",
        "mode": args.mode,
        "overrides": {"common": over, "legacy": LEGACY, "current": CURRENT},
        "repeats": args.repeats,
        "runs": runs,
        "s_per_sample": {"legacy": legacy, "current": current},
        "processed_per_trained": ppt,
        "processed_per_trained_drop": ppt["legacy"] / ppt["current"],
        "speedup": speedup,
        "target": ">= 3",
        "target_met": speedup >= 3,
    }
    stages = sorted({k for r in runs["current"] + runs["legacy"] for k in r["times"]})
    lines = [
        "# Iteration cost: seconds per trained sample",
        "",
        f"{info['date']}, {info['cpus']} CPU cores, load {info['load_average_1m']}; `{args.mode}` iterations of "
        f"configs/bench_alfworld_easy.yaml, {args.repeats} repeats per arm after a warm-up, interleaved.",
        "",
        "| arm | s per trained sample (median) | learner tokens processed per trained token | repeats (s/sample; load before) |",
        "|---|---|---|---|",
    ]
    for n in ("legacy", "current"):
        reps = ", ".join(f"{r['s_per_sample']:.1f} ({r['load_before']})" for r in runs[n])
        lines.append(f"| {n} | {median(runs[n], 's_per_sample'):.2f} | {ppt[n]:.1f} | {reps} |")
    lines += [
        "",
        f"**speedup = {verdict(speedup, '>= 3', speedup >= 3)}**; tokens processed per trained token drop "
        f"{ppt['legacy'] / ppt['current']:.2f}x (target >= 2: {'met' if ppt['legacy'] / ppt['current'] >= 2 else 'MISSED'}).",
        "",
        "Median seconds per stage: "
        + "; ".join(
            f"{s}: legacy {_stage(runs['legacy'], s):.1f}, current {_stage(runs['current'], s):.1f}"
            for s in stages
        ),
        "",
        f"Legacy flags: `{' '.join(LEGACY)}`; current: `{' '.join(CURRENT)}` (the defaults).",
    ]
    write(
        "iteration_cost" if args.mode == "grpo" else f"iteration_cost_{args.mode}", payload, "\n".join(lines)
    )


def _stage(runs: list[dict], stage: str) -> float:
    vals = sorted(r["times"].get(stage, 0.0) for r in runs)
    return vals[len(vals) // 2] if vals else 0.0


if __name__ == "__main__":
    main()
