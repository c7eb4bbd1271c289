"""Rollout scaling: the same ALFWorld episodes through a RolloutPool of 1 and of 2 workers.

    python benchmarks/rollout_scaling.py [--episodes 16] [--max-steps 6] [--repeats 2]

Each worker is a Ray actor with its own in-process vLLM engine (1 thread) and env slots; the pool
splits the episodes into chunks across free workers. Same games, constrained decoding, the solver's
sampling settings (rollout.temperature, top_p, max_new_tokens; behaviour logprobs left to the
learner, the default) and prompts (env.context) of --config. Rounds alternate
1 -> 2 -> 1 -> 2 ... so load drift on the shared machine hits both; the figure is the median
episodes/s per pool size and their ratio (ideal 2.0 on 2 idle cores). Both pools stay alive
throughout (3 engines), so each worker reserves 0.5 of Ray's CPUs; every engine still runs 1 thread.
Writes benchmarks/results/rollout_scaling.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ALFWORLD_DATA", str(ROOT / ".cache" / "alfworld"))
RESULTS = ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "bench_alfworld_easy.yaml"))
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--metrics-port", type=int, default=23818, help="Ray metrics export port")
    args = p.parse_args(argv)

    import ray

    from actors.pool import RolloutPool
    from cluster.core.config import load_config
    from cluster.core.generation import GenParams
    from cluster.core.records import EpisodeJob
    from cluster.core.storage import atomic_write_bytes, write_json_plain
    from cluster.data import ensure_data
    from cluster.placement import init_ray
    from envs import list_tasks

    overrides = [
        f"env.max_steps={args.max_steps}",
        "cluster.include_dashboard=false",
        "rollout.envs_per_worker=8",
        f"cluster.metrics_export_port={args.metrics_port}",  # a free port beside other local Rays
        "rollout.num_cpus_per_worker=0.5",  # 1 + 2 workers alive at once must fit Ray's 2 CPUs
        "rollout.num_threads=1",  # one core per engine: the pools here hold 1 and 2 workers, not num_workers
    ]
    cfg = load_config(args.config, overrides)
    init_ray(cfg)
    ensure_data(cfg)
    trained = set(cfg.env.trained_types)  # empty: every type of the train split
    tasks = [t for t in list_tasks(cfg.env, cfg.env.train_split) if not trained or t.task_type in trained]
    jobs = [EpisodeJob(t) for t in (tasks * (args.episodes // max(len(tasks), 1) + 1))[: args.episodes]]
    r = cfg.rollout
    gen = GenParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                    logprobs=r.engine_logprobs)  # fmt: skip
    load0 = os.getloadavg()[0]
    pools = {n: RolloutPool(cfg, f"scale{n}", n) for n in (1, 2)}
    rounds: dict[int, list[dict]] = {1: [], 2: []}
    try:
        for n, pool in pools.items():  # warm-up: first generate of each engine
            pool.play(jobs[:n], gen)
        for k in range(args.repeats):
            for n, pool in pools.items():
                t0 = time.perf_counter()
                eps = pool.play(jobs, gen)
                dt = time.perf_counter() - t0
                toks = sum(len(t.token_ids) for e in eps for t in e.traces)  # the sequences the learner gets
                turns = sum(e.steps for e in eps)
                failed = sum(e.failed for e in eps)
                rounds[n].append({"seconds": dt, "episodes": len(eps), "turns": turns, "tokens": toks,
                                  "failed": failed})  # fmt: skip
                print(
                    f"[scaling] round {k} workers {n}: {dt:.1f}s, {len(eps) / dt:.3f} episodes/s", flush=True
                )
    finally:
        for pool in pools.values():
            pool.shutdown()
        ray.shutdown()
    eps_s = {n: statistics.median(x["episodes"] / x["seconds"] for x in rs) for n, rs in rounds.items()}
    turn_s = {n: statistics.median(x["turns"] / x["seconds"] for x in rs) for n, rs in rounds.items()}
    ratio = eps_s[2] / eps_s[1]
    when = datetime.now(UTC).isoformat(timespec="seconds")
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), no GPU"
    write_json_plain(
        RESULTS / "rollout_scaling.json",
        {"date": when, "machine": machine, "load_average_at_start": load0, "episodes": args.episodes,
         "max_steps": args.max_steps, "rounds": {str(k): v for k, v in rounds.items()},
         "episodes_per_s": {str(k): v for k, v in eps_s.items()}, "ratio_2_vs_1": ratio},
    )  # fmt: skip
    md = f"""# Rollout scaling: 1 vs 2 rollout workers ({when})

{machine}; load average {load0:.1f} at start. {args.episodes} ALFWorld episodes (easy preset, trained types,
max {args.max_steps} steps, constrained decoding, temperature {cfg.rollout.temperature}) per round; median of {args.repeats} rounds,
pool sizes alternating. Baseline: the 1-worker pool in the same run.

| rollout workers | episodes/s | solver turns/s | speed-up |
|---|---|---|---|
| 1 | {eps_s[1]:.3f} | {turn_s[1]:.2f} | 1.00 |
| 2 | {eps_s[2]:.3f} | {turn_s[2]:.2f} | **{ratio:.2f}x** |
"""
    atomic_write_bytes(RESULTS / "rollout_scaling.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
