"""Learner step vs a bare torch step on the same model and batch; weight broadcast vs a bare copy.

Both steps compute the same thing: the TokenLogits forward (LM head on response positions only),
the clipped PG + entropy loss, backward, grad-norm clipping, AdamW. The ratio isolates what the
DeepSpeed engine (ZeRO partitioning, bucketed reduction, its optimizer wrapper) costs. Steps are
interleaved (learner, bare, learner, ...) and medians reported, so machine load hits both alike.
KL is off in both (it adds the same reference forward to each).

Usage: .venv/bin/python benchmarks/learner_step.py [--rows 8 --prompt 96 --response 32 --steps 4]
Writes benchmarks/results/learner_step.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache/torch_extensions"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_table(rows: int, prompt: int, response: int, vocab: int, seed: int):
    import torch

    from cluster.core.records import Turn, turns_to_table

    g = torch.Generator().manual_seed(seed)
    turns = []
    for i in range(rows):
        p = torch.randint(10, vocab, (prompt,), generator=g).tolist()
        r = torch.randint(10, vocab, (response,), generator=g).tolist()
        adv = 1.0 if i % 2 else -1.0
        turns.append(Turn(f"e{i}", 0, "t", "x", "solver", p, r, [-5.0] * response, 0, advantage=adv))
    return turns_to_table(turns)


class BareStep:
    """The same computation with plain torch: no DeepSpeed."""

    def __init__(self, model_path: str, lcfg, dtype):
        import torch
        from transformers import AutoModelForCausalLM

        from learner.model import TokenLogits

        torch.manual_seed(0)
        self.torch = torch
        self.model = TokenLogits(AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lcfg.lr, weight_decay=lcfg.weight_decay)
        self.lcfg = lcfg

    def step(self, rows, pad_id: int) -> float:
        from learner import losses
        from learner.batching import collate, plan_micro_batches

        t0 = time.perf_counter()
        plan = plan_micro_batches([len(r) for r in rows], self.lcfg.micro_batch_tokens)
        total = sum(r.n_response for r in rows)
        for idx in plan:
            mb = collate([rows[j] for j in idx], pad_id)
            logits = self.model(mb.input_ids, mb.attention_mask, mb.select)
            lp = self.torch.log_softmax(logits, -1).gather(-1, mb.targets[:, None])[:, 0]
            mask = self.torch.ones_like(lp)
            loss, _ = losses.policy_gradient_loss(
                lp,
                mb.behaviour_logprobs,
                mb.advantages,
                mask,
                None,
                self.lcfg.eps_low,
                self.lcfg.eps_high,
                total,
            )
            with self.torch.no_grad():
                losses.entropy_loss(losses.entropy_from_logits(logits), mask, 0.0, total)
            loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.lcfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0


def bench_broadcast(learner, repeats: int) -> dict:
    """get_weights (fresh numpy copies) + object-store transfer into another process, against a bare
    tensor copy of the same bytes in this process."""
    import numpy as np
    import ray
    import torch

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class Sink:
        def update_weights(self, weights: dict, version: int) -> int:
            return int(sum(a.nbytes for a in weights.values()))

    from learner.broadcast import broadcast_object_store

    sink = Sink.remote()
    ray.get(sink.update_weights.remote({"x": np.zeros(1)}, 0))
    get_s, bcast_s, copy_s = [], [], []
    nbytes = 0
    for v in range(repeats):
        t0 = time.perf_counter()
        w = learner.get_weights()
        get_s.append(time.perf_counter() - t0)
        m = broadcast_object_store(w, v + 1, [sink])
        bcast_s.append(m["broadcast_s"])
        nbytes = sum(a.nbytes for a in w.values())
        src = [p.detach() for _, p in learner.lm.named_parameters()]
        dst = [torch.empty_like(p) for p in src]
        t0 = time.perf_counter()
        for d, s in zip(dst, src):
            d.copy_(s)
        copy_s.append(time.perf_counter() - t0)
        del w, dst
    ray.shutdown()
    med = statistics.median
    return {
        "bytes": nbytes,
        "get_weights_s": med(get_s),
        "object_store_broadcast_s": med(bcast_s),
        "learner_to_engine_s": med(get_s) + med(bcast_s),
        "bare_copy_s": med(copy_s),
        "ratio_vs_bare_copy": (med(get_s) + med(bcast_s)) / max(med(copy_s), 1e-9),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=96)
    ap.add_argument("--response", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--zero", type=int, default=2)
    ap.add_argument("--broadcast-repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/learner_step"))
    args = ap.parse_args()

    import torch

    from cluster.core.config import load_config
    from learner.actor import Learner
    from learner.batching import rows_from_table

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    cfg = load_config(
        None,
        [
            f"learner.zero_stage={args.zero}",
            f"learner.num_threads={os.environ['OMP_NUM_THREADS']}",  # the bare step's thread count
            "learner.lr=1e-6",
            f"learner.micro_batch_tokens={4 * (args.prompt + args.response)}",
            "learner.kl_coef={solver: 0.0, extractor: 0.0}",
        ],
    )
    learner = Learner(cfg)
    learner.setup()
    bare = BareStep(learner.model_path, cfg.learner, learner.dtype)
    table = make_table(args.rows, args.prompt, args.response, learner.lm.config.vocab_size, seed=0)
    rows = rows_from_table(table)
    learner.train(table)  # warm-up both (allocator, first-touch)
    bare.step(rows, learner.pad_id)
    ds_s, bare_s = [], []
    for _ in range(args.steps):
        ds_s.append(learner.train(table)["step_time_s"])
        bare_s.append(bare.step(rows, learner.pad_id))
    tokens = args.rows * (args.prompt + args.response)
    med = statistics.median
    del bare
    res = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "load_avg_at_start": os.getloadavg()[0],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "dtype": str(learner.dtype),
        "zero_stage": args.zero,
        "batch": {"rows": args.rows, "prompt": args.prompt, "response": args.response, "tokens": tokens},
        "learner_step_s": med(ds_s),
        "bare_torch_step_s": med(bare_s),
        "step_ratio": med(ds_s) / med(bare_s),
        "learner_tokens_per_s": tokens / med(ds_s),
        "bare_tokens_per_s": tokens / med(bare_s),
        "learner_steps_s": ds_s,
        "bare_steps_s": bare_s,
    }
    res["broadcast"] = bench_broadcast(learner, args.broadcast_repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    b = res["broadcast"]
    md = f"""# Learner step benchmark

{res["date"]}, {res["machine"]} ({res["device"]}, {res["dtype"]}, ZeRO-{args.zero}); load average at start {res["load_avg_at_start"]:.1f}.
Batch: {args.rows} rows x ({args.prompt} prompt + {args.response} response) tokens = {tokens} tokens; median of {args.steps} interleaved steps.

| | step (s) | tokens/s |
|---|---|---|
| learner (DeepSpeed) | {res["learner_step_s"]:.3f} | {res["learner_tokens_per_s"]:.1f} |
| bare torch | {res["bare_torch_step_s"]:.3f} | {res["bare_tokens_per_s"]:.1f} |
| **ratio** | **{res["step_ratio"]:.3f}** (target <= 1.15) | |

Weight broadcast ({b["bytes"] / 1e6:.0f} MB): get_weights {b["get_weights_s"]:.3f} s + object store into another process {b["object_store_broadcast_s"]:.3f} s = {b["learner_to_engine_s"]:.3f} s;
bare tensor copy of the same bytes {b["bare_copy_s"]:.3f} s (ratio {b["ratio_vs_bare_copy"]:.1f}x).
"""
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
