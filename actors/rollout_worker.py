"""RolloutWorker: a Ray actor owning one engine and a set of in-process env slots.

The actor runs one call at a time (Ray's default max_concurrency=1), so a weight update queued
behind `play` lands between batches: no episode ever mixes two policy versions, and every episode
and generation carries the version of the engine that produced it. The same class serves as the
skill-evaluation worker (actor name skill-eval-<i>). Whether it runs on a GPU is decided here, in
the actor, from what the actor sees (never by the driver, which may sit on a CPU-only head node).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np

from actors.engine import Engine, make_engine
from actors.episode import EpisodeRunner, EpisodeSettings
from cluster.core.config import Config, EnvConfig
from cluster.core.generation import Generation, GenParams
from cluster.core.records import EpisodeJob, EpisodeResult
from cluster.core.task_files import LocalTaskEnv, TaskFiles
from envs.base import TextEnv

log = logging.getLogger(__name__)

EnvFactory = Callable[[EnvConfig], TextEnv]


def default_env_factory(env_cfg: EnvConfig) -> TextEnv:
    from envs import make_env

    return make_env(env_cfg)


def _in_ray_actor() -> bool:
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    except Exception:
        return False


def _cpu_process_settings(cfg: Config) -> int:
    """In-process vLLM (the CPU settings that work, see ../shared/PLATFORM_NOTES.md) with
    `rollout.num_threads` OpenMP threads, set before the engine binds its threads (it cannot change
    them afterwards). Inside a Ray actor the rule replaces Ray's OMP_NUM_THREADS=num_cpus: in the
    synchronous loop the engines generate while the learner waits, so they share the node's cores
    (2 threads on the 2-core machine: 1.5-1.8x the rollout speed of 1, docs/results.md). Returns the threads."""
    import torch

    from cluster.core.device import cpu_threads

    if torch.cuda.is_available():
        return torch.get_num_threads()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    r = cfg.rollout
    engines = r.num_workers + cfg.skills.num_eval_workers
    own = r.num_cpus_per_worker if cfg.trainer.overlap else None
    if r.num_threads or _in_ray_actor() or "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(cpu_threads(r.num_threads, engines, own))
    threads = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(threads)  # a no-op once an in-process vLLM engine has bound its threads
    return threads


class RolloutWorker:
    """Ray actor (wrap with ray.remote): play(jobs) -> EpisodeResults, generate, update_weights."""

    def __init__(
        self,
        cfg: Config,
        name: str = "rollout-0",
        seed: int = 0,
        env_factory: EnvFactory | None = None,
        engine: Engine | None = None,
        task_files: TaskFiles | None = None,
    ) -> None:
        from cluster.core.model_store import project_cache, resolve_model
        from cluster.core.task_files import LocalTaskFiles

        logging.basicConfig(level=os.environ.get("EVORL_LOG_LEVEL", "INFO"))
        threads = _cpu_process_settings(cfg)
        self.cfg = cfg
        self.name = name
        self.env_factory = env_factory or default_env_factory
        self.engine = engine or make_engine(
            resolve_model(cfg.model.path), cfg.engine, seed, cfg.model.max_model_len
        )
        self.runner = EpisodeRunner(self.engine, EpisodeSettings.from_config(cfg))
        self.envs: list[TextEnv] = []
        # tasks' files from the shipped copy where this node cannot see the driver's
        shared = cfg.env.data_transfer == "shared"  # checked: a missing file names the setting
        self.task_files = (
            LocalTaskFiles(task_files, project_cache() / "task_files") if task_files or shared else None
        )
        log.info("%s: engine %s ready (pid %d, %d CPU threads)", name, self.engine.name, os.getpid(), threads)

    def _new_env(self) -> TextEnv:
        env = self.env_factory(self.cfg.env)
        return LocalTaskEnv(env, self.task_files) if self.task_files else env

    def _slots(self, n: int) -> list[TextEnv]:
        while len(self.envs) < n:
            self.envs.append(self._new_env())
        return self.envs[:n]

    def play(self, jobs: list[EpisodeJob], gen: GenParams, episode_ids: list[str]) -> list[EpisodeResult]:
        """Run the episodes, at most rollout.envs_per_worker at once; results in job order."""
        width = max(1, self.cfg.rollout.envs_per_worker)
        out: list[EpisodeResult] = []
        for s in range(0, len(jobs), width):
            chunk = jobs[s : s + width]
            out += self.runner.run(self._slots(len(chunk)), chunk, gen, episode_ids[s : s + width])
            self._drop_hung()
        for r in out:
            r.info["worker"] = self.name
        return out

    def _drop_hung(self) -> None:
        """Env slots whose call hung are replaced by fresh envs (the stuck thread is abandoned)."""
        for env in self.runner.hung:
            i = next((k for k, e in enumerate(self.envs) if e is env), None)
            if i is not None:
                log.warning("%s: env slot %d hung; replaced", self.name, i)
                self.envs[i] = self._new_env()
        self.runner.hung.clear()

    def generate(self, prompts: list[list[int]], gen: GenParams | list[GenParams]) -> list[list[Generation]]:
        return self.engine.generate(prompts, gen)

    def update_weights(self, weights: dict[str, np.ndarray], version: int) -> int:
        """`weights` arrives as a dict (Ray resolves a top-level ObjectRef argument zero-copy) or as
        [ObjectRef] (fetched here, zero-copy from this node's object store)."""
        if isinstance(weights, list):
            import ray

            weights = ray.get(weights[0])
        self.engine.update_weights(weights, version)
        return self.engine.version

    def init_weight_group(self, master_addr: str, port: int, rank_offset: int, world_size: int) -> None:
        """GPU path: join learner rank 0's weight group (VLLMEngine only)."""
        self.engine.init_weight_group(master_addr, port, rank_offset, world_size)  # type: ignore[attr-defined]

    def receive_weights(
        self, names: list[str], shapes: list[tuple[int, ...]], dtypes: list[str], version: int
    ) -> int:
        """GPU path: receive the bucketed broadcast that learner rank 0 sends."""
        self.engine.receive_weights(names, shapes, dtypes, version)  # type: ignore[attr-defined]
        return self.engine.version

    def engine_stats(self) -> dict[str, float]:
        """The engine's cumulative counters and latency sums (vLLM's own registry); {} without vLLM."""
        from actors.engine_stats import engine_stats

        return engine_stats(getattr(self.engine, "llm", None))

    def uses_gpu(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def version(self) -> int:
        return self.engine.version

    def ping(self) -> str:
        return self.name
