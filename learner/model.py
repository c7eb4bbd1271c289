"""The policy as the learner trains it, and the DeepSpeed config: torch-only (no Ray, Arrow or YAML),
so benchmarks/gpu_smoke.py can use it on a bare GPU machine."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TokenLogits(nn.Module):
    """Wraps an HF causal LM so the engine call computes the LM head only where loss is taken.

    Prompts are long and responses short in agent turns; projecting every position onto a 49k
    vocabulary would dominate memory and time.
    """

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        select: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`select`: a (rows, L-1) bool mask over next-token positions, or (shared prompts, see
        learner/batching.py) flat indices into the (rows * L) positions with a (rows, L, L) bool mask."""
        if attention_mask.dim() == 3:  # "may attend" -> additive 4D mask in the model's dtype
            dtype = self.lm.get_input_embeddings().weight.dtype
            blocked = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
            attention_mask = blocked.masked_fill(~attention_mask, torch.finfo(dtype).min)[:, None]
        out = self.lm.base_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        hidden = out.last_hidden_state
        if select.dtype == torch.bool:
            h = hidden[:, :-1][select]
        else:
            h = hidden.reshape(-1, hidden.shape[-1])[select]
        return self.lm.get_output_embeddings()(h).float()


def torch_dtype(name: str) -> torch.dtype:
    """Config dtype ("auto": fp32 on CPU, bf16 on CUDA) as a torch dtype."""
    from cluster.core.device import resolve_dtype

    return getattr(torch, resolve_dtype(name))


def zero_stage(configured: int | str, world_size: int, gpu: bool) -> int:
    """ZeRO shards optimizer state, gradients and parameters over ranks. "auto": a single rank has
    nothing to shard, and stage 0 skips the flat-buffer copies; several ranks take stage 2. A stage
    given explicitly is kept (ZeRO-3 also serves one 7B GPU rank that would not fit otherwise)."""
    if configured == "auto":
        return 0 if world_size == 1 else 2
    return int(configured)


def gradient_checkpointing(setting: bool | str, n_params: int) -> bool:
    """ "auto": recompute activations only for models above 1B parameters (activations of a 7B model
    at 16k tokens do not fit; those of the 135M model at 2k do, and recomputing costs ~30%)."""
    return n_params > 1_000_000_000 if setting == "auto" else bool(setting)


def deepspeed_config(lcfg: Any, world_size: int, dtype: torch.dtype, gpu: bool) -> dict:
    """`lcfg`: cluster.core.config.LearnerConfig (or anything with its zero_stage, grad_clip, optimizer)."""
    # CPU: DeepSpeed's 5e8-element default buckets allocate GBs for nothing at this model size.
    bucket = int(5e8) if gpu else int(2e7)
    stage = zero_stage(lcfg.zero_stage, world_size, gpu)
    zero: dict = {
        "stage": stage,
        "reduce_bucket_size": bucket,
        "allgather_bucket_size": bucket,
        "overlap_comm": gpu,
        "contiguous_gradients": True,
    }
    if stage == 3:
        zero.update(stage3_prefetch_bucket_size=bucket, stage3_param_persistence_threshold=int(1e5))
    if lcfg.optimizer == "cpu_adam" and gpu:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": 1,  # micro-batches are token-budgeted by us, not counted by DS
        "gradient_accumulation_steps": 1,  # accumulation boundary set explicitly per micro-batch
        "train_batch_size": world_size,
        "gradient_clipping": lcfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == torch.bfloat16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
