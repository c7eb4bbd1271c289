"""Device facts, asked by the process that runs on the device (an actor on its node), never by the driver."""

from __future__ import annotations


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
