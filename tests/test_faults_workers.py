"""Killed actors on a real Ray with the real vLLM engine: the call completes, the work is resubmitted,
the kill is counted (hung env steps: tests/test_faults_units.py).
Also: bounded remote calls name the actor and the stage; the dashboard listens on loopback only.

One Ray session for the module, started through cluster.placement.init_ray (the trainer's path).
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

from cluster.core.config import load_config
from cluster.core.generation import GenParams
from cluster.core.records import EpisodeJob, TaskSpec
from envs.base import Observation, StepResult

pytestmark = pytest.mark.slow
DASHBOARD_PORT = 8277
METRICS_PORT = 8093


class FakeSlowEnv:
    """Never won; each step takes 0.2 s so a kill lands mid-batch."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps, self.n = max_steps, 0

    def _obs(self, text: str) -> Observation:
        return Observation(text, ["look", "wait", "open door 1"], "leave the room", "fake")

    def reset(self, task: TaskSpec) -> Observation:
        self.n = 0
        return self._obs("A closed room.")

    def step(self, action: str) -> StepResult:
        self.n += 1
        time.sleep(0.2)
        return StepResult(self._obs(f"After {action}: nothing."), 0.0, self.n >= self.max_steps, False)

    def close(self) -> None:
        pass


def fake_env_factory(env_cfg) -> FakeSlowEnv:
    return FakeSlowEnv(env_cfg.max_steps)


def fake_pool_env() -> FakeSlowEnv:
    return FakeSlowEnv(50)


@pytest.fixture(scope="module")
def cfg():
    return load_config(
        None,
        ["env.max_steps=3", "rollout.envs_per_worker=4", "rollout.max_restarts=2", "engine.kv_cache_gib=0.25",
         "model.max_model_len=512", "skills.extractor_max_tokens=64", "rollout.call_timeout_s=300", "cluster.include_dashboard=true",
         f"cluster.dashboard_port={DASHBOARD_PORT}", f"cluster.metrics_export_port={METRICS_PORT}"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def ray_session(cfg):
    import ray
    from ray import cloudpickle

    from cluster import placement
    from cluster.core.model_store import resolve_model

    try:
        resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    if ray.is_initialized():
        ray.shutdown()
    placement.init_ray(cfg)
    yield ray
    ray.shutdown()


def kill_after(ray, name: str, delay_s: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)
        deadline = time.monotonic() + 60
        while True:  # the actor may be between a kill and its replacement
            try:
                ray.kill(ray.get_actor(name), no_restart=True)
                return
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_dashboard_and_metrics_listen_on_loopback_only(ray_session):
    import psutil

    def listening(port: int) -> set[str]:
        return {
            c.laddr.ip
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }

    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and not (listening(DASHBOARD_PORT) and listening(METRICS_PORT)):
        time.sleep(0.5)
    assert listening(DASHBOARD_PORT) == {"127.0.0.1"}
    assert listening(METRICS_PORT) == {"127.0.0.1"}
    assert ray_session.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"


def test_skill_eval_worker_killed_mid_play_and_mid_generate(ray_session, cfg):
    """skills.num_eval_workers=1: the trainer's skill-eval pool is this class under prefix skill-eval."""
    ray = ray_session
    from actors.pool import RolloutPool

    pool = RolloutPool(cfg, "skill-eval", num_workers=1, env_factory=fake_env_factory)
    try:
        tasks = [TaskSpec(f"t{i}", "fake", "fake", "leave the room", f"ref{i}") for i in range(6)]
        gen = GenParams(temperature=1.0, max_tokens=8, seed=0)
        killer = kill_after(ray, "skill-eval-0", 2.5)  # 6 episodes x 3 steps x 0.2 s: still running
        results = pool.play([EpisodeJob(t) for t in tasks], gen)
        killer.join()
        assert pool.restarts == 1
        assert [r.task.task_id for r in results] == [t.task_id for t in tasks]
        assert all(not r.failed and r.steps == 3 and len(r.traces[0].spans) == 3 for r in results)
        assert len({r.episode_id for r in results}) == 6

        # the extractor path: generate() must survive the same fault
        prompts = [[1, 2, 3, 4, 5, 6, 7, 8]] * 4
        long_gen = GenParams(temperature=1.0, max_tokens=200, seed=1, n=2, logprobs=True)
        killer = kill_after(ray, "skill-eval-0", 1.0)
        t0 = time.monotonic()
        outs = pool.generate(prompts, long_gen)
        killer.join()
        assert time.monotonic() - t0 > 1.0, "generation finished before the kill: the test proved nothing"
        assert pool.restarts == 2
        assert len(outs) == 4 and all(len(o) == 2 for o in outs)
        assert all(len(g.token_ids) == len(g.logprobs) > 0 for o in outs for g in o)

        # a worker that died between calls is replaced by the next call too
        ray.kill(ray.get_actor("skill-eval-0"), no_restart=True)
        time.sleep(1)
        assert pool.versions() == [0] and pool.restarts == 3

        # a stuck call: after rollout.call_timeout_s a named error (budget 0: no replacement), no hang
        from dataclasses import replace

        from actors.pool import RolloutError

        pool.cfg = replace(cfg, rollout=replace(cfg.rollout, call_timeout_s=2.0, max_restarts=0))
        t0 = time.monotonic()
        with pytest.raises(RolloutError, match=r"skill-eval-0: play failed on task t0: timeout after 2 s"):
            pool.play([EpisodeJob(t) for t in tasks[:4]], gen)  # 4 x 3 steps x 0.2 s > 2 s
        assert time.monotonic() - t0 < 30

        # a death with the restart budget spent: a named error, not a hang or a silent loss
        pool.cfg = replace(cfg, rollout=replace(cfg.rollout, max_restarts=0))
        killer = kill_after(ray, "skill-eval-0", 0.5)
        with pytest.raises(
            RolloutError, match=r"skill-eval-0: play failed on task t0: died: .*restart budget spent"
        ):
            pool.play([EpisodeJob(t) for t in tasks[:1]], gen)
        killer.join()
    finally:
        pool.shutdown()


def test_learner_group_errors_name_actor_and_stage(ray_session):
    """LearnerGroup._get on a dead actor / a slow call (no DeepSpeed needed: a bare group object)."""
    ray = ray_session
    from learner.group import LearnerGroup

    @ray.remote(num_cpus=0)
    class FakeLearner:
        def slow(self) -> int:
            time.sleep(30)
            return 1

        def fast(self) -> int:
            return 1

    group = LearnerGroup.__new__(LearnerGroup)
    group.timeout_s, group.name_prefix = 120.0, "learner"
    group.actors = [FakeLearner.remote(), FakeLearner.remote()]
    assert group._get([a.fast.remote() for a in group.actors], "ping") == [1, 1]  # both started
    group.timeout_s = 1.5
    with pytest.raises(TimeoutError, match=r"learner-1 did not finish train within 1.5s"):
        group._get([group.actors[0].fast.remote(), group.actors[1].slow.remote()], "train")
    ray.kill(group.actors[0], no_restart=True)
    time.sleep(0.5)
    with pytest.raises(RuntimeError, match=r"learner-0 died during save_checkpoint"):
        group._get([group.actors[0].fast.remote(), group.actors[1].fast.remote()], "save_checkpoint")
    for a in group.actors:
        ray.kill(a, no_restart=True)
