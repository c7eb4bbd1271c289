"""Moving weights between processes as flat buckets over a torch.distributed group: learner rank 0
sends (learner/actor.py), every engine worker receives (actors/weight_sync.py). NCCL on CUDA, gloo on
CPU, so the GPU path's logic is tested here. Both sides derive the same bucket plan from (names,
shapes, dtypes), so nothing but the tensors travels.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import torch
import torch.distributed as dist

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
