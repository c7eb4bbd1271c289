"""RolloutPool: N RolloutWorker actors, load-balanced episode jobs, replacement of dead workers.

Jobs are cut into chunks (at most env.envs_per_actor episodes) and handed to whichever worker is
free. A chunk whose worker dies or exceeds rollout.call_timeout_s is resubmitted to a fresh worker
under the same actor name, so no episode is lost; restarts are counted and capped
(rollout.max_restarts per pool call). Any other error is raised as RolloutError naming the actor,
the stage and the task.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from actors.engine import Generation, GenParams, on_gpu
from actors.rollout_worker import EnvFactory, RolloutWorker
from cluster.config import Config
from cluster.records import EpisodeResult, Role, TaskSpec

log = logging.getLogger(__name__)


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
    ) -> None:
        import ray

        self.cfg = cfg
        self.prefix = name_prefix
        self.env_factory = env_factory
        self.num_workers = num_workers or cfg.rollout.num_workers
        self.restarts = 0
        self.version = 0
        self._episodes = 0
        self._weights_ref = None  # the last broadcast, so a replacement worker starts current
        self._remote = ray.remote(RolloutWorker)
        self.workers = [self._spawn(i) for i in range(self.num_workers)]
        ray.get([w.ping.remote() for w in self.workers], timeout=self.cfg.rollout.call_timeout_s)

    def _name(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def _spawn(self, i: int):
        r = self.cfg.rollout
        env_vars = {} if on_gpu() else {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}
        for key in ("ALFWORLD_DATA", "EVORL_CACHE", "EVORL_MODEL_DIR", "HF_HUB_OFFLINE"):
            if key in os.environ:
                env_vars[key] = os.environ[key]
        actor = self._remote.options(
            name=self._name(i),
            num_cpus=r.num_cpus_per_worker,
            num_gpus=r.num_gpus_per_worker,
            max_restarts=0,
            runtime_env={"env_vars": env_vars},
        ).remote(self.cfg, self._name(i), self.cfg.trainer.seed + i, self.env_factory)
        if self._weights_ref is not None:
            actor.update_weights.remote(self._weights_ref, self.version)  # queued before any play
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

    def play(
        self,
        tasks: list[TaskSpec],
        skills: list[str | None] | None,
        gen: GenParams,
        skill_ids: list[str] | None = None,
        role: Role = "solver",
    ) -> list[EpisodeResult]:
        """Play every task (skills[i] injected into task i's prompt); one result per task, in order."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        n = len(tasks)
        skills = skills if skills is not None else [None] * n
        skill_ids = skill_ids or [""] * n
        if len(skills) != n or len(skill_ids) != n:
            raise ValueError(f"pool.play: {n} tasks, {len(skills)} skills, {len(skill_ids)} skill ids")
        ids = [f"{self.prefix}-v{self.version}-e{self._episodes + k}" for k in range(n)]
        self._episodes += n
        width = max(1, min(self.cfg.env.envs_per_actor, math.ceil(n / self.num_workers)))
        todo = [_Chunk(s, min(n, s + width)) for s in range(0, n, width)]
        results: list[EpisodeResult | None] = [None] * n
        running: dict = {}  # ref -> (worker index, chunk, start time)
        idle = list(range(self.num_workers))
        timeout = self.cfg.rollout.call_timeout_s
        while todo or running:
            while todo and idle:
                i, c = idle.pop(0), todo.pop(0)
                sl = slice(c.start, c.stop)
                ref = self.workers[i].play.remote(tasks[sl], skills[sl], gen, ids[sl], skill_ids[sl], role)
                running[ref] = (i, c, time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                i, c, _t0 = running.pop(ref)
                try:
                    results[c.start : c.stop] = ray.get(ref)
                    idle.append(i)
                except (RayActorError, ActorDiedError, ActorUnavailableError) as e:
                    self._retry(i, c, todo, f"died: {type(e).__name__}", tasks)
                    idle.append(i)
                except Exception as e:
                    raise RolloutError(self._name(i), "play", tasks[c.start].task_id, repr(e)) from e
            now = time.monotonic()
            for ref, (i, c, t0) in list(running.items()):
                if now - t0 > timeout:
                    running.pop(ref)
                    self._retry(i, c, todo, f"timeout after {timeout:.0f} s", tasks)
                    idle.append(i)
        missing = [k for k, r in enumerate(results) if r is None]
        if missing:
            raise RolloutError(
                self.prefix, "play", tasks[missing[0]].task_id, f"{len(missing)} results missing"
            )
        return results  # type: ignore[return-value]

    def _retry(self, i: int, c: _Chunk, todo: list[_Chunk], why: str, tasks: list[TaskSpec]) -> None:
        c.attempts += 1
        if self.restarts >= self.cfg.rollout.max_restarts:
            raise RolloutError(self._name(i), "play", tasks[c.start].task_id, f"{why}; restart budget spent")
        self._replace(i, why)
        todo.insert(0, c)

    def generate(self, prompts: list[list[int]], gen: GenParams | list[GenParams]) -> list[list[Generation]]:
        """Extractor generations, split evenly across workers."""
        import ray

        if not prompts:
            return []
        per = gen if isinstance(gen, list) else [gen] * len(prompts)
        width = math.ceil(len(prompts) / self.num_workers)
        refs = [
            self.workers[k].generate.remote(prompts[s : s + width], per[s : s + width])
            for k, s in enumerate(range(0, len(prompts), width))
        ]
        try:
            parts = ray.get(refs, timeout=self.cfg.rollout.call_timeout_s)
        except Exception as e:
            raise RolloutError(self.prefix, "generate", "-", repr(e)) from e
        return [g for part in parts for g in part]

    def broadcast(self, weights: dict[str, np.ndarray], version: int) -> float:
        """Put the weights in the object store once and load them into every worker; returns seconds."""
        import ray

        t0 = time.perf_counter()
        self._weights_ref = ray.put(weights)
        self.version = int(version)
        refs = [w.update_weights.remote(self._weights_ref, self.version) for w in self.workers]
        try:
            got = ray.get(refs, timeout=self.cfg.rollout.call_timeout_s)
        except Exception as e:
            raise RolloutError(self.prefix, "update_weights", "-", repr(e)) from e
        if any(v != self.version for v in got):
            raise RolloutError(self.prefix, "update_weights", "-", f"versions after push: {got}")
        return time.perf_counter() - t0

    def versions(self) -> list[int]:
        import ray

        return ray.get([w.version.remote() for w in self.workers], timeout=self.cfg.rollout.call_timeout_s)

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []
