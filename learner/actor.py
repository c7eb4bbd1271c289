"""Learner: the policy in a DeepSpeed engine plus a frozen reference model; one data-parallel rank.

Plain class (wrap with `ray.remote`; LearnerGroup does). Two-phase start: `__init__` is cheap so the
group can ask rank 0 for its address first; `setup(master_addr, master_port)` joins the
torch.distributed group and builds the engines. One `train` call = `updates_per_batch` optimizer
steps over the whole rank shard, accumulated over token-budget micro-batches; every token carries
its aggregation weight (learner/batching.py: sample_mean or token_mean over the *global* batch), so
the update is the same however the batch was split across micro-batches and ranks.

Lean by construction: behaviour logprobs the engine did not send are this pass's own (detached; the
ratio of the first update is 1, as in the authors' one-step-per-rollout runs); no reference model
when every KL coefficient is 0; gradient checkpointing only when the model needs it; ZeRO stage 0
for a single CPU rank; torch threads = the cores this rank has. Every GPU/CPU decision is made here.
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

from cluster.core.config import Config, LearnerConfig
from cluster.core.device import cpu_threads
from cluster.core.records import ROLES
from learner import losses
from learner.batching import (
    MicroBatch,
    Row,
    collate_units,
    null_micro_batch,
    plan_micro_batches,
    plan_units,
    rows_from_table,
    token_weights,
    unit_length,
)
from learner.model import TokenLogits, deepspeed_config, gradient_checkpointing, torch_dtype, zero_stage

log = logging.getLogger(__name__)
STATE_FILE = "learner_state.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # every interface: ranks on other nodes connect to this one
        return s.getsockname()[1]


def node_id() -> str:
    """The Ray node this process runs on ("" outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:
        return ""


def node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # not under Ray
        return "127.0.0.1"


class Learner:
    """One DeepSpeed data-parallel rank. See module doc for the call order."""

    def __init__(self, cfg: Config, rank: int = 0, world_size: int = 1, seed: int | None = None) -> None:
        logging.basicConfig(level=os.environ.get("EVORL_LOG_LEVEL", "INFO"))
        self.cfg = cfg
        self.lcfg = cfg.learner
        self.rank = rank
        self.world_size = world_size
        self.seed = cfg.trainer.seed if seed is None else seed
        self.steps = 0  # optimizer steps taken (the policy version is the trainer's count of pushes)
        self.engine = None

    def address(self) -> tuple[str, int]:
        """(ip, free port) of this node, for rank 0 to serve as MASTER_ADDR/PORT."""
        return node_ip(), free_port()

    def setup(self, master_addr: str = "127.0.0.1", master_port: int | None = None) -> dict:
        import deepspeed
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from cluster.core.model_store import project_cache, resolve_model

        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(project_cache() / "torch_extensions"))
        self.gpu = torch.cuda.is_available()
        os.environ.update(
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(master_port or free_port()),
            RANK=str(self.rank),
            WORLD_SIZE=str(self.world_size),
            LOCAL_RANK="0",  # one device per actor (Ray sets CUDA_VISIBLE_DEVICES)
        )
        self.set_cpu_threads(self.cfg.trainer.overlap)
        deepspeed.init_distributed(
            dist_backend="nccl" if self.gpu else "gloo",
            auto_mpi_discovery=False,
            rank=self.rank,
            world_size=self.world_size,
            verbose=False,
        )
        torch.manual_seed(self.seed)
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.gpu else torch.device("cpu")
        self.dtype = torch_dtype(self.lcfg.dtype)
        self.zero = zero_stage(self.lcfg.zero_stage, self.world_size, self.gpu)
        self.model_path = resolve_model(self.cfg.model.path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        lm = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        n_params = sum(p.numel() for p in lm.parameters())
        self.checkpointing = gradient_checkpointing(self.lcfg.gradient_checkpointing, n_params)
        if self.checkpointing:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.config.use_cache = False
        self.lm = lm
        policy = TokenLogits(lm)
        params = [p for p in policy.parameters() if p.requires_grad]
        betas = tuple(self.lcfg.adam_betas)
        if self.lcfg.optimizer == "cpu_adam":
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            opt = DeepSpeedCPUAdam(params, lr=self.lcfg.lr, betas=betas, weight_decay=self.lcfg.weight_decay,
                                   adamw_mode=True)  # fmt: skip
        else:
            opt = torch.optim.AdamW(params, lr=self.lcfg.lr, betas=betas, weight_decay=self.lcfg.weight_decay)
        ds_cfg = deepspeed_config(self.lcfg, self.world_size, self.dtype, self.gpu)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=policy, optimizer=opt, config=ds_cfg)

        self.ref = None
        if float(self._coef_tables()["kl"][:-1].abs().max()) > 0:
            ref_lm = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
            ref_lm.requires_grad_(False)
            self.ref = TokenLogits(ref_lm).to(self.device).eval()
        log.info("learner rank %d/%d ready: %s zero=%d dtype=%s checkpointing=%s reference=%s",
                 self.rank, self.world_size, self.model_path, self.zero, self.dtype, self.checkpointing,
                 self.ref is not None)  # fmt: skip
        return {"rank": self.rank, "params": n_params, "zero_stage": self.zero, "device": str(self.device),
                "gradient_checkpointing": self.checkpointing, "reference_model": self.ref is not None,
                "node_id": node_id()}  # fmt: skip

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

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.tolist()

    def _to_device(self, mb: MicroBatch) -> MicroBatch:
        for f in ("input_ids", "attention_mask", "select", "targets", "behaviour_logprobs", "advantages",
                  "role_index", "weights"):  # fmt: skip
            setattr(mb, f, getattr(mb, f).to(self.device))
        if mb.position_ids is not None:
            mb.position_ids = mb.position_ids.to(self.device)
        return mb

    def _logprobs(self, mb: MicroBatch, net=None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = (net or self.engine)(mb.input_ids, mb.attention_mask, mb.select, mb.position_ids)
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(-1, mb.targets[:, None])[:, 0], logits

    def _rl_loss(self, mb: MicroBatch, first_pass: bool) -> tuple[torch.Tensor, dict[str, float]]:
        coefs = {k: v.to(self.device)[mb.role_index] for k, v in self._tables.items()}
        mask = (mb.role_index >= 0).float()
        lp, logits = self._logprobs(mb)
        metrics: dict[str, float] = {}
        if first_pass:
            given = ~torch.isnan(mb.behaviour_logprobs)
            if bool(given.any()):  # engine logprobs: how far the engine is from the learner
                metrics.update(losses.logprob_gap(lp, torch.nan_to_num(mb.behaviour_logprobs), mask * given))
            # the rest are this pass's own, kept for later passes over the same batch
            mb.behaviour_logprobs = torch.where(given, mb.behaviour_logprobs, lp.detach().float())
        loss, m = losses.policy_gradient_loss(lp, mb.behaviour_logprobs, mb.advantages, mask, coefs["weight"],
                                              self.lcfg.eps_low, self.lcfg.eps_high, weights=mb.weights)  # fmt: skip
        metrics.update(m)
        if self.ref is not None:
            with torch.no_grad():
                ref_lp, _ = self._logprobs(mb, self.ref)
            kl_loss, m = losses.kl_penalty(lp, ref_lp, mask, coefs["kl"], weights=mb.weights)
            loss = loss + kl_loss
            metrics.update(m)
        need_grad = bool(coefs["entropy"].abs().max() > 0)
        with nullcontext() if need_grad else torch.no_grad():
            ent = losses.entropy_from_logits(logits)
            ent_loss, m = losses.entropy_loss(ent, mask, coefs["entropy"], weights=mb.weights)
        if need_grad:
            loss = loss + ent_loss
        metrics.update(m)
        return loss, metrics

    def _sft_loss(self, mb: MicroBatch, first_pass: bool) -> tuple[torch.Tensor, dict[str, float]]:
        mask = (mb.role_index >= 0).float()
        lp, _ = self._logprobs(mb)
        loss = losses.role_balanced_nll(lp, mask, mb.role_index, self._role_tokens, self.world_size)
        _, metrics = losses.sft_loss(lp.detach(), mask, weights=mb.weights)
        return loss, metrics

    def _micro_batches(self, rows: list[Row]) -> tuple[list[MicroBatch], float, list[float]]:
        """This rank's micro-batches with global aggregation weights; (batches, global tokens, global
        tokens per role)."""
        role_tokens = [float(sum(r.n_trained for r in rows if r.role == x)) for x in ROLES]
        samples = float(len({r.sample_id for r in rows}))
        totals = self._all_reduce(role_tokens + [samples])
        role_tokens, total_samples = totals[:-1], totals[-1]
        total_tokens = sum(role_tokens)
        weights = token_weights(rows, self.lcfg.loss_agg, total_tokens, total_samples)
        tree = self.lcfg.prefix_tree
        units = plan_units(rows, self.lcfg.share_prompts, self.lcfg.micro_batch_tokens, tree)
        plan = plan_micro_batches(
            [unit_length([rows[j] for j in u], tree) for u in units], self.lcfg.micro_batch_tokens
        )
        mbs = [
            collate_units(
                [[rows[j] for j in units[k]] for k in group],
                self.pad_id,
                [[weights[j] for j in units[k]] for k in group],
                tree,
            )  # fmt: skip
            for group in plan
        ]
        return mbs, total_tokens, role_tokens

    def _step(self, table: pa.Table, loss_fn, passes: int, where: str) -> dict[str, float]:
        """`passes` optimizer steps over this rank's rows; metrics reduced over all ranks."""
        if self.engine is None:
            raise RuntimeError(f"learner rank {self.rank}: setup() was not called")
        self._tables = self._coef_tables()
        t0 = time.perf_counter()
        rows = rows_from_table(table, where=f"{where} (rank {self.rank})")
        mbs, total_tokens, role_tokens = self._micro_batches(rows)
        self._role_tokens = torch.tensor(role_tokens, device=self.device)
        n_mb = int(self._all_reduce([len(mbs)], "max")[0])
        mbs = [self._to_device(mb) for mb in mbs] + [
            self._to_device(null_micro_batch(self.pad_id)) for _ in range(n_mb - len(mbs))
        ]
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        maxes: dict[str, float] = {}
        real = sum(mb.real_tokens for mb in mbs)
        padded = sum(mb.padded_tokens for mb in mbs if mb.real_tokens)
        for p in range(passes):
            for i, mb in enumerate(mbs):
                self.engine.set_gradient_accumulation_boundary(i == n_mb - 1)
                loss, m = loss_fn(mb, p == 0)
                self.engine.backward(loss * self.world_size)  # DeepSpeed averages gradients over ranks
                w = float(mb.n_tokens) if mb.real_tokens else 0.0
                for k, v in m.items():
                    if k.endswith("_max"):
                        maxes[k] = max(maxes.get(k, 0.0), v if w else 0.0)
                    elif k.endswith("_loss") or k == "nll":  # already weighted partial sums
                        sums[k] = sums.get(k, 0.0) + (v if p == passes - 1 else 0.0)
                        weights[k] = 1.0
                    else:
                        sums[k] = sums.get(k, 0.0) + v * w
                        weights[k] = weights.get(k, 0.0) + w
            grad_norm = self._grad_norm()
            self.engine.step()
            self.steps += 1
        keys = sorted(sums)
        agg = self._all_reduce([sums[k] for k in keys] + [weights[k] for k in keys] + [real, padded])
        mkeys = sorted(maxes)
        mx = self._all_reduce([maxes[k] for k in mkeys], "max") if mkeys else []
        elapsed = time.perf_counter() - t0
        n = len(keys)
        out = {k: agg[i] / (1.0 if k.endswith("_loss") or k == "nll" else max(agg[n + i], 1.0))
               for i, k in enumerate(keys)}  # fmt: skip
        out.update(zip(mkeys, mx))
        if "pg_loss" in out or "nll" in out:
            out["loss"] = sum(out.get(k, 0.0) for k in ("pg_loss", "kl_loss", "entropy_loss", "nll"))
        gn = self.engine.get_global_grad_norm()
        out.update(
            grad_norm=float(gn) if gn is not None else grad_norm,
            tokens=float(total_tokens),
            seq_tokens=float(agg[-2]),
            processed_per_trained=float(agg[-2]) / max(total_tokens, 1.0),
            padding_frac=1.0 - agg[-2] / max(agg[-1], 1.0),
            micro_batches=float(n_mb),
            step_time_s=elapsed,
            tokens_per_s=agg[-2] * passes / max(elapsed, 1e-9),
            steps=float(self.steps),
            lr=float(self.optimizer.param_groups[0]["lr"]),
        )
        return out

    @torch.no_grad()
    def _grad_norm(self) -> float:
        """The gradient norm before clipping, where DeepSpeed does not record it (stage 0, fp32)."""
        if self.zero != 0:
            return float("nan")
        norms = [p.grad.detach().float().norm() for p in self.lm.parameters() if p.grad is not None]
        return float(torch.stack(norms).norm()) if norms else 0.0

    @torch.no_grad()
    def score(self, batch: pa.Table) -> list[list[float]]:
        """The current policy's logprobs of each row's generated tokens (no update), in row order.
        Used to check engines against the learner."""
        rows = rows_from_table(batch, where=f"score batch (rank {self.rank})")
        out: list[list[float]] = [[] for _ in rows]
        for idx in plan_micro_batches([len(r) for r in rows], self.lcfg.micro_batch_tokens):
            mb = self._to_device(collate_units([[rows[j]] for j in idx], self.pad_id))
            lp, _ = self._logprobs(mb, self.engine.module)
            lp = lp.cpu().tolist()
            pos = 0
            for j in idx:
                n = rows[j].n_trained
                out[j], pos = lp[pos : pos + n], pos + n
        return out

    def train(self, batch: pa.Table) -> dict[str, float]:
        """RL update(s) on TRACE_SCHEMA rows (advantages already assigned); returns metrics."""
        self.engine.train()
        return self._step(batch, self._rl_loss, self.lcfg.updates_per_batch, "train batch")

    def sft(self, batch: pa.Table) -> dict[str, float]:
        """One supervised step: role-balanced NLL on the generated (loss-mask 1) tokens of each row."""
        self.engine.train()
        return self._step(batch, self._sft_loss, 1, "sft batch")

    def set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    # ---- weights ---------------------------------------------------------------------------
    def _gathered(self, params: list):
        """Context in which ZeRO-3 partitioned `params` are whole (a no-op below stage 3)."""
        if self.zero == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        return nullcontext()

    def _full_state(self) -> dict[str, torch.Tensor]:
        """HF-named parameters as fresh CPU tensors (never views of ZeRO's flat buffers; pickling a
        view ships the whole buffer). Collective under ZeRO-3: every rank must call it."""
        with self._gathered(list(self.lm.parameters())):
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
        """`[ObjectRef]` of this rank's weights, put into the object store by the learner itself (the
        driver never holds them); the one copy of the push. [] on ranks > 0. Below ZeRO-3 on CPU the
        arrays are views of the live fp32 parameters: `ray.put` serialises each view's own bytes."""
        import ray

        if self.zero == 3 or self.gpu or self.dtype != torch.float32:
            state = self.get_weights()
        elif self.rank != 0:
            state = {}
        else:
            state = {n: p.detach().numpy() for n, p in self.lm.named_parameters()}
        return [ray.put(state)] if state else []

    def set_cpu_threads(self, overlap: bool) -> int:
        """The CPU thread rule (cpu_threads), applied at setup and again for a run that switches
        trainer.overlap."""
        if not self.gpu:
            own = self.lcfg.num_cpus_per_learner if overlap else None
            torch.set_num_threads(cpu_threads(self.lcfg.num_threads, self.world_size, own))
        return torch.get_num_threads()

    # GPU weight path (cluster/weight_sync.py); gloo on CPU.
    def weight_sync_backend(self) -> str:
        """ "nccl" when this rank's parameters live on a GPU, else "object_store"."""
        return "nccl" if self.gpu else "object_store"

    def init_weight_group(self, master_addr: str, port: int, world_size: int) -> None:
        from cluster.core.collective import new_group

        if self.rank == 0:
            self._weight_group = new_group(master_addr, port, 0, world_size, "nccl" if self.gpu else "gloo")

    def weight_meta(self) -> tuple[list[str], list[tuple[int, ...]], list[str]]:
        """(names, full shapes, dtypes) of the parameters as the engines receive them."""
        named = list(self.lm.named_parameters())
        shapes = [tuple(getattr(p, "ds_shape", p.shape)) for _, p in named]
        return [n for n, _ in named], shapes, [str(p.dtype).removeprefix("torch.") for _, p in named]

    def send_weights(self, bucket_bytes: int | None = None) -> None:
        """Broadcast the live parameters bucket by bucket (no host copy: on GPU they stay on the
        device, in their dtype); under ZeRO-3 each bucket is gathered just before it is sent, so no
        rank ever holds the whole model. Collective over the learner ranks under ZeRO-3."""
        from cluster.core.collective import DEFAULT_BUCKET_BYTES, plan_buckets

        names, shapes, dtypes = self.weight_meta()
        params = [p for _, p in self.lm.named_parameters()]
        group = getattr(self, "_weight_group", None)
        if self.rank == 0 and group is None:
            raise RuntimeError("send_weights before init_weight_group")
        for bucket in plan_buckets(shapes, dtypes, bucket_bytes or DEFAULT_BUCKET_BYTES):
            with self._gathered([params[i] for i in bucket]):
                if self.rank == 0:
                    flat = torch.cat([params[i].detach().reshape(-1) for i in bucket])
                    group.broadcast(flat, 0).wait()

    def weights_digest(self) -> str:
        """sha256 over all parameters (data-parallel replicas must agree bitwise)."""
        import hashlib

        h = hashlib.sha256()
        with self._gathered(list(self.lm.parameters())):
            for n, p in self.lm.named_parameters():
                h.update(n.encode())
                h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    # ---- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, folder: str, ship: bool = False) -> str | dict[str, list]:
        """Write into `folder`: an HF model folder (safetensors + tokenizer) loadable as is by vLLM and
        transformers, `deepspeed/` (ZeRO optimizer shards) and learner_state.json. The caller
        publishes the folder (cluster/checkpoint.py). Collective: every rank calls it.

        `ship`: `folder` is this node's staging folder (the driver's run folder is not mounted
        here); return what was written there through the object store, {path: [ObjectRef]}, and
        remove it (LearnerGroup.save writes it into the run folder)."""
        import torch.distributed as dist

        from cluster.core.folder_transfer import pack

        out = Path(folder)
        if self.rank == 0:
            shutil.rmtree(out, ignore_errors=True)
        dist.barrier()
        out.mkdir(parents=True, exist_ok=True)  # each node's ranks write their own parts
        self.engine.save_checkpoint(str(out / "deepspeed"), tag="state")
        state = self._full_state()
        if self.rank == 0:
            self.lm.save_pretrained(out, state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(out)
            (out / STATE_FILE).write_text(json.dumps(
                {"steps": self.steps, "base_model": self.model_path, "world_size": self.world_size}))  # fmt: skip
        dist.barrier()
        if not ship:
            return str(out)
        packed = pack(out)
        shutil.rmtree(out, ignore_errors=True)
        return packed

    def load_checkpoint(self, folder: str, shipped: dict[str, list] | None = None) -> int:
        """Resume from a folder written by save_checkpoint; returns the optimizer steps it had.
        `shipped`: the files this rank needs (folder_transfer.rank_files) through the object store,
        written into `folder` (this node's staging folder) first."""
        ckpt = Path(folder)
        if shipped is not None:
            from cluster.core.folder_transfer import unpack

            shutil.rmtree(ckpt, ignore_errors=True)
            unpack(shipped, ckpt)
        load_path, _ = self.engine.load_checkpoint(str(ckpt / "deepspeed"), tag="state")
        if load_path is None:
            raise FileNotFoundError(f"{ckpt}/deepspeed: no DeepSpeed state with tag 'state'")
        self.steps = int(json.loads((ckpt / STATE_FILE).read_text())["steps"])
        if shipped is not None:
            shutil.rmtree(ckpt, ignore_errors=True)
        return self.steps

    def ping(self) -> str:
        return f"learner-{self.rank}"
