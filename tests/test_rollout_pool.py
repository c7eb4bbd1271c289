"""RolloutPool on a local Ray with the real vLLM engine in its worker and a scripted FakeEnv:
weight pushes and versions, and a worker killed mid-batch losing no episode (its replacement loads the
last pushed weights before it gets work)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from cluster.core.config import load_config
from cluster.core.generation import GenParams
from cluster.core.records import EpisodeJob, TaskSpec
from envs.base import Observation, StepResult

pytestmark = pytest.mark.slow


class FakeSlowEnv:
    """Never won; each step takes 0.2 s and touches `marker` so the test knows a batch is running."""

    def __init__(self, max_steps: int, marker: str) -> None:
        self.max_steps, self.marker, self.n = max_steps, marker, 0

    def _obs(self, text: str) -> Observation:
        return Observation(text, ["look", "wait", "open door 1"], "leave the room", "fake")

    def reset(self, task: TaskSpec) -> Observation:
        self.n = 0
        return self._obs("A closed room.")

    def step(self, action: str) -> StepResult:
        self.n += 1
        Path(self.marker).touch()
        time.sleep(0.2)
        return StepResult(self._obs(f"After {action}: nothing."), 0.0, self.n >= self.max_steps, False)

    def close(self) -> None:
        pass


class FakeEnvFactory:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, env_cfg) -> FakeSlowEnv:
        return FakeSlowEnv(env_cfg.max_steps, self.marker)


@pytest.fixture(scope="module")
def ray_session():
    import ray
    from ray import cloudpickle

    from cluster.core.model_store import resolve_model

    try:
        resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_pool_weights_and_worker_kill(ray_session, tmp_path):
    ray = ray_session
    from actors.pool import RolloutPool

    marker = str(tmp_path / "stepped")
    cfg = load_config(
        None,
        ["env.max_steps=3", "rollout.envs_per_worker=4", "rollout.max_restarts=2", "engine.kv_cache_gib=0.25",
         "model.max_model_len=512", "skills.extractor_max_tokens=64"],
    )  # fmt: skip
    pool = RolloutPool(cfg, "rollout", num_workers=1, env_factory=FakeEnvFactory(marker))
    try:
        import numpy as np
        from safetensors.torch import load_file

        from cluster.core.model_store import resolve_model

        weights = {
            k: v.float().numpy()
            for k, v in load_file(os.path.join(resolve_model("embedded"), "model.safetensors")).items()
        }
        assert pool.load_weights([ray.put(weights)], version=3) == [3]
        assert pool.versions() == [3]
        del weights

        tasks = [TaskSpec(f"t{i}", "fake", "fake", "leave the room", f"ref{i}") for i in range(6)]
        gen = GenParams(temperature=1.0, max_tokens=8, seed=0, logprobs=True)

        def kill_when_running() -> None:
            deadline = time.monotonic() + 120
            while not os.path.exists(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            ray.kill(ray.get_actor("rollout-0"), no_restart=True)

        killer = threading.Thread(target=kill_when_running)
        killer.start()
        results = pool.play([EpisodeJob(t) for t in tasks], gen)
        killer.join()

        assert pool.restarts == 1
        assert [r.task.task_id for r in results] == [t.task_id for t in tasks]
        assert len({r.episode_id for r in results}) == 6
        for r in results:
            (t,) = r.traces
            assert not r.failed and r.steps == 3 and r.truncated and len(t.spans) == 3
            assert r.policy_version == 3 and t.policy_version == 3  # the replacement served version 3
            assert len(t.behaviour_logprobs) == t.n_generated > 0
            assert np.isfinite(t.behaviour_logprobs).all()
        assert pool.versions() == [3]  # the replacement worker got the last push
    finally:
        pool.shutdown()


def test_worker_plays_real_games_from_shipped_task_files(ray_session, tmp_path):
    """env.data_transfer=object_store: the driver's game folder is gone once shipped (as on a node
    that does not mount it) and the worker still plays the real ALFWorld games, from its copy."""
    import shutil

    from actors.pool import RolloutPool
    from cluster.core.task_files import TaskFiles
    from envs.alfworld.generator import generate
    from envs.alfworld.tasks import list_tasks

    games = tmp_path / "driver-games"
    generate(str(games), per_type=1, seed=4, preset="easy", splits=["train"],
             task_types=["pick_and_place_simple", "pick_heat_then_place_in_recep"])  # fmt: skip
    tasks = list_tasks(str(games), "train")
    cfg = load_config(None, [f"env.data_dir={games}", "env.max_steps=2", "env.data_transfer=object_store",
                             "engine.kv_cache_gib=0.25", "model.max_model_len=1024",
                             "skills.extractor_max_tokens=64"])  # fmt: skip
    shipped = TaskFiles.ship(tasks, cfg.env.max_shipped_bytes)
    shutil.rmtree(games)
    pool = RolloutPool(cfg, "shipped-rollout", num_workers=1, task_files=shipped)
    try:
        results = pool.play([EpisodeJob(t) for t in tasks], GenParams(temperature=1.0, max_tokens=8, seed=0))
    finally:
        pool.shutdown()
    assert [r.task.task_id for r in results] == [t.task_id for t in tasks]
    assert all(not r.failed and r.steps >= 1 for r in results), [r.error for r in results]
    assert all(r.task.ref.startswith(str(games)) for r in results)  # results name the driver's files
