"""RolloutWorker: a Ray actor owning one engine and a set of in-process env slots.

The actor runs one call at a time (Ray's default max_concurrency=1), so a weight update queued
behind `play` lands between batches: no episode ever mixes two policy versions. The same class
serves as the skill-evaluation worker (actor name skill-eval-<i>).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np

from actors.engine import Engine, Generation, GenParams, make_engine
from actors.episode import run_episodes
from cluster.config import Config, EnvConfig
from cluster.records import EpisodeResult, Role, TaskSpec
from envs.base import TextEnv

log = logging.getLogger(__name__)

EnvFactory = Callable[[EnvConfig], TextEnv]


def default_env_factory(env_cfg: EnvConfig) -> TextEnv:
    """envs.make_env when the envs package provides it; else ALFWorld directly."""
    try:
        from envs import make_env  # type: ignore[attr-defined]
    except ImportError:
        make_env = None
    if make_env is not None:
        return make_env(env_cfg)
    if env_cfg.name != "alfworld":
        raise NotImplementedError(f"env {env_cfg.name!r}: envs.make_env is not available yet")
    from envs.alfworld import AlfWorldEnv  # type: ignore[attr-defined]

    return AlfWorldEnv(max_steps=env_cfg.max_steps)


class RolloutWorker:
    """Ray actor (wrap with ray.remote): play(tasks) -> EpisodeResults, generate, update_weights."""

    def __init__(
        self,
        cfg: Config,
        name: str = "rollout-0",
        seed: int = 0,
        env_factory: EnvFactory | None = None,
        engine: Engine | None = None,
    ) -> None:
        from cluster.model_store import resolve_model

        logging.basicConfig(level=logging.INFO)
        self.cfg = cfg
        self.name = name
        self.env_factory = env_factory or default_env_factory
        self.engine = engine or make_engine(
            resolve_model(cfg.model.path), cfg.engine, seed, cfg.model.max_model_len
        )
        self.envs: list[TextEnv] = []
        log.info("%s: engine %s ready (pid %d)", name, self.engine.name, os.getpid())

    def _slots(self, n: int) -> list[TextEnv]:
        while len(self.envs) < n:
            self.envs.append(self.env_factory(self.cfg.env))
        return self.envs[:n]

    def play(
        self,
        tasks: list[TaskSpec],
        skills: list[str | None],
        gen: GenParams,
        episode_ids: list[str] | None = None,
        skill_ids: list[str] | None = None,
        role: Role = "solver",
    ) -> list[EpisodeResult]:
        """Run the episodes, at most env.envs_per_actor at once; results in task order."""
        width = max(1, self.cfg.env.envs_per_actor)
        episode_ids = episode_ids or [f"{self.name}/{t.task_id}#{i}" for i, t in enumerate(tasks)]
        skill_ids = skill_ids or [""] * len(tasks)
        out: list[EpisodeResult] = []
        for s in range(0, len(tasks), width):
            chunk = slice(s, s + width)
            n = len(tasks[chunk])
            out += run_episodes(
                self.engine, self._slots(n), tasks[chunk], skills[chunk], gen, self.cfg.env,
                self.engine.version, role, self.cfg.model.max_model_len, episode_ids[chunk], skill_ids[chunk],
            )  # fmt: skip
        for r in out:
            r.info["worker"] = self.name
        return out

    def generate(self, prompts: list[list[int]], gen: GenParams | list[GenParams]) -> list[list[Generation]]:
        return self.engine.generate(prompts, gen)

    def update_weights(self, weights: dict[str, np.ndarray], version: int) -> int:
        """`weights` arrives as a dict (Ray resolves a top-level ObjectRef argument zero-copy)."""
        if not isinstance(weights, dict):
            import ray

            weights = ray.get(weights)
        self.engine.update_weights(weights, version)
        return self.engine.version

    def init_weight_group(self, master_addr: str, port: int, rank_offset: int, world_size: int) -> None:
        """GPU path: join learner rank 0's weight group (VLLMEngine only)."""
        self.engine.init_weight_group(master_addr, port, rank_offset, world_size)  # type: ignore[attr-defined]

    def receive_weights(
        self, names: list[str], shapes: list[tuple[int, ...]], dtypes: list[str], version: int
    ) -> int:
        """GPU path: receive the bucketed broadcast that learner rank 0 sends with weight_sync.send_weights."""
        self.engine.receive_weights(names, shapes, dtypes, version)  # type: ignore[attr-defined]
        return self.engine.version

    def version(self) -> int:
        return self.engine.version

    def ping(self) -> str:
        return self.name
