"""The learner's step against a bare torch step on the same model and batch, like for like.

    .venv/bin/python benchmarks/learner_step.py [--episodes 8 --turns 8 --steps 4]

Both compute the same thing with the same dtype and no activation recomputation: the TokenLogits
forward (LM head on generated positions only), the clipped PG + entropy terms with sample-mean
weights, backward, grad-norm clipping, AdamW. The ratio isolates what the DeepSpeed engine and the
learner's bookkeeping cost. A third arm, the bare step under bf16 autocast, measures what bf16
would buy on this CPU, with the logprob gap against fp32 on the same batch. The batch is shaped
like the sequence context: whole episodes of `turns` (observation + action) pairs. Steps are
interleaved after a warm-up, medians reported. KL is off in every arm (it would add the same
reference forward to each). Writes benchmarks/results/learner_step.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import nullcontext

from common import interleave, machine, median, verdict, write


def make_table(episodes: int, turns: int, obs: int, action: int, vocab: int, seed: int):
    import torch

    from cluster.core.records import Trace, traces_to_table

    g = torch.Generator().manual_seed(seed)
    traces = []
    for i in range(episodes):
        ids, spans = torch.randint(10, vocab, (64,), generator=g).tolist(), []
        for _ in range(turns):
            ids += torch.randint(10, vocab, (obs,), generator=g).tolist()
            spans.append((len(ids), len(ids) + action))
            ids += torch.randint(10, vocab, (action,), generator=g).tolist()
        adv = [1.0 if i % 2 else -1.0] * turns
        traces.append(Trace(f"e{i}", 0, "t", "x", "solver", ids, spans, [], 0, advantages=adv))
    return traces_to_table(traces)


class BareStep:
    """The same computation with plain torch: no DeepSpeed, no learner bookkeeping."""

    def __init__(self, model_path: str, lcfg, autocast: bool = False):
        import torch
        from transformers import AutoModelForCausalLM

        from learner.model import TokenLogits

        torch.manual_seed(0)
        self.torch, self.lcfg, self.autocast = torch, lcfg, autocast
        self.model = TokenLogits(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lcfg.lr, betas=tuple(lcfg.adam_betas))

    def _ctx(self):
        return self.torch.autocast("cpu", dtype=self.torch.bfloat16) if self.autocast else nullcontext()

    def logprobs(self, mb):
        with self._ctx():
            logits = self.model(mb.input_ids, mb.attention_mask, mb.select, mb.position_ids)
        return self.torch.log_softmax(logits.float(), -1).gather(-1, mb.targets[:, None])[:, 0], logits

    def step(self, rows, pad_id: int) -> float:
        from learner import losses
        from learner.batching import collate_units, plan_micro_batches, token_weights

        t0 = time.perf_counter()
        weights = token_weights(rows, "sample_mean", sum(r.n_trained for r in rows), len(rows))
        for idx in plan_micro_batches([len(r) for r in rows], self.lcfg.micro_batch_tokens):
            mb = collate_units([[rows[j]] for j in idx], pad_id, [[weights[j]] for j in idx])
            lp, logits = self.logprobs(mb)
            mask = self.torch.ones_like(lp)
            loss, _ = losses.policy_gradient_loss(lp, lp.detach(), mb.advantages, mask, None, self.lcfg.eps_low,
                                                  self.lcfg.eps_high, weights=mb.weights)  # fmt: skip
            with self.torch.no_grad():
                losses.entropy_loss(losses.entropy_from_logits(logits), mask, 0.0, weights=mb.weights)
            loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.lcfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--obs", type=int, default=60)
    ap.add_argument("--action", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    import torch

    from cluster.core.config import load_config
    from learner.actor import Learner
    from learner.batching import collate_units, rows_from_table

    threads = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(threads)
    info = machine()
    cfg = load_config(None, [f"learner.num_threads={threads}", "learner.lr=1e-6", "learner.micro_batch_tokens=2048",
                             "learner.kl_coef={solver: 0.0, extractor: 0.0}"])  # fmt: skip
    learner = Learner(cfg)
    setup = learner.setup()
    bare, bare_bf16 = (
        BareStep(learner.model_path, cfg.learner),
        BareStep(learner.model_path, cfg.learner, True),
    )
    table = make_table(args.episodes, args.turns, args.obs, args.action, learner.lm.config.vocab_size, seed=0)
    rows = rows_from_table(table)
    with torch.no_grad():  # the bf16 gap on the same weights, before any step moves them apart
        mb = collate_units([[r] for r in rows], learner.pad_id)
        gap = (bare.logprobs(mb)[0] - bare_bf16.logprobs(mb)[0]).abs()
    runs = interleave(
        {
            "learner": lambda: {"s": learner.train(table)["step_time_s"]},
            "bare": lambda: {"s": bare.step(rows, learner.pad_id)},
            "bare_bf16_autocast": lambda: {"s": bare_bf16.step(rows, learner.pad_id)},
        },
        args.steps,
    )
    s = {k: median(v, "s") for k, v in runs.items()}
    ratio = s["learner"] / s["bare"]
    tokens = sum(len(r) for r in rows)
    payload = {
        "machine": info,
        "learner": setup,
        "threads": threads,
        "batch": {
            "episodes": args.episodes,
            "turns": args.turns,
            "tokens": tokens,
            "trained_tokens": sum(r.n_trained for r in rows),
        },  # fmt: skip
        "runs": runs,
        "step_s": s,
        "ratio": ratio,
        "target": "<= 1.15",
        "target_met": ratio <= 1.15,
        "bf16_autocast_vs_fp32": s["bare_bf16_autocast"] / s["bare"],
        "bf16_logprob_gap": {"mean": float(gap.mean()), "max": float(gap.max())},
    }
    md = "\n".join([
        "# Learner step: like for like",
        "",
        f"{info['date']}, {info['cpus']} CPU cores, {threads} torch thread(s), load {info['load_average_1m']}; the "
        f"learner as configured by default here: ZeRO stage {setup['zero_stage']}, fp32, gradient checkpointing "
        f"{'on' if setup['gradient_checkpointing'] else 'off'}. Batch: {args.episodes} whole episodes of {args.turns} "
        f"turns, {tokens} tokens ({payload['batch']['trained_tokens']} trained); {args.steps} interleaved steps per arm.",
        "",
        "| arm | step s (median) | repeats |",
        "|---|---|---|",
        *(f"| {k} | {s[k]:.2f} | " + ", ".join(f"{r['s']:.2f}" for r in runs[k]) + " |" for k in runs),
        "",
        f"**ratio learner / bare = {verdict(ratio, '<= 1.15', ratio <= 1.15)}**.",
        "",
        f"bf16 autocast on this CPU: {payload['bf16_autocast_vs_fp32']:.2f}x the fp32 step time, logprob gap against "
        f"fp32 mean {payload['bf16_logprob_gap']['mean']:.4f} / max {payload['bf16_logprob_gap']['max']:.4f} nats: "
        + ("faster, so worth choosing (`learner.dtype: bfloat16`)." if payload["bf16_autocast_vs_fp32"] < 1
           else "slower here (AVX512-BF16 without AMX), so `learner.dtype: auto` stays fp32 on CPU."),
    ])  # fmt: skip
    write("learner_step", payload, md)


if __name__ == "__main__":
    main()
