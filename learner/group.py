"""LearnerGroup: M Learner ranks as Ray actors (learner-<i>) in one placement group, one DP group.

The driver-facing API is whole-batch: `train(table)` shards rows (whole samples, balanced by tokens)
across ranks and returns rank 0's metrics, which are already reduced over all ranks. Each rank's
bundle holds its CPUs, GPUs and the custom resources of `learner.resources` (a node type's).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from cluster.core.config import Config
from learner.batching import shard_by_samples

log = logging.getLogger(__name__)


class LearnerGroup:
    def __init__(
        self,
        cfg: Config,
        num_cpus_per_learner: float | None = None,
        timeout_s: float = 1800.0,
        name_prefix: str = "learner",
    ) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from learner.actor import Learner

        self.cfg = cfg
        self.timeout_s = timeout_s
        self.name_prefix = name_prefix
        self.actors: list = []
        self.ranks_via_object_store = 0  # in the last save: ranks whose files came through the object store
        m = cfg.learner.num_learners
        gpus = cfg.learner.num_gpus_per_learner
        if num_cpus_per_learner is None:
            num_cpus_per_learner = cfg.learner.num_cpus_per_learner
        bundle = {"CPU": num_cpus_per_learner, **({"GPU": gpus} if gpus else {}), **cfg.learner.resources}
        self.pg = placement_group([dict(bundle) for _ in range(m)], strategy="PACK")
        try:
            ray.get(self.pg.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(
                f"learner placement group ({m} x {bundle}) not schedulable within {timeout_s}s"
            ) from None
        remote = ray.remote(Learner)
        self.actors = [
            remote.options(
                name=f"{name_prefix}-{i}",
                num_cpus=num_cpus_per_learner,
                num_gpus=gpus,
                resources=dict(cfg.learner.resources) or None,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
            ).remote(cfg, rank=i, world_size=m)
            for i in range(m)
        ]
        addr, port = self._get([self.actors[0].address.remote()], "address")[0]
        self.info = self._get([a.setup.remote(addr, port) for a in self.actors], "setup")
        log.info("learner group ready: %d ranks, master %s:%d", m, addr, port)

    def _get(self, refs: list, stage: str) -> list:
        """ray.get bounded by timeout_s; errors name the learner actor(s) and the stage."""
        import ray

        names = [f"{self.name_prefix}-{i}" for i in range(len(refs))]
        try:
            return ray.get(refs, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
            late = [n for n, r in zip(names, refs) if r in pending] or names
            raise TimeoutError(
                f"learner group: {', '.join(late)} did not finish {stage} within {self.timeout_s}s"
            ) from None
        except ray.exceptions.RayActorError as e:
            dead = getattr(e, "actor_id", None)
            who = [n for n, a in zip(names, self.actors) if dead and a._actor_id.hex() == dead] or names
            raise RuntimeError(f"learner group: {', '.join(who)} died during {stage}: {e}") from e

    @property
    def size(self) -> int:
        return len(self.actors)

    def _shards(self, table: pa.Table) -> list[pa.Table]:
        """Whole samples (an episode's traces, an extraction) per rank, balanced by tokens."""
        lengths = [len(ids) for ids in table.column("token_ids").to_pylist()]
        idx = shard_by_samples(lengths, table.column("sample_id").to_pylist(), self.size)
        return [table.take(i) for i in idx]

    def train(self, table: pa.Table) -> dict[str, float]:
        shards = self._shards(table)
        return self._get([a.train.remote(s) for a, s in zip(self.actors, shards)], "train")[0]

    def sft(self, table: pa.Table) -> dict[str, float]:
        shards = self._shards(table)
        return self._get([a.sft.remote(s) for a, s in zip(self.actors, shards)], "sft")[0]

    def score(self, table: pa.Table) -> list[list[float]]:
        """The policy's logprobs of the generated tokens of every row (all ranks take part: under
        ZeRO-3 a forward gathers parameters from every rank)."""
        return self._get([a.score.remote(table) for a in self.actors], "score")[0]

    def set_lr(self, lr: float) -> None:
        self._get([a.set_lr.remote(lr) for a in self.actors], "set_lr")

    def weights(self) -> dict[str, np.ndarray]:
        """Full HF-named weights from rank 0, through the driver (tests and tools; training pushes
        with cluster/weight_sync.py, which never moves weights through the driver)."""
        return self._get([a.get_weights.remote() for a in self.actors], "get_weights")[0]

    def weights_ref(self) -> list:
        """[ObjectRef] of the weights, put by rank 0 itself (all ranks take part: ZeRO-3 gathers);
        the list keeps Ray from resolving the ref on the way through the driver."""
        return self._get([a.put_weights.remote() for a in self.actors], "put_weights")[0]

    def call(self, method: str, *args) -> list:
        """`method(*args)` on every rank (collectives need all of them); every rank's answer."""
        return self._get([getattr(a, method).remote(*args) for a in self.actors], method)

    def digests(self) -> list[str]:
        return self._get([a.weights_digest.remote() for a in self.actors], "weights_digest")

    def _remote_ranks(self) -> list[bool]:
        """Per rank: does it run where `folder` paths of this driver are not visible?
        learner.checkpoint_transfer: auto = on another Ray node than this driver; object_store =
        every rank (one machine can test the path); shared = none (the run folder is mounted)."""
        import ray

        mode = self.cfg.learner.checkpoint_transfer
        if mode != "auto":
            return [mode == "object_store"] * self.size
        here = ray.get_runtime_context().get_node_id()
        return [info.get("node_id", here) != here for info in self.info]

    def _staging(self, token: str) -> str:
        from cluster.core.model_store import project_cache

        return str(project_cache() / "checkpoint-staging" / token)

    def save(self, folder: str) -> str:
        """Every rank writes its part into `folder` (the caller publishes it). Ranks on nodes without
        the run folder write into their node's staging folder; the first such rank per node returns
        the node's files through the object store and the driver writes them here."""
        import uuid

        remote = self._remote_ranks()
        staging = self._staging(uuid.uuid4().hex[:12])
        shippers: dict[str, int] = {}
        for r, info in enumerate(self.info):
            if remote[r]:
                shippers.setdefault(info.get("node_id", ""), r)
        ship = set(shippers.values())
        refs = [a.save_checkpoint.remote(staging if remote[r] else folder, r in ship)
                for r, a in enumerate(self.actors)]  # fmt: skip
        answers = self._get(refs, "save_checkpoint")
        self.ranks_via_object_store = sum(remote)
        if ship:
            from cluster.core.folder_transfer import unpack

            for r in sorted(ship):
                unpack(answers[r], folder)
        return folder

    def load(self, folder: str) -> int:
        """Every rank resumes from `folder`; a rank on a node without it gets its own files (its ZeRO
        shards, the DeepSpeed state, learner_state.json) through the object store."""
        import uuid

        from cluster.core.folder_transfer import files_under, pack, rank_files
        from learner.actor import STATE_FILE

        remote = self._remote_ranks()
        staging = self._staging(uuid.uuid4().hex[:12])
        every = files_under(Path(folder)) if any(remote) else []
        refs = [
            a.load_checkpoint.remote(f"{staging}/rank{r}", pack(folder, rank_files(every, r, (STATE_FILE,))))
            if remote[r]
            else a.load_checkpoint.remote(folder)
            for r, a in enumerate(self.actors)
        ]
        return self._get(refs, "load_checkpoint")[0]

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for a in self.actors:
            ray.kill(a)
        remove_placement_group(self.pg)
