"""The rollout pool's real generation path against bare constrained vLLM on the same prompts.

    .venv/bin/python benchmarks/rollout_constrained.py [--prompts 16] [--repeats 3]

Prompts: the first solver turn of generated easy ALFWorld games (actors.prompts, the sequence
context), each constrained to its admissible actions, as the episode loop sends them.
- pool: `RolloutPool.generate` (a Ray actor with its in-process vLLM engine; GenParams as the
  trainer builds them, behaviour logprobs left to the learner: the default);
- legacy: the same call asking the engine for behaviour logprobs (`rollout.engine_logprobs`), which
  rescores every constrained sample with an extra prefill;
- bare: `vllm.LLM.generate` in this process with the same structured-output choices, no Ray.
Generated tokens per second, interleaved; `ratio` = pool / bare (target >= 0.9).
Writes benchmarks/results/rollout_constrained.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time

from common import interleave, machine, median, verdict, write


def prompts(n: int, tokenizer) -> list[tuple[list[int], list[str]]]:
    from actors.prompts import Conversation, PromptStyle, first_user, system_prompt
    from cluster.core.config import load_config
    from cluster.data import ensure_data
    from envs import list_tasks, make_env

    cfg = load_config("configs/bench_alfworld_easy.yaml")
    ensure_data(cfg)
    style = PromptStyle.from_config(cfg)
    env = make_env(cfg.env)
    out = []
    for task in list_tasks(cfg.env, "train")[:n]:
        obs = env.reset(task)
        conv = Conversation.start(tokenizer, system_prompt(style, None, True, tokenizer),
                                  first_user(style, obs.task_text, obs.text, obs.admissible_actions, None, tokenizer))  # fmt: skip
        out.append((conv.ids, list(obs.admissible_actions)))
    env.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import ray
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from actors.pool import RolloutPool
    from cluster.core.config import load_config
    from cluster.core.generation import GenParams
    from cluster.core.model_store import resolve_model

    info = machine()
    path = resolve_model("embedded")
    batch = prompts(args.prompts, AutoTokenizer.from_pretrained(path))
    # the pool's engine with this process's OpenMP threads, as the bare engine has (like for like)
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    cfg = load_config(
        None, ["engine.kv_cache_gib=0.5", "model.max_model_len=2048", f"rollout.num_threads={threads}"]
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = RolloutPool(cfg, "rollout", 1)
    bare = LLM(model=path, dtype="float32", enforce_eager=True, max_model_len=2048, kv_cache_memory_bytes=2**29,
               structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True})  # fmt: skip

    def params(logprobs: bool) -> list[GenParams]:
        return [GenParams(temperature=1.0, max_tokens=24, choices=c, logprobs=logprobs) for _, c in batch]

    def pool_arm(logprobs: bool):
        def run() -> dict:
            t0 = time.perf_counter()
            outs = pool.generate([p for p, _ in batch], params(logprobs))
            dt = time.perf_counter() - t0
            tokens = sum(len(g.token_ids) for o in outs for g in o)
            return {"s": dt, "tokens": tokens, "tokens_per_s": tokens / dt}

        return run

    def bare_arm() -> dict:
        sps = [SamplingParams(temperature=1.0, max_tokens=24, structured_outputs=StructuredOutputsParams(choice=c))
               for _, c in batch]  # fmt: skip
        t0 = time.perf_counter()
        outs = bare.generate([{"prompt_token_ids": p} for p, _ in batch], sampling_params=sps, use_tqdm=False)
        dt = time.perf_counter() - t0
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        return {"s": dt, "tokens": tokens, "tokens_per_s": tokens / dt}

    runs = interleave({"pool": pool_arm(False), "bare": bare_arm, "legacy": pool_arm(True)}, args.repeats)
    pool.shutdown()
    ray.shutdown()
    tps = {k: median(v, "tokens_per_s") for k, v in runs.items()}
    ratio = tps["pool"] / tps["bare"]
    payload = {
        "machine": info,
        "prompts": len(batch),
        "prompt_tokens_mean": sum(len(p) for p, _ in batch) / len(batch),
        "repeats": args.repeats,
        "runs": runs,
        "tokens_per_s": tps,
        "ratio": ratio,
        "legacy_ratio": tps["legacy"] / tps["bare"],
        "target": ">= 0.9",
        "target_met": ratio >= 0.9,
    }
    md = "\n".join([
        "# Rollout generation: the pool's real path against bare constrained vLLM",
        "",
        f"{info['date']}, {info['cpus']} CPU cores, load {info['load_average_1m']}; {len(batch)} first-turn ALFWorld "
        f"prompts (mean {payload['prompt_tokens_mean']:.0f} tokens) constrained to their admissible actions, "
        f"{args.repeats} interleaved repeats after a warm-up.",
        "",
        "| arm | generated tokens/s (median) | repeats |",
        "|---|---|---|",
        *(f"| {k} | {tps[k]:.1f} | " + ", ".join(f"{r['tokens_per_s']:.1f}" for r in runs[k]) + " |"
          for k in ("pool", "legacy", "bare")),
        "",
        f"**ratio pool / bare = {verdict(ratio, '>= 0.9', ratio >= 0.9)}**; the legacy path (engine logprobs, "
        f"a rescoring prefill per constrained sample) {payload['legacy_ratio']:.2f}.",
    ])  # fmt: skip
    write("rollout_constrained", payload, md)


if __name__ == "__main__":
    main()
