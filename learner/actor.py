"""Learner: the policy in a DeepSpeed engine plus a frozen reference model; one data-parallel rank.

Plain class (wrap with `ray.remote`; LearnerGroup does). Two-phase start: `__init__` is cheap so the
group can ask rank 0 for its address first; `setup(master_addr, master_port)` joins the
torch.distributed group and builds the engines. One `train` call = one optimizer step per
`updates_per_batch` over the whole rank shard, accumulated over token-budget micro-batches; every
micro-batch divides by the batch-wide token count, so the update is a true token mean over the
global batch no matter how it was split.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from cluster.config import Config, LearnerConfig
from cluster.records import ROLES
from learner import losses
from learner.batching import (
    MicroBatch,
    collate,
    collate_units,
    null_micro_batch,
    plan_micro_batches,
    plan_units,
    rows_from_table,
    unit_length,
)
from learner.checkpoint import finalize_checkpoint, resolve_checkpoint, tmp_checkpoint_dir
from learner.model import TokenLogits, deepspeed_config, on_gpu, resolve_dtype

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def cpu_threads(configured: int, world_size: int) -> int:
    """Torch threads for a CPU learner: `configured`, or (0) this node's usable cores shared by the
    ranks. Ray sets OMP_NUM_THREADS=1 for a 1-CPU actor, but rollout and learning alternate in the
    synchronous loop, so the learner may use the cores the idle rollout workers hold."""
    if configured > 0:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(world_size, 1))


def node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # not under Ray
        return "127.0.0.1"


class Learner:
    """One DeepSpeed data-parallel rank. See module doc for the call order."""

    def __init__(self, cfg: Config, rank: int = 0, world_size: int = 1, seed: int | None = None) -> None:
        self.cfg = cfg
        self.lcfg = cfg.learner
        self.rank = rank
        self.world_size = world_size
        self.seed = cfg.trainer.seed if seed is None else seed
        self.version = 0
        self.engine = None

    def address(self) -> tuple[str, int]:
        """(ip, free port) of this node, for rank 0 to serve as MASTER_ADDR/PORT."""
        return node_ip(), free_port()

    def setup(self, master_addr: str = "127.0.0.1", master_port: int | None = None) -> dict:
        import deepspeed
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from cluster.model_store import resolve_model

        os.environ.setdefault(
            "TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parent.parent / ".cache/torch_extensions")
        )
        gpu = on_gpu()
        os.environ.update(
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(master_port or free_port()),
            RANK=str(self.rank),
            WORLD_SIZE=str(self.world_size),
            LOCAL_RANK="0",  # one device per actor (Ray sets CUDA_VISIBLE_DEVICES)
        )
        if not gpu:
            torch.set_num_threads(cpu_threads(self.lcfg.num_threads, self.world_size))
        deepspeed.init_distributed(
            dist_backend="nccl" if gpu else "gloo",
            auto_mpi_discovery=False,
            rank=self.rank,
            world_size=self.world_size,
            verbose=False,
        )
        torch.manual_seed(self.seed)
        self.device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
        self.dtype = resolve_dtype(self.lcfg.dtype)
        self.model_path = resolve_model(self.cfg.model.path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        lm = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        if self.lcfg.gradient_checkpointing:  # activations dominate learner memory on long prompts
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            lm.config.use_cache = False
        lm.config.use_cache = False
        self.lm = lm
        policy = TokenLogits(lm)
        params = [p for p in policy.parameters() if p.requires_grad]
        if self.lcfg.optimizer == "cpu_adam":
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            opt = DeepSpeedCPUAdam(
                params, lr=self.lcfg.lr, weight_decay=self.lcfg.weight_decay, adamw_mode=True
            )
        else:
            opt = torch.optim.AdamW(params, lr=self.lcfg.lr, weight_decay=self.lcfg.weight_decay)
        ds_cfg = deepspeed_config(self.lcfg, self.world_size, self.dtype, gpu)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=policy, optimizer=opt, config=ds_cfg)

        self.ref = None
        coefs = self._coef_tables()
        if float(coefs["kl"][:-1].abs().max()) > 0:
            ref_lm = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
            ref_lm.requires_grad_(False)
            self.ref = TokenLogits(ref_lm).to(self.device).eval()
        log.info(
            "learner rank %d/%d ready: %s zero=%d dtype=%s",
            self.rank,
            self.world_size,
            self.model_path,
            self.lcfg.zero_stage,
            self.dtype,
        )
        return {"rank": self.rank, "params": sum(p.numel() for p in lm.parameters())}

    # ---- training -------------------------------------------------------------------------
    def _coef_tables(self) -> dict[str, torch.Tensor]:
        """Per-role coefficients as tables indexed by ROLES index; the extra last entry (0) serves
        the null micro-batch (role index -1). Roles missing from config take the defaults."""
        default = LearnerConfig()
        out = {}
        for key, attr in (("weight", "role_weight"), ("kl", "kl_coef"), ("entropy", "entropy_coef")):
            d = {**getattr(default, attr), **getattr(self.lcfg, attr)}
            out[key] = torch.tensor([d[r] for r in ROLES] + [0.0], dtype=torch.float32)
        return out

    def _all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device if on_gpu() else "cpu")
        if self.world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.tolist()

    def _to_device(self, mb: MicroBatch) -> MicroBatch:
        for f in (
            "input_ids",
            "attention_mask",
            "select",
            "targets",
            "behaviour_logprobs",
            "advantages",
            "role_index",
        ):
            setattr(mb, f, getattr(mb, f).to(self.device))
        if mb.position_ids is not None:
            mb.position_ids = mb.position_ids.to(self.device)
        return mb

    def _logprobs(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.engine(mb.input_ids, mb.attention_mask, mb.select, mb.position_ids)
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(-1, mb.targets[:, None])[:, 0], logits

    def _rl_loss(
        self, mb: MicroBatch, denom: float, first_pass: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        coefs = {k: v.to(self.device)[mb.role_index] for k, v in self._tables.items()}
        mask = (mb.role_index >= 0).float()
        lp, logits = self._logprobs(mb)
        loss, metrics = losses.policy_gradient_loss(
            lp,
            mb.behaviour_logprobs,
            mb.advantages,
            mask,
            coefs["weight"],
            self.lcfg.eps_low,
            self.lcfg.eps_high,
            denom=denom,
        )
        if self.ref is not None:
            with torch.no_grad():
                ref_logits = self.ref(mb.input_ids, mb.attention_mask, mb.select, mb.position_ids)
                ref_lp = torch.log_softmax(ref_logits, -1).gather(-1, mb.targets[:, None])[:, 0]
            kl_loss, m = losses.kl_penalty(lp, ref_lp, mask, coefs["kl"], denom=denom)
            loss = loss + kl_loss
            metrics.update(m)
        need_grad = bool(coefs["entropy"].abs().max() > 0)
        with nullcontext() if need_grad else torch.no_grad():
            ent = losses.entropy_from_logits(logits)
            ent_loss, m = losses.entropy_loss(ent, mask, coefs["entropy"], denom=denom)
        if need_grad:
            loss = loss + ent_loss
        metrics.update(m)
        if first_pass:
            metrics.update(losses.logprob_gap(lp, mb.behaviour_logprobs, mask))
        return loss, metrics

    def _sft_loss(
        self, mb: MicroBatch, denom: float, first_pass: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        mask = (mb.role_index >= 0).float()
        lp, _ = self._logprobs(mb)
        loss = losses.role_balanced_nll(lp, mask, mb.role_index, self._role_tokens, self.world_size)
        _, metrics = losses.sft_loss(lp.detach(), mask, denom=denom)  # reported: the plain token mean
        return loss, metrics

    def _step(self, table: pa.Table, loss_fn, passes: int, where: str) -> dict[str, float]:
        """`passes` optimizer steps over this rank's rows; metrics token-weighted over all ranks."""
        if self.engine is None:
            raise RuntimeError(f"learner rank {self.rank}: setup() was not called")
        self._tables = self._coef_tables()
        rows = rows_from_table(table, where=f"{where} (rank {self.rank})")
        t0 = time.perf_counter()
        units = [
            [rows[j] for j in u]
            for u in plan_units(rows, self.lcfg.share_prompts, self.lcfg.micro_batch_tokens)
        ]
        plan = plan_micro_batches([unit_length(u) for u in units], self.lcfg.micro_batch_tokens)
        # response tokens per role over all ranks (every row's role is in ROLES: rows_from_table checks)
        role_tokens = self._all_reduce([float(sum(r.n_response for r in rows if r.role == x)) for x in ROLES])
        self._role_tokens = torch.tensor(role_tokens, device=self.device)
        n_mb, total_tokens = self._all_reduce([len(plan)], "max")[0], sum(role_tokens)
        # DeepSpeed averages gradients over ranks; scale back so the step is a global token mean.
        denom = max(total_tokens, 1.0) / self.world_size
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        maxes: dict[str, float] = {}
        real = padded = 0
        for p in range(passes):
            for i in range(int(n_mb)):
                mb = (
                    collate_units([units[j] for j in plan[i]], self.pad_id)
                    if i < len(plan)
                    else null_micro_batch(self.pad_id)
                )
                mb = self._to_device(mb)
                self.engine.set_gradient_accumulation_boundary(i == n_mb - 1)
                loss, m = loss_fn(mb, denom, p == 0)
                self.engine.backward(loss)
                w = float(mb.n_tokens) if mb.real_tokens else 0.0
                for k, v in m.items():
                    if k.endswith("_max"):
                        maxes[k] = max(maxes.get(k, 0.0), v if w else 0.0)
                        continue
                    # loss terms were divided by the global denominator: undo it, re-mean below
                    val = v * denom if (k.endswith("_loss") or k == "nll") else v * w
                    sums[k] = sums.get(k, 0.0) + val
                    weights[k] = weights.get(k, 0.0) + w
                if p == 0:
                    real += mb.real_tokens
                    padded += mb.padded_tokens if mb.real_tokens else 0
            self.engine.step()
            self.version += 1
        keys = sorted(sums)
        agg = self._all_reduce([sums[k] for k in keys] + [weights[k] for k in keys] + [real, padded])
        mkeys = sorted(maxes)
        mx = self._all_reduce([maxes[k] for k in mkeys], "max") if mkeys else []
        elapsed = time.perf_counter() - t0
        n = len(keys)
        out = {k: agg[i] / max(agg[n + i], 1.0) for i, k in enumerate(keys)}
        out.update(zip(mkeys, mx))
        if "pg_loss" in out or "nll" in out:
            out["loss"] = sum(out.get(k, 0.0) for k in ("pg_loss", "kl_loss", "entropy_loss", "nll"))
        gn = self.engine.get_global_grad_norm()
        out.update(
            grad_norm=float(gn) if gn is not None else float("nan"),
            tokens=float(total_tokens),
            seq_tokens=float(agg[-2]),
            padding_frac=1.0 - agg[-2] / max(agg[-1], 1.0),
            micro_batches=float(n_mb),
            step_time_s=elapsed,
            tokens_per_s=agg[-2] * passes / max(elapsed, 1e-9),
            version=float(self.version),
            lr=float(self.optimizer.param_groups[0]["lr"]),
        )
        return out

    @torch.no_grad()
    def score(self, batch: pa.Table) -> list[list[float]]:
        """The current policy's logprobs of each row's response tokens (no update), in row order.
        Used to check engines against the learner and to recompute behaviour logprobs."""
        rows = rows_from_table(batch, where=f"score batch (rank {self.rank})")
        out: list[list[float]] = [[] for _ in rows]
        for idx in plan_micro_batches([len(r) for r in rows], self.lcfg.micro_batch_tokens):
            mb = self._to_device(collate([rows[j] for j in idx], self.pad_id))
            logits = self.engine.module(mb.input_ids, mb.attention_mask, mb.select)
            lp = torch.log_softmax(logits, -1).gather(-1, mb.targets[:, None])[:, 0].cpu().tolist()
            pos = 0
            for j in idx:
                n = rows[j].n_response
                out[j], pos = lp[pos : pos + n], pos + n
        return out

    def train(self, batch: pa.Table) -> dict[str, float]:
        """RL update(s) on TURN_SCHEMA rows (advantages already assigned); returns metrics."""
        self.engine.train()
        return self._step(batch, self._rl_loss, self.lcfg.updates_per_batch, "train batch")

    def sft(self, batch: pa.Table) -> dict[str, float]:
        """One supervised step: token NLL on the response (loss-mask 1) tokens of each row."""
        self.engine.train()
        return self._step(batch, self._sft_loss, 1, "sft batch")

    def set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    # ---- weights and checkpoints -----------------------------------------------------------
    def _full_state(self) -> dict[str, torch.Tensor]:
        """HF-named parameters as fresh CPU tensors (never views of ZeRO's flat buffers; pickling a
        view ships the whole buffer). Collective under ZeRO-3: every rank must call it."""
        gather = nullcontext()
        if self.lcfg.zero_stage == 3:
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(list(self.lm.parameters()), modifier_rank=None)
        with gather:
            if self.rank != 0:
                return {}
            return {n: p.detach().to("cpu", copy=True) for n, p in self.lm.named_parameters()}

    def get_weights(self) -> dict[str, np.ndarray]:
        """HF-named numpy weights (bf16 widened to fp32: numpy has no bf16). {} on ranks > 0."""
        return {
            n: t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
            for n, t in self._full_state().items()
        }

    def put_weights(self) -> list:
        """`[ObjectRef]` of get_weights() put into the object store by this actor (rank 0), so the
        weights go learner -> engines without a detour through the driver. [] on ranks > 0."""
        import ray

        w = self.get_weights()
        return [ray.put(w)] if w else []

    # GPU weight path (learner.broadcast.CollectiveBroadcaster); gloo on CPU.
    def init_weight_group(self, master_addr: str, port: int, world_size: int) -> None:
        from actors.weight_sync import new_group

        self._weight_group = new_group(master_addr, port, 0, world_size, "nccl" if on_gpu() else "gloo")

    def _live_named(self) -> list[tuple[str, torch.Tensor]]:
        if self.lcfg.zero_stage == 3:
            raise NotImplementedError("collective weight broadcast under ZeRO-3: use the object-store path")
        return [(n, p.detach()) for n, p in self.lm.named_parameters()]

    def weight_meta(self) -> tuple[list[str], list[tuple[int, ...]], list[str]]:
        from actors.weight_sync import weight_meta

        return weight_meta(self._live_named())

    def send_weights(self, bucket_bytes: int | None = None) -> None:
        """Broadcast the live parameters (no host copy; on GPU they stay on the device)."""
        from actors.weight_sync import DEFAULT_BUCKET_BYTES, send_weights

        group = getattr(self, "_weight_group", None)
        if group is None:
            raise RuntimeError("send_weights before init_weight_group")
        send_weights(group, self._live_named(), bucket_bytes or DEFAULT_BUCKET_BYTES)

    def weights_digest(self) -> str:
        """sha256 over all parameters (ZeRO-2 replicas must agree bitwise)."""
        import hashlib

        h = hashlib.sha256()
        for n, p in self.lm.named_parameters():
            h.update(n.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    def save_checkpoint(self, root: str) -> str:
        """<root>/step-<version>: HF model folder (+ tokenizer) loadable as is by vLLM/transformers,
        plus `deepspeed/` (ZeRO optimizer shards) and `learner_state.json` for resume. Atomic; keeps
        the last `learner.keep_checkpoints`. Collective: every rank calls it."""
        import torch.distributed as dist

        tmp = tmp_checkpoint_dir(root, self.version)
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        self.engine.save_checkpoint(str(tmp / "deepspeed"), tag="state")
        state = self._full_state()
        if self.rank == 0:
            self.lm.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            (tmp / "learner_state.json").write_text(
                json.dumps(
                    {"version": self.version, "base_model": self.model_path, "world_size": self.world_size}
                )
            )
        dist.barrier()
        final = (
            finalize_checkpoint(root, tmp, self.version, self.lcfg.keep_checkpoints)
            if self.rank == 0
            else None
        )
        dist.barrier()
        return str(final) if final else str(Path(root) / tmp.name.removeprefix(".tmp-"))

    def load_checkpoint(self, path: str) -> int:
        """Resume from a folder written by save_checkpoint (or the newest one under a root)."""
        ckpt = resolve_checkpoint(path)
        load_path, _ = self.engine.load_checkpoint(str(ckpt / "deepspeed"), tag="state")
        if load_path is None:
            raise FileNotFoundError(f"{ckpt}/deepspeed: no DeepSpeed state with tag 'state'")
        self.version = int(json.loads((ckpt / "learner_state.json").read_text())["version"])
        return self.version

    def ping(self) -> str:
        return f"learner-{self.rank}"
