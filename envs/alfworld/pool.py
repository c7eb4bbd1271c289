"""Env pool: one process hosting many ALFWorld envs, stepped in batches, so a rollout worker sends one
call per turn for all its episodes instead of blocking on each game.

`EnvPool` is the plain class (usable and testable without Ray); `EnvPoolActor` is the same class as a
Ray actor, and `start_env_pools` starts named actors `env-pool-<i>`. `RemoteEnvPool` is the caller's
handle on one such actor: every call is bounded by a timeout, and when the actor dies (or hangs) the
batch's items come back as EnvFailure, the actor is recreated under the same name, and the restart
is counted. Envs are created and games loaded
lazily, on a slot's first reset. An env that raises is closed and recreated, and the slot's result is
an `EnvFailure`, which the episode loop must report as a failed episode (EpisodeResult.failed).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from cluster.records import TaskSpec
from envs.base import Observation, StepResult

log = logging.getLogger(__name__)


@dataclass
class EnvFailure:
    """A slot whose env crashed (or was misused); its episode is over and counts as failed."""

    slot: int
    error: str
    task_id: str = ""


@dataclass
class PoolStats:
    resets: int = 0
    steps: int = 0
    crashes: int = 0
    envs_created: int = 0
    errors: list[str] = field(default_factory=list)  # the last few, for the dashboard / logs


def _alfworld_factory(max_steps: int) -> Callable[[], Any]:
    def make() -> Any:
        from envs.alfworld.env import AlfWorldEnv

        return AlfWorldEnv(max_steps=max_steps)

    return make


class EnvPool:
    """`num_envs` env slots. Results come back in the order of the request, one per item."""

    def __init__(self, num_envs: int, max_steps: int = 50, env_factory: Callable[[], Any] | None = None):
        if num_envs < 1:
            raise ValueError(f"EnvPool: num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self._factory = env_factory or _alfworld_factory(max_steps)
        self._envs: list[Any | None] = [None] * num_envs
        self._tasks: list[TaskSpec | None] = [None] * num_envs
        self.stats = PoolStats()

    def reset_batch(self, items: Sequence[tuple[int, TaskSpec]]) -> list[Observation | EnvFailure]:
        out: list[Observation | EnvFailure] = []
        for slot, task in items:
            self._check_slot(slot)
            self._tasks[slot] = task
            out.append(self._call(slot, lambda env, t=task: env.reset(t)))
            self.stats.resets += 1
        return out

    def step_batch(self, items: Sequence[tuple[int, str]]) -> list[StepResult | EnvFailure]:
        out: list[StepResult | EnvFailure] = []
        for slot, action in items:
            self._check_slot(slot)
            if self._envs[slot] is None or self._tasks[slot] is None:
                out.append(EnvFailure(slot, "step before reset"))
                continue
            out.append(self._call(slot, lambda env, a=action: env.step(a)))
            self.stats.steps += 1
        return out

    def expert_batch(self, slots: Sequence[int]) -> list[list[str] | EnvFailure]:
        """The planner's remaining solution for each slot (demos, checks, debugging)."""
        out: list[list[str] | EnvFailure] = []
        for slot in slots:
            self._check_slot(slot)
            out.append(self._call(slot, lambda env: env.expert_actions()))
        return out

    def get_stats(self) -> PoolStats:
        return self.stats

    def close(self) -> None:
        for i, env in enumerate(self._envs):
            if env is not None:
                try:
                    env.close()
                except Exception:  # closing is best effort; the env is dropped either way
                    log.warning("env pool: closing slot %d failed", i, exc_info=True)
            self._envs[i] = None

    def _check_slot(self, slot: int) -> None:
        if not isinstance(slot, int) or not 0 <= slot < self.num_envs:
            raise IndexError(f"EnvPool: slot {slot!r} out of range 0..{self.num_envs - 1}")

    def _call(self, slot: int, fn: Callable[[Any], Any]) -> Any:
        if self._envs[slot] is None:
            self._envs[slot] = self._factory()
            self.stats.envs_created += 1
        try:
            return fn(self._envs[slot])
        except Exception as e:
            task = self._tasks[slot]
            task_id = task.task_id if task is not None else ""
            msg = f"slot {slot} task {task_id or '?'}: {type(e).__name__}: {e}"
            log.error("env pool: %s\n%s", msg, traceback.format_exc())
            self.stats.crashes += 1
            self.stats.errors = (self.stats.errors + [msg])[-10:]
            self._recreate(slot)
            return EnvFailure(slot, msg, task_id)

    def _recreate(self, slot: int) -> None:
        env = self._envs[slot]
        self._envs[slot] = None
        self._tasks[slot] = None
        if env is not None:
            try:
                env.close()
            except Exception:
                log.warning("env pool: closing crashed slot %d failed", slot, exc_info=True)
        # a fresh env is built lazily on the slot's next reset


