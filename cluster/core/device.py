"""Device facts, asked by the process that runs on the device (an actor on its node), never by the driver."""

from __future__ import annotations

import os


def cuda_available() -> bool:
    """True when this process sees a CUDA device (Ray sets CUDA_VISIBLE_DEVICES per actor)."""
    import torch

    return torch.cuda.is_available()


def resolve_dtype(name: str) -> str:
    """Config dtype -> torch dtype name: "auto" is float32 on CPU (engine and learner logprobs agree
    exactly there), bfloat16 on CUDA."""
    if name != "auto":
        return name
    return "bfloat16" if cuda_available() else "float32"


def cpu_threads(configured: int, sharers: int, own_cpus: float | None = None) -> int:
    """Torch/OpenMP threads for a CPU actor (a learner rank, a vLLM engine): `configured`, or (0) this
    node's usable cores divided among the `sharers` that compute at the same time. In the synchronous
    loop rollout and learning alternate, so each side may use the cores the idle other side holds;
    with `own_cpus` (trainer.overlap: generation runs during the update) only the CPUs Ray gave it."""
    if configured > 0:
        return configured
    if own_cpus is not None:
        return max(1, int(own_cpus))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(sharers, 1))
