"""GPU smoke check for the learner, for a machine with torch + transformers + CUDA (+ the deepspeed
wheel) but no vLLM, Ray, pyarrow or the embedded GGUF.

1. A DeepSpeed step (ZeRO-2, bf16) with our losses (clipped PG + entropy on response tokens only,
   through learner.model.TokenLogits) against a bare torch step on the same model and batch
   (fp32 master weights, bf16 autocast, fused AdamW, grad clipping); interleaved, medians, ratio.
2. The collective weight-broadcast code path (actors.weight_sync.send_weights / recv_weights, as
   learner.broadcast.CollectiveBroadcaster drives it) between 2 processes (torch.multiprocessing),
   checked bitwise, timed against a bare device copy of the same bytes. NCCL refuses two ranks on
   one GPU on most versions ("Duplicate GPU detected"): that is reported, and the same path is then
   run over gloo with CUDA tensors so the bucketing/unpacking code is still exercised, and over NCCL
   with the sender alone (group init and the NCCL calls; nothing crosses a link).

3. Shared-prompt packing (learner.batching.collate_units) on a GRPO-shaped batch: the logprobs
   against separate rows under bf16 autocast, and forward+backward time both ways.

Only torch-only project modules are imported (learner.model, learner.losses, learner.batching,
cluster.core.roles, actors.weight_sync).
Without --model a small Llama is built from scratch (SmolLM2-135M's shape by default).

    python benchmarks/gpu_smoke.py [--model HF_DIR] [--steps 5] [--rows 8 --prompt 256 --response 64]
    python benchmarks/gpu_smoke.py --cpu --tiny     # gloo + fp32 on CPU, a quick self-check
Writes benchmarks/results/learner_gpu_smoke.json (or the --out path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def build_model(args, dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig

    if args.model:
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    if args.tiny:
        cfg = LlamaConfig(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    else:  # SmolLM2-135M's shape
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                          max_position_embeddings=2048, rope_theta=100000.0)  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=dtype)


def make_batch(args, vocab: int, device):
    """Right-padded rows of varying length; `select` marks positions whose next token is a response token."""
    g = torch.Generator().manual_seed(0)
    lengths = [args.prompt + args.response - (i * 7) % max(1, args.prompt // 2) for i in range(args.rows)]
    L = max(lengths)
    ids = torch.randint(10, vocab, (args.rows, L), generator=g)
    att = torch.zeros(args.rows, L, dtype=torch.long)
    select = torch.zeros(args.rows, L - 1, dtype=torch.bool)
    for b, n in enumerate(lengths):
        att[b, :n] = 1
        select[b, n - args.response - 1 : n - 1] = True
    targets = ids[:, 1:][select]
    n_tok = int(select.sum())
    adv = torch.tensor([1.0 if b % 2 else -1.0 for b in range(args.rows)])[:, None].expand(-1, L - 1)[select]
    return {
        "input_ids": ids.to(device), "attention_mask": att.to(device), "select": select.to(device),
        "targets": targets.to(device), "behaviour": torch.full((n_tok,), -8.0, device=device),
        "adv": adv.contiguous().to(device), "tokens": int(att.sum()),
    }  # fmt: skip


def loss_of(model, b):
    from learner import losses

    logits = model(b["input_ids"], b["attention_mask"], b["select"])
    lp = torch.log_softmax(logits, -1).gather(-1, b["targets"][:, None])[:, 0]
    mask = torch.ones_like(lp)
    loss, m = losses.policy_gradient_loss(lp, b["behaviour"], b["adv"], mask, None, 0.1, 0.15)
    ent, _ = losses.entropy_loss(losses.entropy_from_logits(logits), mask, -0.03)
    return loss + ent


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    """Seconds `fn()` takes, with the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def bench_step(args, device) -> dict:
    import deepspeed

    from learner.model import TokenLogits, deepspeed_config

    gpu = device.type == "cuda"
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    )
    deepspeed.init_distributed(
        dist_backend="nccl" if gpu else "gloo", auto_mpi_discovery=False, verbose=False
    )
    dtype = torch.bfloat16 if gpu else torch.float32
    lcfg = SimpleNamespace(zero_stage=2, grad_clip=1.0, optimizer="adamw")
    policy = TokenLogits(build_model(args, dtype))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    engine, *_ = deepspeed.initialize(
        model=policy, optimizer=opt, config=deepspeed_config(lcfg, 1, dtype, gpu)
    )

    bare = TokenLogits(build_model(args, torch.float32)).to(device)
    bare_opt = torch.optim.AdamW(bare.parameters(), lr=1e-6, fused=gpu)
    batch = make_batch(args, bare.lm.config.vocab_size, device)

    def ds_step():
        engine.set_gradient_accumulation_boundary(True)
        engine.backward(loss_of(engine, batch))
        engine.step()

    def bare_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            loss = loss_of(bare, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bare.parameters(), 1.0)
        bare_opt.step()
        bare_opt.zero_grad(set_to_none=True)

    timed(ds_step, device), timed(bare_step, device)  # warm-up
    ds, br = [], []
    for _ in range(args.steps):
        ds.append(timed(ds_step, device))
        br.append(timed(bare_step, device))
    med = statistics.median
    res = {
        "params": sum(p.numel() for p in bare.parameters()),
        "batch_tokens": batch["tokens"],
        "deepspeed_step_s": med(ds),
        "bare_step_s": med(br),
        "step_ratio": med(ds) / med(br),
        "deepspeed_tokens_per_s": batch["tokens"] / med(ds),
        "bare_tokens_per_s": batch["tokens"] / med(br),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
    }
    weights = {n: p.detach().to("cpu", copy=True) for n, p in engine.module.lm.named_parameters()}
    torch.distributed.destroy_process_group()
    return res, weights


