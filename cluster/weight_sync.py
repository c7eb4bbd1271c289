"""WeightSync: the one path new weights take from the learner to every engine serving them.

The backend is the learner's own answer (rank 0 knows where its parameters live):
- object store (CPU): learner rank 0 `ray.put`s its parameters (one copy; the driver only passes
  the reference on), every rollout and skill-eval worker loads that object at once, zero-copy on
  its node;
- NCCL (GPU): one weight group of learner rank 0 and every engine worker, built once; the
  parameters go as flat dtype-homogeneous buckets in their own dtype (bf16 stays bf16), ZeRO-3
  parameters gathered bucket by bucket (OpenRLHF's pattern). A worker replaced since the group was
  built cannot join it: that push falls back to the object store and the group is rebuilt next time.
Every push is acknowledged by every engine with the version it now serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


class WeightSync:
    def __init__(self, learners: Any, pools: Sequence[Any], timeout_s: float = 600.0) -> None:
        self.learners, self.pools, self.timeout_s = learners, list(pools), timeout_s
        self.backend = learners.call("weight_sync_backend")[0]
        self._group_workers: list | None = None  # the worker handles the NCCL group was built with

    def push(self, version: int) -> dict[str, float]:
        """Load the learner's current weights into every engine as policy `version`."""
        t0 = time.perf_counter()
        if self.backend == "nccl":
            try:
                self._push_collective(version)
                return self._metrics(t0, "nccl")
            except _GroupStale as e:
                log.warning("weight group stale (%s): this push goes through the object store", e)
                self._group_workers = None
        ref = self.learners.weights_ref()
        t_put = time.perf_counter() - t0
        for pool in self.pools:  # each pool's workers load in parallel (RolloutPool.load_weights)
            pool.load_weights(ref, version)
        return self._metrics(t0, "object_store") | {"weight_sync/put_s": t_put}

    def _metrics(self, t0: float, path: str) -> dict[str, float]:
        return {
            "weight_sync/push_s": time.perf_counter() - t0,
            "weight_sync/engines": float(sum(len(p.workers) for p in self.pools)),
            "weight_sync/nccl": float(path == "nccl"),
        }

    # ---- GPU path ------------------------------------------------------------------------------
    def _workers(self) -> list:
        return [w for pool in self.pools for w in pool.workers]

    def _build_group(self) -> None:
        import ray

        workers = self._workers()
        tp = [max(1, p.cfg.engine.tensor_parallel_size) for p in self.pools for _ in p.workers]
        world = 1 + sum(tp)
        addr, port = ray.get(self.learners.actors[0].address.remote(), timeout=self.timeout_s)
        offsets = [1 + sum(tp[:i]) for i in range(len(tp))]
        ray.get(
            [a.init_weight_group.remote(addr, port, world) for a in self.learners.actors]
            + [w.init_weight_group.remote(addr, port, off, world) for w, off in zip(workers, offsets)],
            timeout=self.timeout_s,
        )
        self._group_workers = workers
        log.info("weight group ready: %d ranks at %s:%d", world, addr, port)

    def _push_collective(self, version: int) -> None:
        import ray

        if self._group_workers is None:
            self._build_group()
        if [w._actor_id for w in self._workers()] != [w._actor_id for w in self._group_workers]:
            raise _GroupStale("a worker was replaced since the group was built")
        names, shapes, dtypes = ray.get(self.learners.actors[0].weight_meta.remote(), timeout=self.timeout_s)
        acks = ray.get(
            [a.send_weights.remote() for a in self.learners.actors]
            + [w.receive_weights.remote(names, shapes, dtypes, version) for w in self._group_workers],
            timeout=self.timeout_s,
        )[len(self.learners.actors) :]
        if any(v != version for v in acks):
            raise RuntimeError(f"weight push v{version}: engines report versions {acks}")
        for pool in self.pools:
            pool.version = version


class _GroupStale(RuntimeError):
    pass
