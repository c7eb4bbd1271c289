"""Weight broadcast learner -> every rollout / skill-eval engine; the version travels with the weights.

CPU path: one `ray.put` of the numpy weights (put by learner rank 0 itself when given its
ObjectRef); every target's `update_weights(weights, version)` receives the same object, zero-copy.
GPU path: a process group between learner rank 0 (rank 0) and the engines' workers; weights go as
dtype-homogeneous flat buckets (actors.weight_sync.send_weights / recv_weights). The same code runs
with gloo on CPU, which is how it is tested here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


def broadcast_object_store(
    weights: Any, version: int, targets: Sequence[Any], timeout_s: float = 600.0
) -> dict[str, float]:
    """`weights`: dict[str, np.ndarray] or an ObjectRef to one. `targets`: Ray actor handles with
    `update_weights(weights, version)`. Returns timing metrics; raises naming the failed target."""
    import ray

    t0 = time.perf_counter()
    ref = weights if isinstance(weights, ray.ObjectRef) else ray.put(weights)
    t_put = time.perf_counter() - t0
    calls = {t.update_weights.remote(ref, version): i for i, t in enumerate(targets)}
    pending = list(calls)
    deadline = time.monotonic() + timeout_s
    while pending:
        done, pending = ray.wait(
            pending, num_returns=len(pending), timeout=max(0.0, deadline - time.monotonic())
        )
        for r in done:
            try:
                ray.get(r)
            except Exception as e:
                raise RuntimeError(f"weight broadcast v{version}: target #{calls[r]} failed: {e}") from e
        if pending and time.monotonic() >= deadline:
            raise TimeoutError(
                f"weight broadcast v{version}: targets {sorted(calls[r] for r in pending)} did not ack in {timeout_s}s"
            )
    return {
        "broadcast_put_s": t_put,
        "broadcast_s": time.perf_counter() - t0,
        "broadcast_targets": float(len(targets)),
    }


class CollectiveBroadcaster:
    """GPU path. Learner rank 0 is rank 0 of a weight group; engine e's workers take ranks
    offset_e .. offset_e + workers_e - 1. Targets need `init_weight_group(addr, port, rank_offset,
    world_size)` and `receive_weights(names, shapes, dtypes, version)` (actors.engine.VLLMEngine
    and RolloutWorker expose them); the learner needs `init_weight_group(addr, port, world_size)`,
    `weight_meta()` and `send_weights(bucket_bytes)` (learner.actor.Learner)."""

    def __init__(
        self,
        learner: Any,
        targets: Sequence[Any],
        workers_per_target: Sequence[int] | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        import ray

        self.learner, self.targets, self.timeout_s = learner, list(targets), timeout_s
        per = list(workers_per_target or [1] * len(self.targets))
        world = 1 + sum(per)
        addr, port = ray.get(learner.address.remote(), timeout=timeout_s)
        offsets = [1 + sum(per[:i]) for i in range(len(per))]
        ray.get(
            [learner.init_weight_group.remote(addr, port, world)]
            + [t.init_weight_group.remote(addr, port, off, world) for t, off in zip(self.targets, offsets)],
            timeout=timeout_s,
        )
        log.info("weight group ready: %d ranks at %s:%d", world, addr, port)

    def broadcast(self, version: int, bucket_bytes: int | None = None) -> dict[str, float]:
        import ray

        t0 = time.perf_counter()
        names, shapes, dtypes = ray.get(self.learner.weight_meta.remote(), timeout=self.timeout_s)
        ray.get(
            [self.learner.send_weights.remote(bucket_bytes)]
            + [t.receive_weights.remote(names, shapes, dtypes, version) for t in self.targets],
            timeout=self.timeout_s,
        )
        return {"broadcast_s": time.perf_counter() - t0, "broadcast_targets": float(len(self.targets))}