def bench_shared_prompts(args, device) -> dict:
    """GRPO-shaped batch (`--groups` prompts x `--group` samples): logprobs of the shared-prompt packing
    (learner.batching.collate_units) against separate rows, and a forward+backward timed both ways."""
    from learner.batching import Row, collate, collate_units
    from learner.model import TokenLogits

    gpu = device.type == "cuda"
    net = TokenLogits(build_model(args, torch.float32)).to(device)
    g = torch.Generator().manual_seed(1)
    vocab = net.lm.config.vocab_size
    units = []
    for _ in range(args.groups):
        prompt = torch.randint(10, vocab, (args.prompt,), generator=g).tolist()
        units.append([
            Row(prompt + torch.randint(10, vocab, (args.response,), generator=g).tolist(), args.prompt,
                [-8.0] * args.response, 1.0 if j % 2 else -1.0, "solver")
            for j in range(args.group)
        ])  # fmt: skip
    rows = [r for u in units for r in u]

    def to_dev(mb):
        for f in ("input_ids", "attention_mask", "select", "targets", "behaviour_logprobs", "advantages"):
            setattr(mb, f, getattr(mb, f).to(device))
        mb.position_ids = mb.position_ids.to(device) if mb.position_ids is not None else None
        return mb

    plain, packed = to_dev(collate(rows, 0)), to_dev(collate_units(units, 0))

    def logprobs(mb):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            logits = net(mb.input_ids, mb.attention_mask, mb.select, mb.position_ids)
        return torch.log_softmax(logits.float(), -1).gather(-1, mb.targets[:, None])[:, 0]

    def step(mb):
        def fwd_bwd():
            (logprobs(mb) * mb.advantages).mean().backward()
            sync(device)
            net.zero_grad(set_to_none=True)

        return timed(fwd_bwd, device)

    with torch.no_grad():
        diff = (logprobs(plain) - logprobs(packed)).abs().max().item()
    step(plain), step(packed)  # warm-up
    tp, tk = [], []
    for _ in range(args.steps):
        tp.append(step(plain))
        tk.append(step(packed))
    med = statistics.median
    return {
        "groups": args.groups, "group": args.group, "prompt": args.prompt, "response": args.response,
        "tokens_plain": int(plain.attention_mask.sum()), "tokens_packed": packed.real_tokens,
        "max_abs_logprob_diff": diff, "plain_step_s": med(tp), "packed_step_s": med(tk),
        "speedup": med(tp) / med(tk),
    }  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _bcast_worker(rank, world, backend, device_str, port, weights, repeats, bucket_bytes, queue):
    from actors.weight_sync import new_group, recv_weights, send_weights, weight_meta

    try:
        device = torch.device(device_str)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        group = new_group("127.0.0.1", port, rank, world, backend, timeout_s=120)
        named = [(n, t.to(device)) for n, t in weights.items()]
        names, shapes, dtypes = weight_meta(named)
        times = []
        ok = True
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            if rank == 0:
                send_weights(group, named, bucket_bytes)
            else:
                got = dict(recv_weights(group, names, shapes, dtypes, device, bucket_bytes))
            sync(device)
            times.append(time.perf_counter() - t0)
            if rank == 1:
                ok = ok and all(torch.equal(got[n], t) for n, t in named)
        queue.put((rank, "ok", statistics.median(times), ok))
    except Exception as e:  # reported by the parent, e.g. NCCL "Duplicate GPU detected"
        queue.put((rank, "error", f"{type(e).__name__}: {e}"[:500], False))


