"""Moving learner weights into running vLLM engines.

Two paths, one loader:
- CPU (and small pushes): named tensors handed to `collective_rpc("evorl_load_weights")` in-process.
- GPU: a process group of learner rank 0 (rank 0) and every engine worker (ranks rank_offset..),
  NCCL on CUDA and gloo on CPU (so the same code is tested here); weights travel as a few large
  flat buckets per dtype, in an order both sides derive from (names, shapes, dtypes).

`WeightSyncExtension` is mixed into vLLM's worker class (`worker_extension_cls`): its methods run
inside the worker, where `self` is the vLLM worker.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

DEFAULT_BUCKET_BYTES = 256 * 2**20


def new_group(
    master_addr: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float = 600.0
) -> dist.ProcessGroup:
    """A process group outside torch's default group (vLLM and DeepSpeed own that one)."""
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(master_addr, port, world_size, is_master=rank == 0, timeout=timeout)
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world_size, timeout)
    if backend == "nccl":
        return dist.ProcessGroupNCCL(store, rank, world_size)
    raise ValueError(f"weight group backend {backend!r}: expected gloo or nccl")


def plan_buckets(shapes: list[tuple[int, ...]], dtypes: list[str], bucket_bytes: int) -> list[list[int]]:
    """Consecutive same-dtype tensors grouped into buckets of <= bucket_bytes (a larger tensor is alone)."""
    buckets: list[list[int]] = []
    size = 0
    for i, (shape, dt) in enumerate(zip(shapes, dtypes)):
        nbytes = _numel(shape) * torch.empty((), dtype=getattr(torch, dt)).element_size()
        if buckets and dtypes[buckets[-1][0]] == dt and size + nbytes <= bucket_bytes:
            buckets[-1].append(i)
            size += nbytes
        else:
            buckets.append([i])
            size = nbytes
    return buckets


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def weight_meta(named: list[tuple[str, torch.Tensor]]) -> tuple[list[str], list[tuple[int, ...]], list[str]]:
    """(names, shapes, dtypes) the receivers need; dtypes as torch attribute names ("float32")."""
    return (
        [n for n, _ in named],
        [tuple(t.shape) for _, t in named],
        [str(t.dtype).removeprefix("torch.") for _, t in named],
    )


def send_weights(
    group: dist.ProcessGroup,
    named: list[tuple[str, torch.Tensor]],
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    src: int = 0,
) -> None:
    """Broadcast from `src` (learner rank 0). Receivers call `recv_weights` with `weight_meta(named)`."""
    _, shapes, dtypes = weight_meta(named)
    for bucket in plan_buckets(shapes, dtypes, bucket_bytes):
        flat = torch.cat([named[i][1].detach().reshape(-1) for i in bucket])
        group.broadcast(flat, src).wait()


def recv_weights(
    group: dist.ProcessGroup,
    names: list[str],
    shapes: list[tuple[int, ...]],
    dtypes: list[str],
    device: torch.device | str = "cpu",
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    src: int = 0,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) bucket by bucket, so a loader can consume while the next bucket arrives."""
    if not len(names) == len(shapes) == len(dtypes):
        raise ValueError(f"recv_weights: {len(names)} names, {len(shapes)} shapes, {len(dtypes)} dtypes")
    for bucket in plan_buckets(shapes, dtypes, bucket_bytes):
        numels = [_numel(shapes[i]) for i in bucket]
        flat = torch.empty(sum(numels), dtype=getattr(torch, dtypes[bucket[0]]), device=device)
        group.broadcast(flat, src).wait()
        for i, part in zip(bucket, torch.split(flat, numels)):
            yield names[i], part.view(shapes[i])


class WeightSyncExtension:
    """Mixed into the vLLM worker. Methods are called through `LLM.collective_rpc(name, args=...)`."""

    def evorl_load_weights(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Reload HF-named checkpoint weights in place (the CPU backend repacks linears, so
        `model.load_weights` alone fails; `reload_weights` re-runs the post-load processing)."""
        self.reload_weights(weights_iterator=iter(named), is_checkpoint_format=True)
        self._evorl_fix_tied_head()

    def evorl_load_safetensors(self, blob: bytes) -> None:
        from safetensors.torch import load

        self.evorl_load_weights(load(blob).items())

    def _evorl_fix_tied_head(self) -> None:
        # vLLM bug (0.32, CPU): with tied embeddings the LM head keeps its old packed weight after a
        # reload; re-running its quant method's post-load step repacks it from the new embedding.
        model = self.model_runner.get_model()
        hf_cfg = self.model_runner.model_config.hf_text_config
        head = getattr(model, "lm_head", None)
        if getattr(hf_cfg, "tie_word_embeddings", False) and head is not None:
            head.quant_method.process_weights_after_loading(head)

    def init_weight_group(self, master_addr: str, port: int, rank_offset: int, world_size: int) -> None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        rank = rank_offset + self.rank
        self._evorl_group = new_group(master_addr, port, rank, world_size, backend)
        log.info("weight group joined: rank %d/%d (%s)", rank, world_size, backend)

    def receive_weights(
        self,
        names: list[str],
        shapes: list[tuple[int, ...]],
        dtypes: list[str],
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    ) -> None:
        group = getattr(self, "_evorl_group", None)
        if group is None:
            raise RuntimeError("receive_weights before init_weight_group")
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
        self.evorl_load_weights(recv_weights(group, names, shapes, dtypes, device, bucket_bytes))
