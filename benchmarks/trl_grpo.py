"""A peer side by side: TRL's GRPOTrainer vs our GRPO step, same model, prompts, lengths, machine.

    python benchmarks/trl_grpo.py [--demos FILE] [--prompts 2] [--group 4] [--max-tokens 16] [--steps 3]

Both sides run one GRPO optimisation step per iteration on `prompts x group` samples:
- ours: RolloutPool.generate (Ray actor, in-process vLLM, fp32) -> shared reward -> group-normalised
  advantages (learner.advantages.group_normalise) -> LearnerGroup.train (DeepSpeed ZeRO-2 actor,
  clipped PG + KL to the reference) -> weight broadcast back into the engine: exactly what
  `trainer.mode=grpo` does per iteration, minus the environment.
- TRL: GRPOTrainer (transformers generate, no vLLM: vLLM in TRL needs CUDA), beta = our KL coef,
  the same learning rate, temperature, max completion length, one optimizer step per generation batch.
Prompts: ALFWorld solver prompts (actors.prompts) rendered from planner demonstrations, the same
chat messages on both sides (checked to tokenise identically). Reward: word-Jaccard overlap of the
completion with its closest admissible action (graded, so groups have variance on both sides).
Threads: ours runs each stage in a Ray actor with 1 thread (learner.num_threads=1); TRL with torch threads = 1.
Timing: 1 warm-up step per side, then `--steps` timed steps; blocks ours -> TRL -> ours so load
drift on the shared machine shows up. Writes benchmarks/results/trl_grpo.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def jaccard_reward(completion: str, admissible: list[str]) -> float:
    """Best word-set Jaccard overlap between the completion and any admissible action."""
    words = set(completion.lower().split())
    if not words:
        return 0.0
    return max((len(words & set(a.split())) / len(words | set(a.split())) for a in admissible), default=0.0)


def load_prompts(demos: str, n: int, tokenizer) -> list[tuple[list[dict], list[str]]]:
    """(chat messages, admissible actions) of the first step of the first n demonstrations."""
    from actors.prompts import SolverView, solver_messages

    out = []
    with open(demos) as f:
        for line in f:
            rec = json.loads(line)
            step = rec["steps"][0]
            view = SolverView(
                rec["task_text"], step["observation"], list(step["admissible_actions"]), [], None
            )
            out.append((solver_messages(view, "alfworld", True, 600, tokenizer), view.admissible_actions))
            if len(out) == n:
                return out
    raise ValueError(f"{demos}: {len(out)} demonstrations, need {n}")


def run_ours(cfg, prompts, tokenizer, group: int, max_tokens: int, steps: int) -> list[dict]:
    """Per-step timings of generate -> reward -> advantages -> learner.train -> broadcast."""
    from actors.engine import GenParams
    from actors.pool import RolloutPool
    from actors.prompts import encode_messages
    from cluster.core.records import Turn, turns_to_table
    from learner.advantages import group_normalise
    from learner.group import LearnerGroup

    pool = RolloutPool(cfg, "rollout", 1)
    learners = LearnerGroup(cfg)
    ids = [encode_messages(tokenizer, m) for m, _ in prompts]
    gen = GenParams(temperature=1.0, top_p=1.0, max_tokens=max_tokens, n=group, seed=0)
    timings = []
    try:
        for step in range(steps):
            t0 = time.perf_counter()
            outs = pool.generate(ids, gen)
            t1 = time.perf_counter()
            turns, rewards, groups = [], [], []
            for i, ((_, adm), gens) in enumerate(zip(prompts, outs)):
                for j, g in enumerate(gens):
                    rewards.append(jaccard_reward(g.text, adm))
                    groups.append(i)
                    turns.append(
                        Turn(f"s{step}-p{i}-g{j}", 0, f"p{i}", "bench", "solver", ids[i], list(g.token_ids),
                             list(g.logprobs), step, group_id=f"p{i}")
                    )  # fmt: skip
            for t, r, a in zip(turns, rewards, group_normalise(rewards, groups)):
                t.reward, t.advantage = r, float(a)
            learners.train(turns_to_table(turns))
            t2 = time.perf_counter()
            pool.broadcast(learners.weights(), step + 1)
            t3 = time.perf_counter()
            n_tok = sum(len(t.response_ids) for t in turns)
            timings.append(
                {"step_s": t3 - t0, "generate_s": t1 - t0, "train_s": t2 - t1, "broadcast_s": t3 - t2,
                 "samples": len(turns), "completion_tokens": n_tok, "reward_mean": statistics.mean(rewards)}
            )  # fmt: skip
            print(f"[ours] step {step}: {timings[-1]['step_s']:.1f}s ({n_tok} completion tokens)", flush=True)
    finally:
        pool.shutdown()
        learners.shutdown()
    return timings


def run_trl(
    model_dir: str, prompts, group: int, max_tokens: int, steps: int, lr: float, beta: float
) -> list[dict]:
    """Per-step timings of TRL's GRPOTrainer (a callback stamps each optimizer step)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(1)
    admissible = {json.dumps(m): adm for m, adm in prompts}
    data = Dataset.from_list([{"prompt": m, "key": json.dumps(m)} for m, _ in prompts] * (steps * 4))

    def reward(completions, key, **_):
        return [
            jaccard_reward(c[0]["content"] if isinstance(c, list) else c, admissible[k])
            for c, k in zip(completions, key)
        ]

    class Stamp(TrainerCallback):
        def __init__(self) -> None:
            self.t0, self.times = 0.0, []

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    stamp = Stamp()
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out, per_device_train_batch_size=len(prompts) * group, num_generations=group,
            max_completion_length=max_tokens, temperature=1.0, top_p=1.0, learning_rate=lr, beta=beta,
            max_steps=steps, logging_steps=1, report_to=[], use_cpu=True, bf16=False, save_strategy="no",
            gradient_accumulation_steps=1, num_iterations=1, shuffle_dataset=False, seed=0,
            dataloader_num_workers=0, disable_tqdm=True,
        )  # fmt: skip
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(model_dir)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                              processing_class=tok, callbacks=[stamp])  # fmt: skip
        trainer.train()
        logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    out = []
    for i, s in enumerate(stamp.times):
        mean_len = logs[i]["completions/mean_length"] if i < len(logs) else float("nan")
        out.append(
            {
                "step_s": s,
                "samples": len(prompts) * group,
                "completion_tokens": mean_len * len(prompts) * group,
            }
        )
        print(f"[trl] step {i}: {s:.1f}s", flush=True)
    return out


