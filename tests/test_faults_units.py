"""Reliability rules that need no cluster: a hung env step, the run-folder policy, metrics dedup."""

from __future__ import annotations

import json
import threading

import pytest

from actors.episode import EpisodeRunner, EpisodeSettings, StepTimeout, bounded
from cluster.core.config import ConfigError, load_config
from cluster.core.generation import GenParams
from cluster.core.records import EpisodeJob
from tests.test_trainer_step import TASKS, FakeEngine, FakeEnv, tokenizer  # noqa: F401


class HangingEnv(FakeEnv):
    """HangingEnv (a fake): its first step never returns (until released at teardown)."""

    release = threading.Event()

    def step(self, action):
        self.release.wait(60)
        return super().step(action)


def test_a_hung_env_step_ends_only_its_own_episode(tokenizer):  # noqa: F811
    cfg = load_config(None, ["env.max_steps=3", "rollout.step_timeout_s=0.5"])
    runner = EpisodeRunner(FakeEngine(tokenizer), EpisodeSettings.from_config(cfg))
    hung = HangingEnv()
    try:
        out = runner.run(
            [FakeEnv(), hung, FakeEnv()], [EpisodeJob(t) for t in TASKS[:3]], GenParams(), ["a", "b", "c"]
        )
    finally:
        HangingEnv.release.set()
    assert [r.failed for r in out] == [False, True, False]
    assert "rollout.step_timeout_s=0.5" in out[1].error and out[0].steps == 3 and out[2].steps == 3
    assert runner.hung == [hung]  # the worker replaces this slot before reusing it


def test_bounded_passes_values_and_errors_through():
    assert bounded(lambda x: x + 1, 1.0, 1) == 2
    with pytest.raises(KeyError):
        bounded(lambda: {}["x"], 1.0)
    with pytest.raises(StepTimeout):
        bounded(threading.Event().wait, 0.1, 5)


def test_run_folder_policy(tmp_path):
    from cluster.checkpoint import CheckpointManager
    from cluster.run import prepare_run_dir
    from tests.test_faults_storage import FakeLearners

    run = tmp_path / "run"

    def cfg(*o):
        return load_config(None, [f"trainer.run_dir={run}", *o])

    assert prepare_run_dir(cfg(), False, False) == (run, None)  # fresh: start
    (run / "metrics.jsonl").write_text('{"iteration": 1}\n')
    (run / "skills").mkdir()
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        prepare_run_dir(cfg(), False, False)
    # a resume with no complete checkpoint starts clean: the killed run's skills and metrics go
    assert prepare_run_dir(cfg(), True, False) == (run, None)
    assert not (run / "skills").exists() and not (run / "metrics.jsonl").exists()
    CheckpointManager(run / "checkpoints").save(3, FakeLearners(), {"iteration": 3})
    folder, state = prepare_run_dir(cfg("trainer.resume=auto"), False, False)[1]
    assert folder.name == "iter-00003" and state == {"iteration": 3}
    assert (
        prepare_run_dir(cfg(), False, True) == (run, None) and not (run / "checkpoints").exists()
    )  # --overwrite
    rel = load_config(None, ["trainer.run_dir=relative/run"])
    assert prepare_run_dir(rel, False, False)[0].is_absolute()  # made absolute at start


def test_metrics_drop_the_iterations_a_resume_redoes(tmp_path):
    from cluster.metrics import Metrics, read_metrics

    m = Metrics(tmp_path, use_ray=False, use_tensorboard=False)
    for i in (1, 2, 3):
        m.log(i, {"x": float(i)})
    m.close()
    again = Metrics(tmp_path, use_ray=False, use_tensorboard=False, resumed_at=1)
    again.log(2, {"x": 20.0})
    assert [(r["iteration"], r["x"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 20.0)]
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
