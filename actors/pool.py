"""RolloutPool: N RolloutWorker actors, load-balanced episode jobs, replacement of dead workers.

Jobs are cut into chunks (at most rollout.envs_per_worker episodes) and handed to whichever worker
is free. A chunk whose worker dies or exceeds rollout.call_timeout_s is resubmitted to a fresh worker
under the same actor name, so no episode is lost; `play` and `generate` share that dispatch. Restarts
are counted (`restarts`, logged by the trainer as <prefix>/restarts) and capped (rollout.max_restarts
per pool call); `load_weights` and `versions` replace a worker that died between calls. A replacement
loads the last object-store weights before it is given any work (NCCL pushes since then do not reach
it: its traces carry the version it serves). Any other error is raised as RolloutError naming the
actor, the stage and the task.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

from actors.rollout_worker import EnvFactory, RolloutWorker
from cluster.core.config import Config
from cluster.core.generation import Generation, GenParams
from cluster.core.records import EpisodeJob, EpisodeResult
from cluster.core.task_files import TaskFiles

log = logging.getLogger(__name__)


def worker_bundles(
    num_cpus: float, num_gpus: float, tensor_parallel_size: int, resources: dict[str, float]
) -> list[dict[str, float]] | None:
    """The placement-group bundles of one rollout worker, or None when it needs none (a plain actor
    with `num_gpus` GPUs and `resources`): tensor_parallel_size 1, or a CPU worker (num_gpus 0:
    vLLM's CPU engine ignores tensor_parallel_size).

    A tensor-parallel engine takes one bundle per GPU, {GPU: 1} plus the custom resources, so every
    GPU it uses lies on a node of the named type and the node type's custom resource counts its GPUs
    (ray_cluster.yaml: {rollout: 8} on an 8-GPU node). The first bundle also holds the worker's own
    CPUs: the actor runs there without a GPU of its own, and vLLM's Ray executor starts one GPU
    worker per bundle (tests/test_cluster_config.py)."""
    if tensor_parallel_size <= 1 or num_gpus <= 0:
        return None
    bundles = [
        {"GPU": 1.0, **{k: float(v) for k, v in resources.items()}} for _ in range(tensor_parallel_size)
    ]
    if num_cpus > 0:
        bundles[0]["CPU"] = float(num_cpus)
    return bundles


class RolloutError(RuntimeError):
    def __init__(self, actor: str, stage: str, task: str, cause: str) -> None:
        super().__init__(f"{actor}: {stage} failed on task {task}: {cause}")
        self.actor, self.stage, self.task = actor, stage, task


@dataclass
class _Chunk:
    start: int
    stop: int
    attempts: int = 0


class RolloutPool:
    def __init__(
        self,
        cfg: Config,
        name_prefix: str = "rollout",
        num_workers: int | None = None,
        env_factory: EnvFactory | None = None,
        resources: dict[str, float] | None = None,
        task_files: TaskFiles | None = None,
    ) -> None:
        import ray

        self.cfg = cfg
        self.task_files = task_files  # the tasks' files in the object store, for workers on other nodes
        self.prefix = name_prefix
        self.env_factory = env_factory
        self.num_workers = num_workers or cfg.rollout.num_workers
        self.resources = dict(cfg.rollout.resources if resources is None else resources)
        self.restarts = 0
        self.version = 0
        self._episodes = 0
        self._weights_ref = None  # [ObjectRef] of the last object-store push: what a replacement loads
        self._weights_version = 0  # its policy version (NCCL pushes since then do not reach a replacement)
        self._remote = ray.remote(RolloutWorker)
        self._pgs: dict = {}  # worker index -> its placement group (tensor-parallel GPU engines only)
        self.workers = [self._spawn(i) for i in range(self.num_workers)]
        for i, w in enumerate(self.workers):
            try:
                ray.get(w.ping.remote(), timeout=self.cfg.rollout.start_timeout_s)
            except Exception as e:
                raise RolloutError(self._name(i), "start", "-", repr(e)) from e

    def _name(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def _spawn(self, i: int):
        r = self.cfg.rollout
        env_vars = {k: os.environ[k] for k in ("ALFWORLD_DATA", "EVORL_CACHE", "EVORL_MODEL_DIR", "HF_HUB_OFFLINE")
                    if k in os.environ}  # fmt: skip
        tp = self.cfg.engine.tensor_parallel_size
        bundles = worker_bundles(r.num_cpus_per_worker, r.num_gpus_per_worker, tp, self.resources)
        if bundles is None:
            placement = dict(num_gpus=r.num_gpus_per_worker, resources=self.resources or None)
        else:
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            if r.num_gpus_per_worker != tp:
                log.warning("%s: engine.tensor_parallel_size %d takes %d GPUs (one bundle each), not "
                            "rollout.num_gpus_per_worker %g", self._name(i), tp, tp, r.num_gpus_per_worker)  # fmt: skip
            # One node per engine (tensor parallelism wants NVLink); a replacement reuses the group.
            if i not in self._pgs:
                self._pgs[i] = placement_group(bundles, strategy="STRICT_PACK", name=f"{self._name(i)}-pg")
            placement = dict(
                num_gpus=0,  # the GPUs are the bundles', taken by vLLM's Ray workers
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self._pgs[i], placement_group_bundle_index=0, placement_group_capture_child_tasks=True
                ),
            )
        actor = self._remote.options(
            name=self._name(i),
            num_cpus=r.num_cpus_per_worker,
            max_restarts=0,
            runtime_env={"env_vars": env_vars},
            **placement,
        ).remote(
            self.cfg, self._name(i), self.cfg.trainer.seed + i, self.env_factory, task_files=self.task_files
        )
        return actor

    def _replace(self, i: int, why: str) -> None:
        import ray

        self.restarts += 1
        log.warning("%s: replacing worker (%s); restarts=%d", self._name(i), why, self.restarts)
        ray.kill(self.workers[i], no_restart=True)
        deadline = time.monotonic() + 30
        while True:  # the name is released asynchronously after the kill
            try:
                ray.get_actor(self._name(i))
            except ValueError:
                break
            if time.monotonic() > deadline:
                raise RolloutError(self._name(i), "replace", "-", "old actor name not released in 30 s")
            time.sleep(0.2)
        self.workers[i] = self._spawn(i)
        try:  # started (engine loaded) before any work: its start-up is not charged to a call's timeout
            ray.get(self.workers[i].ping.remote(), timeout=self.cfg.rollout.start_timeout_s)
        except Exception as e:
            raise RolloutError(self._name(i), "replace", "-", f"replacement did not start: {e!r}") from e
        if self._weights_ref is not None:  # the last object-store weights before any work
            got = ray.get(self.workers[i].update_weights.remote(self._weights_ref, self._weights_version),
                          timeout=self.cfg.rollout.call_timeout_s)  # fmt: skip
            if got != self._weights_version:
                raise RolloutError(
                    self._name(i), "replace", "-", f"loaded version {got}, expected {self._weights_version}"
                )
        served = self._weights_version if self._weights_ref is not None else 0
        if served != self.version:  # pushes since went over NCCL: labelled with what it really serves,
            # so its traces are dropped as stale (counted) until the next push reaches it
            log.warning("%s: the replacement serves policy version %d until the next push (pool: %d)",
                        self._name(i), served, self.version)  # fmt: skip

    def play(self, jobs: list[EpisodeJob], gen: GenParams, progress=None) -> list[EpisodeResult]:
        """Play every job (its skill, if any, in the solver prompt); one result per job, in order.
        `progress(done, total)` is called as chunks come back."""
        n = len(jobs)
        ids = [f"{self.prefix}-v{self.version}-e{self._episodes + k}" for k in range(n)]
        self._episodes += n
        width = max(1, min(self.cfg.rollout.envs_per_worker, math.ceil(n / self.num_workers)))

        def submit(worker, sl: slice):
            return worker.play.remote(jobs[sl], gen, ids[sl])

        return self._dispatch(n, width, submit, "play", lambda k: jobs[k].task.task_id, progress)

    def generate(
        self, prompts: list[list[int]], gen: GenParams | list[GenParams], progress=None
    ) -> list[list[Generation]]:
        """Extractor generations, split evenly across workers; a dead or stuck worker is replaced and
        its prompts resubmitted, exactly like `play`."""
        n = len(prompts)
        if not n:
            return []
        per = gen if isinstance(gen, list) else [gen] * n
        width = math.ceil(n / self.num_workers)

        def submit(worker, sl: slice):
            return worker.generate.remote(prompts[sl], per[sl])

        return self._dispatch(n, width, submit, "generate", lambda k: f"prompt {k}", progress)

    def _dispatch(self, n: int, width: int, submit, stage: str, item_name, progress=None) -> list:
        """Run items 0..n-1 in chunks of `width` on whichever worker is free; one result per item.

        A chunk whose worker dies (or exceeds rollout.call_timeout_s, counted from its submission to a
        started worker) goes back to the queue after the worker is replaced; at most
        rollout.max_restarts replacements per worker per call, so losing one node of many does not stop
        the run. Other errors are raised as RolloutError naming the actor, the stage and the first item.
        """
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, OutOfMemoryError, RayActorError

        todo = [_Chunk(s, min(n, s + width)) for s in range(0, n, width)]
        results: list = [None] * n
        running: dict = {}  # ref -> (worker index, chunk, start time)
        idle = list(range(self.num_workers))
        timeout = self.cfg.rollout.call_timeout_s
        budget = [self.cfg.rollout.max_restarts] * self.num_workers  # replacements left per worker

        def retry(i: int, c: _Chunk, why: str) -> None:
            c.attempts += 1
            if budget[i] <= 0:
                raise RolloutError(self._name(i), stage, item_name(c.start), f"{why}; restart budget spent")
            budget[i] -= 1
            self._replace(i, f"{stage}: {why}")
            todo.insert(0, c)
            idle.append(i)

        while todo or running:
            while todo and idle:
                i, c = idle.pop(0), todo.pop(0)
                running[submit(self.workers[i], slice(c.start, c.stop))] = (i, c, time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                i, c, _t0 = running.pop(ref)
                try:
                    out = ray.get(ref)
                except (RayActorError, ActorDiedError, ActorUnavailableError, OutOfMemoryError) as e:
                    retry(i, c, f"died: {type(e).__name__}")  # OOM: Ray's memory monitor killed it
                    continue
                except Exception as e:
                    raise RolloutError(self._name(i), stage, item_name(c.start), repr(e)) from e
                if len(out) != c.stop - c.start:
                    raise RolloutError(
                        self._name(i), stage, item_name(c.start), f"{len(out)} results for {c.stop - c.start}"
                    )
                results[c.start : c.stop] = out
                idle.append(i)
                if progress is not None:
                    progress(sum(r is not None for r in results), n)
            now = time.monotonic()
            for ref, (i, c, t0) in list(running.items()):
                if now - t0 > timeout:
                    running.pop(ref)
                    retry(i, c, f"timeout after {timeout:.0f} s")
        return results

    def load_weights(self, weights_ref: list, version: int) -> list[int]:
        """Every worker loads the weights of `weights_ref` ([ObjectRef], put by the learner) in
        parallel; returns the versions they report (all `version`, or RolloutError)."""
        self._weights_ref, self.version = weights_ref, int(version)
        self._weights_version = self.version
        got = self._each(lambda w: w.update_weights.remote(weights_ref, self.version), "update_weights")
        if any(v != self.version for v in got):
            raise RolloutError(self.prefix, "update_weights", "-", f"versions after push: {got}")
        return got

    def engine_stats(self) -> dict[str, float]:
        """The engines' statistics since the last call, summed over workers (a replaced worker's
        counters restart from zero: its previous snapshot is dropped)."""
        from actors.engine_stats import combine, delta

        now = self._each(lambda w: w.engine_stats.remote(), "engine_stats")
        prev = getattr(self, "_engine_prev", [{}] * len(now))
        prev = [
            p if p.get("prompt_tokens", 0) <= n.get("prompt_tokens", 0) else {} for p, n in zip(prev, now)
        ]
        self._engine_prev = now
        return combine([delta(p, n) for p, n in zip(prev, now)])

    def versions(self) -> list[int]:
        return self._each(lambda w: w.version.remote(), "version")

    def _each(self, call, stage: str) -> list:
        """`call(worker)` on every worker at once; a worker that died (or whose replacement died) is
        replaced and asked again, at most rollout.max_restarts times per call, like `_dispatch` (a
        replacement starts from the last object-store weights, `_replace`). Bounded by
        rollout.call_timeout_s."""
        import ray
        from ray.exceptions import GetTimeoutError, OutOfMemoryError, RayActorError

        timeout = self.cfg.rollout.call_timeout_s
        refs = {i: call(w) for i, w in enumerate(self.workers)}
        out: dict[int, object] = {}
        budget = [self.cfg.rollout.max_restarts] * len(self.workers)  # per worker, as in _dispatch
        while refs:
            i, ref = next(iter(refs.items()))
            try:
                out[i] = ray.get(ref, timeout=timeout)
                del refs[i]
            except (RayActorError, OutOfMemoryError) as e:  # OOM: killed by Ray's memory monitor
                if budget[i] <= 0:
                    raise RolloutError(self._name(i), stage, "-", f"{e!r}; restart budget spent") from e
                budget[i] -= 1
                self._replace(i, f"{stage}: died: {type(e).__name__}")
                refs[i] = call(self.workers[i])
            except GetTimeoutError as e:
                raise RolloutError(self._name(i), stage, "-", f"no answer in {timeout:.0f} s") from e
        return [out[i] for i in range(len(self.workers))]

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []
        if getattr(self, "_pgs", None):
            from ray.util.placement_group import remove_placement_group

            for pg in self._pgs.values():
                remove_placement_group(pg)
            self._pgs = {}
