"""The whole `evorl train` process SIGKILLed mid-iteration, then `--resume`.

Real everything (Ray, vLLM, DeepSpeed, ALFWorld), as a user runs it: a subprocess of the CLI. After the
kill the run continues from the last checkpoint: iteration counter, policy version, sampler position
(the resumed iteration plays exactly the tasks a never-killed run would), the skill library as of
that checkpoint (no skill lost, none duplicated, nothing from the killed iteration leaked in).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.core.config import load_config
from cluster.core.storage import read_json, read_parquet, verify_manifest
from cluster.metrics import read_metrics
from cluster.sampler import TaskSampler
from skills.library import SkillLibrary

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EVORL = str(ROOT / ".venv" / "bin" / "evorl")
TINY = [
    "env.max_steps=3",
    "env.history_window=1",
    "env.generate_per_type=2",
    "env.eval_splits=[]",  # no final evaluation: this test is about the loop and its state
    "skills.n_candidates=2",
    "skills.k_neighbours=1",
    "skills.extractor_max_tokens=448",
    "rollout.max_new_tokens=16",
    "trainer.batch_size=1",
    "trainer.eval_tasks=2",
    "trainer.iterations=2",
    "trainer.checkpoint_every=1",
    "learner.micro_batch_tokens=512",  # smaller packed micro-batches: less learner memory
    "cluster.include_dashboard=false",
    "cluster.metrics_export_port=8091",
]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver (the fault), then whatever is left of its session (Ray's own processes)."""
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(path: Path, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(
                f"evorl train exited ({proc.returncode}) before {path} appeared:\n{log.read_text()[-4000:]}"
            )
        if time.monotonic() > deadline:
            kill_tree(proc)
            pytest.fail(f"{path} did not appear within {timeout_s} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def test_sigkill_mid_iteration_then_resume(tmp_path: Path) -> None:
    from cluster.core.model_store import resolve_model

    try:
        resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    run = tmp_path / "run"
    overrides = TINY + [f"trainer.run_dir={run}", f"env.data_dir={tmp_path / 'games'}"]
    cmd = [EVORL, "train", "--config", "configs/quickstart.yaml", *overrides]
    log1 = tmp_path / "first.log"
    with log1.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            state_file = run / "checkpoints" / "iter-00001" / "trainer_state.json"
            wait_for(state_file, proc, 900, log1)
            time.sleep(8)  # into iteration 2 (source episodes / extraction)
            assert proc.poll() is None, "the run ended before it could be killed mid-iteration"
        finally:
            kill_tree(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()
    assert not (run / "checkpoints" / "iter-00002").exists()

    state = read_json(state_file)
    assert state["iteration"] == 1 and state["policy_version"] in (
        0,
        1,
    )  # 0: iteration 1 had no trainable trace
    before = SkillLibrary(run / "skills")
    before.load(version=state["library_version"])
    before_ids = set(before.entries)
    before_trials = {sid: e.stats.trials for sid, e in before.entries.items()}

    log2 = tmp_path / "resume.log"
    with log2.open("w") as out:
        done = subprocess.run(
            [*cmd, "--resume"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=900,
            start_new_session=True,
        )  # fmt: skip
    assert done.returncode == 0, log2.read_text()[-4000:]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from_iteration"] == 1
    # iteration counter and policy version: each iteration logged once (the killed one never logged)
    rows = [r for r in read_metrics(run) if "policy_version" in r]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[0]["policy_version"] == state["policy_version"]
    trained = int("learner/loss" in rows[1])  # the resumed iteration stepped the learner (or had no turn)
    assert summary["iteration"] == 2 and summary["policy_version"] == state["policy_version"] + trained
    assert rows[1]["policy_version"] == summary["policy_version"]
    assert set(summary["worker_versions"].values()) == {summary["policy_version"]}
    assert (run / "checkpoints" / "iter-00002" / "model" / "deepspeed").is_dir()
    verify_manifest(run / "checkpoints" / "iter-00002")
    assert all(r["rollout/restarts"] == 0 for r in rows)

    # sampler position: the resumed iteration's source task is what an unbroken run samples second
    cfg = load_config(ROOT / "configs/quickstart.yaml", overrides)
    from envs import list_tasks

    train = [t for t in list_tasks(cfg.env, "train") if t.task_type in set(cfg.env.trained_types)]
    sampler = TaskSampler(train, cfg.trainer.seed)
    first, second = sampler.next(1), sampler.next(1)
    assert read_json(run / "checkpoints" / "iter-00002" / "trainer_state.json")["sampler"] == sampler.state()
    for i, expected in ((0, first), (1, second)):
        path = run / "trajectories" / f"iter-{i:05d}.parquet"
        if not path.exists():  # an iteration without a trainable turn writes no trajectories
            continue
        traces = read_parquet(path).to_pylist()
        sources = {t["task_id"] for t in traces if t["role"] == "extractor"}
        assert sources == {expected[0].task_id}, (i, sources, expected[0].task_id)

    # skill library: everything of the checkpoint is still there, once; nothing from the killed iteration
    after = SkillLibrary.open(run / "skills")
    assert before_ids <= set(after.entries) | set(after._alias)
    for sid in before_ids:
        assert after.get(sid).stats.trials >= before_trials[sid]
    it1 = [e for e in after if e.provenance.iteration == 1]
    assert len(it1) <= cfg.trainer.batch_size * cfg.skills.n_candidates
    assert all(e.provenance.iteration <= 1 for e in after)
    rows_in_file = len(read_parquet(after.load_report.path))
    assert rows_in_file == len(after) == len({e.skill_id for e in after})
    print(f"resume log tail:\n{log2.read_text()[-800:]}", file=sys.stderr)