def bench_broadcast(weights, backend, device_str, repeats, bucket_bytes, world: int = 2) -> dict:
    """`world` 2: sender + receiver, checked bitwise. `world` 1: the sender alone (a one-GPU machine's
    NCCL check): group init, bucketing and the NCCL calls run, but nothing crosses a link."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_bcast_worker, args=(r, world, backend, device_str, port, weights, repeats, bucket_bytes, q))
             for r in range(world)]  # fmt: skip
    for p in procs:
        p.start()
    out = {}
    try:
        for _ in range(world):
            rank, status, val, ok = q.get(timeout=300)
            out[rank] = (status, val, ok)
    except Exception as e:
        out["timeout"] = ("error", f"no answer: {e}", False)
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    errors = [v[1] for v in out.values() if v[0] == "error"]
    if errors:
        return {"backend": backend, "device": device_str, "ok": False, "error": errors[0]}
    device = torch.device(device_str)
    src = [t.to(device) for t in weights.values()]
    dst = [torch.empty_like(t) for t in src]
    sync(device)
    t0 = time.perf_counter()
    for d, s in zip(dst, src):
        d.copy_(s)
    sync(device)
    copy_s = time.perf_counter() - t0
    nbytes = sum(t.numel() * t.element_size() for t in src)
    recv_s = out[world - 1][1]
    return {
        "backend": backend, "device": device_str, "ranks": world, "ok": bool(out[world - 1][2]), "bytes": nbytes,
        "broadcast_s": recv_s, "bare_copy_s": copy_s, "ratio_vs_bare_copy": recv_s / max(copy_s, 1e-9),
        "GB_per_s": nbytes / recv_s / 1e9,
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="HF model folder (default: build a Llama from scratch)")
    ap.add_argument("--cpu", action="store_true", help="gloo + fp32 on CPU (self-check without a GPU)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer toy model instead of SmolLM2-135M's shape")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--response", type=int, default=64)
    ap.add_argument("--bucket-mb", type=int, default=256)
    ap.add_argument("--groups", type=int, default=2, help="shared-prompt check: prompts")
    ap.add_argument("--group", type=int, default=8, help="shared-prompt check: samples per prompt")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/learner_gpu_smoke.json"))
    args = ap.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu", file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.cpu else torch.device("cuda", 0)
    res: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu x{os.cpu_count()}",
        "torch": torch.__version__,
        "model": args.model or ("tiny llama" if args.tiny else "llama, SmolLM2-135M shape, random init"),
    }
    step, weights = bench_step(args, device)
    res["step"] = step
    print(f"[gpu_smoke] step: deepspeed {step['deepspeed_step_s']:.4f}s vs bare {step['bare_step_s']:.4f}s "
          f"-> ratio {step['step_ratio']:.3f} ({step['deepspeed_tokens_per_s']:.0f} tok/s)")  # fmt: skip
    sp = res["shared_prompts"] = bench_shared_prompts(args, device)
    print(f"[gpu_smoke] shared prompts ({sp['groups']} x {sp['group']}): max |logprob diff| "
          f"{sp['max_abs_logprob_diff']:.4f}, tokens {sp['tokens_plain']} -> {sp['tokens_packed']}, fwd+bwd "
          f"{sp['plain_step_s']:.4f}s -> {sp['packed_step_s']:.4f}s = {sp['speedup']:.2f}x")  # fmt: skip
    bucket = args.bucket_mb * 2**20
    if device.type == "cuda":
        b = bench_broadcast(weights, "nccl", "cuda:0", 3, bucket)
        res["broadcast_nccl"] = b
        if not b["ok"]:
            print(f"[gpu_smoke] NCCL broadcast, 2 ranks on one GPU: {b.get('error')}")
            res["broadcast_gloo_cuda"] = bench_broadcast(weights, "gloo", "cuda:0", 3, bucket)
            res["broadcast_nccl_1rank"] = bench_broadcast(weights, "nccl", "cuda:0", 3, bucket, world=1)
    else:
        res["broadcast_gloo_cpu"] = bench_broadcast(weights, "gloo", "cpu", 3, bucket)
    for k in ("broadcast_nccl", "broadcast_gloo_cuda", "broadcast_nccl_1rank", "broadcast_gloo_cpu"):
        b = res.get(k)
        if b and b.get("ok"):
            print(f"[gpu_smoke] {k}: {b['bytes'] / 1e6:.0f} MB in {b['broadcast_s']:.4f}s "
                  f"({b['GB_per_s']:.2f} GB/s), bare copy {b['bare_copy_s']:.4f}s -> ratio {b['ratio_vs_bare_copy']:.1f}")  # fmt: skip
        elif b:
            print(f"[gpu_smoke] {k}: FAILED {b.get('error')}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"[gpu_smoke] wrote {out}")
    ok = any(
        res.get(k, {}).get("ok") for k in ("broadcast_nccl", "broadcast_gloo_cuda", "broadcast_gloo_cpu")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