# The Ray actor: one process per pool. Resources are set per start (`options(num_cpus=...)`).
EnvPoolActor = ray.remote(EnvPool)


def start_env_pools(
    num_actors: int,
    envs_per_actor: int,
    max_steps: int = 50,
    num_cpus: float = 0.5,
    namespace: str | None = None,
) -> list[Any]:
    """Start named actors `env-pool-0..N-1` (a live actor of the same name is reused)."""
    return [
        EnvPoolActor.options(
            name=f"env-pool-{i}", namespace=namespace, get_if_exists=True, num_cpus=num_cpus
        ).remote(envs_per_actor, max_steps)
        for i in range(num_actors)
    ]


class EnvPoolError(RuntimeError):
    """An env-pool actor could not be (re)started: names the actor and the stage."""


class RemoteEnvPool:
    """Handle on one `EnvPoolActor` named `name`: bounded calls, failed items instead of a hang or a
    crash of the caller when the actor dies, and a fresh actor (empty slots) for the next reset."""

    def __init__(
        self,
        name: str,
        num_envs: int,
        max_steps: int = 50,
        timeout_s: float = 120.0,
        num_cpus: float = 0.5,
        namespace: str | None = None,
        env_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.name, self.num_envs, self.max_steps = name, num_envs, max_steps
        self.timeout_s, self.num_cpus, self.namespace = timeout_s, num_cpus, namespace
        self.env_factory = env_factory
        self.restarts = 0
        self.actor = self._start()

    def _start(self) -> Any:
        actor = EnvPoolActor.options(
            name=self.name, namespace=self.namespace, num_cpus=self.num_cpus, max_restarts=0
        ).remote(self.num_envs, self.max_steps, self.env_factory)
        try:
            ray.get(actor.get_stats.remote(), timeout=self.timeout_s)
        except Exception as e:
            raise EnvPoolError(f"{self.name}: start failed: {type(e).__name__}: {e}") from e
        return actor

    def _restart(self, stage: str, why: str) -> None:
        self.restarts += 1
        log.error("%s: %s failed (%s); recreating the env-pool actor (restart %d)",
                  self.name, stage, why, self.restarts)  # fmt: skip
        ray.kill(self.actor, no_restart=True)
        deadline = time.monotonic() + 30
        while True:  # the name is released asynchronously after the kill
            try:
                ray.get_actor(self.name, namespace=self.namespace)
            except ValueError:
                break
            if time.monotonic() > deadline:
                raise EnvPoolError(f"{self.name}: {stage}: old actor name not released in 30 s")
            time.sleep(0.2)
        self.actor = self._start()

    def _call(self, stage: str, items: Sequence[tuple[int, Any]], method: str) -> list:
        from ray.exceptions import GetTimeoutError, RayActorError

        try:
            return ray.get(getattr(self.actor, method).remote(list(items)), timeout=self.timeout_s)
        except (RayActorError, GetTimeoutError) as e:
            why = (
                f"no answer in {self.timeout_s:.0f} s" if isinstance(e, GetTimeoutError) else type(e).__name__
            )
            self._restart(stage, why)
            out = []
            for slot, item in items:
                task_id = item.task_id if isinstance(item, TaskSpec) else ""
                out.append(EnvFailure(slot, f"{self.name}: {stage}: actor lost ({why})", task_id))
            return out

    def reset_batch(self, items: Sequence[tuple[int, TaskSpec]]) -> list[Observation | EnvFailure]:
        return self._call("reset_batch", items, "reset_batch")

    def step_batch(self, items: Sequence[tuple[int, str]]) -> list[StepResult | EnvFailure]:
        """After an actor loss every slot is empty: stepping it again gives EnvFailure('step before
        reset'), so an episode cut by the loss can never continue silently on a fresh env."""
        return self._call("step_batch", items, "step_batch")

    def get_stats(self) -> PoolStats:
        return ray.get(self.actor.get_stats.remote(), timeout=self.timeout_s)

    def close(self) -> None:
        ray.kill(self.actor, no_restart=True)
