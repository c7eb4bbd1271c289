"""The trainer's weight push against its floor: one copy of the bytes plus the engine's own reload.

    .venv/bin/python benchmarks/weight_sync.py [--repeats 5] [--workers 1]

- push: `WeightSync.push(version)` exactly as the trainer calls it: learner rank 0 puts its
  parameters into the object store, every rollout worker loads that object into its running vLLM
  engine, each acknowledges the version (the driver holds only the reference);
- floor: a copy of the same bytes into preallocated buffers (the one copy a push cannot avoid: the
  learner and the engines are different processes) plus the engine's reload measured bare inside the
  worker, from weights already in its memory (what loading costs whatever the transport).
Interleaved push, floor, push, ... after a warm-up. `ratio` = push / floor (target <= 1.5), and the
push against the copy alone. Writes benchmarks/results/weight_sync.{json,md}.
"""

from __future__ import annotations

import argparse
import time

from common import interleave, machine, median, verdict, write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    import numpy as np
    import ray

    from actors.pool import RolloutPool
    from cluster.core.config import load_config
    from cluster.weight_sync import WeightSync
    from learner.group import LearnerGroup

    info = machine()
    cfg = load_config(None, ["engine.kv_cache_gib=0.5", "model.max_model_len=1024", f"rollout.num_workers={args.workers}",
                             "learner.kl_coef={solver: 0.0, extractor: 0.0}"])  # fmt: skip
    ray.init(num_cpus=2 + args.workers, include_dashboard=False, log_to_driver=False)
    learners = LearnerGroup(cfg)
    pool = RolloutPool(cfg, "rollout", args.workers)
    sync = WeightSync(learners, [pool])
    local = learners.weights()  # the same bytes, in this process, for the copy
    nbytes = sum(a.nbytes for a in local.values())
    buffers = {k: np.empty_like(a) for k, a in local.items()}

    def hold(worker, ref):  # the weights in the worker's own memory, ready for a bare reload
        worker._bench_weights = {k: np.array(v) for k, v in ray.get(ref[0]).items()}
        return len(worker._bench_weights)

    def reload(worker, version):
        t0 = time.perf_counter()
        worker.engine.update_weights(worker._bench_weights, version)
        return time.perf_counter() - t0

    ray.get([w.__ray_call__.remote(hold, learners.weights_ref()) for w in pool.workers])
    version = [0]

    def push() -> dict:
        version[0] += 1
        m = sync.push(version[0])
        assert pool.versions() == [version[0]] * args.workers
        return {"push_s": m["weight_sync/push_s"], "put_s": m.get("weight_sync/put_s", 0.0)}

    def floor() -> dict:
        t0 = time.perf_counter()
        for k, a in local.items():
            np.copyto(buffers[k], a)
        copy_s = time.perf_counter() - t0
        version[0] += 1
        reload_s = max(ray.get([w.__ray_call__.remote(reload, version[0]) for w in pool.workers]))
        return {"copy_s": copy_s, "reload_s": reload_s, "floor_s": copy_s + reload_s}

    runs = interleave({"push": push, "floor": floor}, args.repeats)
    pool.shutdown()
    learners.shutdown()
    ray.shutdown()
    push_s, floor_s = median(runs["push"], "push_s"), median(runs["floor"], "floor_s")
    copy_s, reload_s = median(runs["floor"], "copy_s"), median(runs["floor"], "reload_s")
    ratio = push_s / floor_s
    payload = {
        "machine": info,
        "bytes": nbytes,
        "workers": args.workers,
        "backend": sync.backend,
        "repeats": args.repeats,
        "runs": runs,
        "push_s": push_s,
        "floor_s": floor_s,
        "copy_s": copy_s,
        "reload_s": reload_s,
        "ratio": ratio,
        "ratio_vs_copy": push_s / copy_s,
        "target": "<= 1.5",
        "target_met": ratio <= 1.5,
    }
    md = "\n".join([
        "# Weight sync: the trainer's push against its floor",
        "",
        f"{info['date']}, {info['cpus']} CPU cores, load {info['load_average_1m']}; {nbytes / 2**20:.0f} MiB of fp32 "
        f"weights (SmolLM2-135M) into {args.workers} running vLLM engine(s), backend `{sync.backend}`; "
        f"{args.repeats} interleaved repeats after a warm-up.",
        "",
        "| measure | median s | repeats |",
        "|---|---|---|",
        f"| push (WeightSync.push: learner put + engines load + ack) | {push_s:.3f} | "
        + ", ".join(f"{r['push_s']:.3f}" for r in runs["push"]) + " |",
        f"| floor = one copy of the bytes + the engine's bare reload | {floor_s:.3f} | "
        + ", ".join(f"{r['floor_s']:.3f}" for r in runs["floor"]) + " |",
        f"| of which: copy | {copy_s:.3f} | |",
        f"| of which: engine reload | {reload_s:.3f} | |",
        "",
        f"**ratio = {verdict(ratio, '<= 1.5', ratio <= 1.5)}**; against the copy alone {push_s / copy_s:.1f}x.",
    ])  # fmt: skip
    write("weight_sync", payload, md)


if __name__ == "__main__":
    main()
