"""trainer.storage_uri: the run folder mirrored through pyarrow.fs (a file:// URI here; s3:// and
gs:// take the same code path), restored into an empty run folder on resume. The learners are a
FakeLearners that writes a small model folder."""

from __future__ import annotations

import json
import shutil

import pytest

from cluster.checkpoint import CheckpointManager
from cluster.core.config import load_config
from cluster.run import prepare_run_dir
from cluster.run_mirror import RunMirror


class FakeLearners:
    """FakeLearners: save(folder) writes weights named after the iteration it is told."""

    def __init__(self) -> None:
        self.iteration = 0

    def save(self, folder: str) -> str:
        from pathlib import Path

        p = Path(folder)
        (p / "deepspeed").mkdir(parents=True)
        (p / "model.safetensors").write_bytes(b"w" * 100 + bytes([self.iteration]))
        (p / "deepspeed" / "latest").write_text("state")
        return folder


def write_run(run, iteration: int, learners: FakeLearners, ckpt: CheckpointManager) -> None:
    learners.iteration = iteration
    (run / "skills").mkdir(parents=True, exist_ok=True)
    (run / "skills" / f"library-v{iteration}.parquet").write_bytes(b"lib" * iteration)
    (run / "trajectories").mkdir(exist_ok=True)
    (run / "trajectories" / f"iter-{iteration - 1:05d}.parquet").write_bytes(b"traj")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"iteration": iteration}) + "\n")
    ckpt.save(iteration, learners, {"iteration": iteration, "policy_version": iteration, "sampler": {},
                                    "library_version": iteration})  # fmt: skip


def test_push_prune_and_pull_into_an_empty_run_folder(tmp_path):
    run, remote = tmp_path / "run", tmp_path / "bucket" / "runs" / "r1"
    mirror = RunMirror(f"file://{remote}")
    ckpt = CheckpointManager(run / "checkpoints", keep=2)
    learners = FakeLearners()
    for it in (1, 2, 3):
        write_run(run, it, learners, ckpt)
        assert mirror.push(run)["storage/upload_failures"] == 0
    assert mirror.checkpoints() == ["iter-00002", "iter-00003"]  # iter-00001 pruned locally, then remotely
    assert (remote / "metrics.jsonl").read_text().count("iteration") == 3
    assert (remote / "skills" / "library-v3.parquet").exists()

    shutil.rmtree(run)  # the driver's node is gone
    assert mirror.pull(run) == "iter-00003"
    found = CheckpointManager(run / "checkpoints").latest()
    assert found is not None and found[1]["iteration"] == 3
    assert (run / "checkpoints/iter-00003/model/model.safetensors").read_bytes()[-1] == 3
    assert (run / "trajectories" / "iter-00002.parquet").exists()


def test_a_remote_checkpoint_that_does_not_verify_is_skipped(tmp_path):
    run, remote = tmp_path / "run", tmp_path / "remote"
    mirror = RunMirror(f"file://{remote}")
    ckpt = CheckpointManager(run / "checkpoints", keep=2)
    learners = FakeLearners()
    for it in (1, 2):
        write_run(run, it, learners, ckpt)
        mirror.push(run)
    (remote / "checkpoints/iter-00002/model/model.safetensors").write_bytes(b"torn")
    shutil.rmtree(run)
    assert mirror.pull(run) == "iter-00001"


def test_a_failed_upload_is_counted_and_the_next_push_sends_it(tmp_path, monkeypatch):
    run, remote = tmp_path / "run", tmp_path / "remote"
    mirror = RunMirror(f"file://{remote}")
    ckpt = CheckpointManager(run / "checkpoints", keep=3)
    write_run(run, 1, FakeLearners(), ckpt)
    real = mirror._upload
    monkeypatch.setattr(mirror, "_upload", lambda *a: (_ for _ in ()).throw(OSError("network down")))
    assert mirror.push(run) == {"storage/uploaded_files": 0.0, "storage/upload_failures": 1.0}
    assert mirror.checkpoints() == []
    monkeypatch.setattr(mirror, "_upload", real)
    assert mirror.push(run)["storage/uploaded_files"] > 0 and mirror.checkpoints() == ["iter-00001"]


def test_resume_restores_from_the_mirror_and_overwrite_clears_it(tmp_path):
    run, remote = tmp_path / "run", tmp_path / "remote"
    cfg = load_config(None, [f"trainer.run_dir={run}", f"trainer.storage_uri=file://{remote}"])
    ckpt = CheckpointManager(run / "checkpoints", keep=2)
    write_run(run, 1, FakeLearners(), ckpt)
    RunMirror(cfg.trainer.storage_uri).push(run)
    shutil.rmtree(run)
    _, found = prepare_run_dir(cfg, resume=True, overwrite=False)
    assert found is not None and found[0].name == "iter-00001"
    prepare_run_dir(cfg, resume=False, overwrite=True)
    assert RunMirror(cfg.trainer.storage_uri).checkpoints() == [] and not any(remote.iterdir())


def test_bad_uri_is_a_config_error():
    from cluster.core.config import ConfigError

    with pytest.raises(ConfigError, match="trainer.storage_uri"):
        load_config(None, ["trainer.storage_uri=/no/scheme"])
    with pytest.raises(ValueError, match="trainer.storage_uri"):
        RunMirror("nosuchscheme://bucket/x")