def summarise(timings: list[dict]) -> dict:
    step = statistics.median(t["step_s"] for t in timings)
    samples = timings[0]["samples"]
    toks = statistics.median(t["completion_tokens"] for t in timings)
    return {"median_step_s": step, "samples_per_s": samples / step, "completion_tokens_per_step": toks,
            "steps": len(timings)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "bench_alfworld_easy.yaml"))
    p.add_argument("--demos", default=str(ROOT / "data" / "bench" / "demos_trained.jsonl"))
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--metrics-port", type=int, default=23817, help="Ray metrics export port")
    args = p.parse_args(argv)

    import ray
    from transformers import AutoTokenizer

    from cluster.core.config import load_config
    from cluster.core.model_store import resolve_model
    from cluster.core.storage import atomic_write_bytes, write_json_plain
    from cluster.placement import init_ray

    # own metrics port: a second local Ray on the default one fails to start (port in use)
    ray_opts = ["cluster.include_dashboard=false", f"cluster.metrics_export_port={args.metrics_port}"]
    # one torch thread on both sides (TRL: torch.set_num_threads(1) in run_trl)
    cfg = load_config(args.config, [*ray_opts, "model.max_model_len=1024", "learner.num_threads=1"])
    model_dir = str(resolve_model(cfg.model.path))
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = load_prompts(args.demos, args.prompts, tok)
    from actors.prompts import encode_messages

    for m, _ in prompts:  # the same prompt tokens on both sides
        trl_ids = tok.apply_chat_template(m, tokenize=True, add_generation_prompt=True, return_dict=False)
        if list(trl_ids) != encode_messages(tok, m):
            raise AssertionError("TRL's chat template tokenises the prompt differently from ours")
    load0 = os.getloadavg()[0]
    init_ray(cfg)
    n = args.steps + 1
    ours_a = run_ours(cfg, prompts, tok, args.group, args.max_tokens, n)
    ray.shutdown()  # TRL gets the machine with no idle actors around
    trl = run_trl(
        model_dir, prompts, args.group, args.max_tokens, n, cfg.learner.lr, cfg.learner.kl_coef["solver"]
    )
    init_ray(cfg)
    ours_b = run_ours(cfg, prompts, tok, args.group, args.max_tokens, n)
    ray.shutdown()
    ours = summarise(ours_a[1:] + ours_b[1:])
    peer = summarise(trl[1:])
    ratio = ours["samples_per_s"] / peer["samples_per_s"]
    stage = {
        k: statistics.median(t[k] for t in ours_a[1:] + ours_b[1:])
        for k in ("generate_s", "train_s", "broadcast_s")
    }
    when = datetime.now(UTC).isoformat(timespec="seconds")
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), no GPU"
    import trl as trl_mod

    res = {
        "date": when, "machine": machine, "load_average_at_start": load0, "trl_version": trl_mod.__version__,
        "model": cfg.model.path, "prompts": args.prompts, "group": args.group, "max_tokens": args.max_tokens,
        "timed_steps": args.steps, "ours": ours, "ours_stage_median_s": stage, "trl": peer,
        "ratio_samples_per_s": ratio, "target": 2.0,
        "raw": {"ours_block1": ours_a, "trl": trl, "ours_block2": ours_b},
    }  # fmt: skip
    write_json_plain(RESULTS / "trl_grpo.json", res)
    b = args.prompts * args.group
    md = f"""# GRPO step: ours vs TRL GRPOTrainer ({when})

{machine}; load average {load0:.1f} at start. TRL {trl_mod.__version__}. Model: embedded SmolLM2-135M, fp32.
Batch: {args.prompts} ALFWorld solver prompts x {args.group} samples = {b} samples per step, at most
{args.max_tokens} completion tokens, temperature 1.0, one optimizer step per batch, KL coef = beta =
{cfg.learner.kl_coef["solver"]}, lr {cfg.learner.lr}. Median of {args.steps} timed steps per side (after one warm-up);
ours timed in two blocks around TRL's ({len(ours_a) - 1} + {len(ours_b) - 1} steps).

| | step (s) | samples/s | completion tokens/step |
|---|---|---|---|
| ours (vLLM rollout actor + DeepSpeed learner + broadcast) | {ours["median_step_s"]:.2f} | {ours["samples_per_s"]:.3f} | {ours["completion_tokens_per_step"]:.0f} |
| TRL GRPOTrainer (transformers generate) | {peer["median_step_s"]:.2f} | {peer["samples_per_s"]:.3f} | {peer["completion_tokens_per_step"]:.0f} |
| **ratio ours / TRL** | | **{ratio:.2f}x** (target >= 2x) | |

Our step by stage (median s): generate {stage["generate_s"]:.2f}, learner train {stage["train_s"]:.2f},
weight broadcast {stage["broadcast_s"]:.2f}. Our learner encodes each prompt once for its {args.group} samples
(learner.share_prompts={cfg.learner.share_prompts}; the logprobs are those of separate rows, checked in
tests/test_learner.py); TRL encodes prompt + completion per sample. Both sides 1 torch thread.
"""
    atomic_write_bytes(RESULTS / "trl_grpo.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
