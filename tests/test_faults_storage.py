"""Corrupted or truncated files on load: checkpoint state, skill library versions, trajectory Parquet.

Each is detected, reported with its path, and the last good version is used; a failed save deletes
nothing that was there before.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pytest

from cluster.checkpoint import STATE, CheckpointManager
from cluster.core.storage import CorruptFileError, read_parquet, read_parquet_dir, write_parquet
from skills.library import LibraryError, Provenance, SkillLibrary
from skills.schema import validate_skill_dict


class FakeLearners:
    """Stands in for the learner group inside CheckpointManager tests: writes one model file."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def save(self, root: Path) -> str:
        if self.fail:
            raise OSError("disk full while writing the model")
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "weights.bin").write_bytes(b"w" * 64)
        return str(root)


def flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


# --- checkpoints -------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [truncate, flip])
def test_corrupt_checkpoint_state_falls_back_to_previous(tmp_path, caplog, damage):
    ckpt = CheckpointManager(tmp_path / "checkpoints", keep=3)
    for it in (1, 2):
        ckpt.save(it, FakeLearners(), {"iteration": it, "sampler": {"epoch": 0, "position": it}})
    damage(tmp_path / "checkpoints" / "iter-00002" / STATE)
    with caplog.at_level(logging.ERROR, logger="evorl.checkpoint"):
        found = ckpt.latest()
    assert found is not None
    folder, state = found
    assert folder == tmp_path / "checkpoints" / "iter-00001"
    assert state["iteration"] == 1 and state["sampler"]["position"] == 1
    assert str(tmp_path / "checkpoints" / "iter-00002" / STATE) in caplog.text


@pytest.mark.parametrize("damage", [truncate, flip])
def test_torn_model_weights_fall_back_to_previous(tmp_path, caplog, damage):
    """Every file of a checkpoint is in its checksummed manifest: weights and optimizer shards too."""
    ckpt = CheckpointManager(tmp_path / "c", keep=3)
    for it in (1, 2):
        ckpt.save(it, FakeLearners(), {"iteration": it})
    damage(tmp_path / "c" / "iter-00002" / "model" / "weights.bin")
    with caplog.at_level(logging.ERROR, logger="evorl.checkpoint"):
        assert ckpt.latest()[1] == {"iteration": 1}
    assert "weights.bin: does not match its manifest checksum" in caplog.text
    (tmp_path / "c" / "iter-00001" / "model" / "weights.bin").unlink()
    assert ckpt.latest() is None


def test_keep_last_never_deletes_the_checkpoint_just_written(tmp_path):
    ckpt = CheckpointManager(tmp_path / "c", keep=1)
    for it in (5, 6):  # an older run's later checkpoints
        ckpt.save(it, FakeLearners(), {"iteration": it})
    ckpt.save(1, FakeLearners(), {"iteration": 1})
    assert (tmp_path / "c" / "iter-00001").is_dir()
    assert (tmp_path / "c" / "latest").read_text().strip() == "iter-00001"


def test_only_corrupt_checkpoints_means_no_checkpoint(tmp_path):
    ckpt = CheckpointManager(tmp_path / "c", keep=2)
    ckpt.save(1, FakeLearners(), {"iteration": 1})
    truncate(tmp_path / "c" / "iter-00001" / STATE, keep=0.0)
    assert ckpt.latest() is None


def test_failed_save_deletes_nothing_and_leaves_no_half_checkpoint(tmp_path):
    ckpt = CheckpointManager(tmp_path / "c", keep=1)
    ckpt.save(1, FakeLearners(), {"iteration": 1})
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(2, FakeLearners(fail=True), {"iteration": 2})
    assert [p.name for p in ckpt.published()] == ["iter-00001"]
    _, state = ckpt.latest()
    assert state == {"iteration": 1}
    # a crash between writing the folder and publishing it leaves a .tmp- folder that is never resumed
    (tmp_path / "c" / ".tmp-iter-00003" / "model").mkdir(parents=True)
    assert ckpt.latest()[1] == {"iteration": 1}


# --- skill library -----------------------------------------------------------------------------------
def skill(i: int):
    return validate_skill_dict(
        {
            "name": f"skill-{i}",
            "description": f"does thing {i}",
            "metadata": {
                "source_task_type": "pick_and_place_simple",
                "success_signal": "done",
                "abstraction_level": "medium",
                "skill_category": "navigation",
            },
            "skill_overview": "overview",
            "when_to_use": "when needed",
            "inputs_to_identify": ["object"],
            "workflow": [
                {"step": 1, "goal": "g", "action": "a", "tools_or_strategy": "t", "completion_condition": "c"}
            ],
            "decision_rules": ["rule"],
            "error_handling": [{"error": "e", "cause": "c", "response": "r"}],
            "output_requirements": "none",
        }
    )


@pytest.mark.parametrize("damage", [truncate, flip])
def test_corrupt_library_version_falls_back_and_names_path(tmp_path, damage):
    lib = SkillLibrary(tmp_path / "skills")
    lib.add(skill(1), Provenance("t1", 0, 0))
    lib.save()
    lib.add(skill(2), Provenance("t2", 1, 1))
    v2 = lib.save()
    damage(v2)
    again = SkillLibrary.open(tmp_path / "skills")
    assert again.load_report.version == 1 and set(again.entries) == {skill(1).skill_id}
    assert [p for p, _ in again.load_report.skipped] == [str(v2)]
    # the next save does not reuse the damaged version's number: nothing is overwritten
    again.add(skill(3), Provenance("t3", 2, 2))
    v3 = again.save()
    assert v3.name == "library-v3.parquet" and v2.exists()
    assert set(SkillLibrary.open(tmp_path / "skills").entries) == {skill(1).skill_id, skill(3).skill_id}


def test_corrupt_manifest_falls_back_to_snapshot_files(tmp_path):
    lib = SkillLibrary(tmp_path / "skills")
    lib.add(skill(1), Provenance("t1", 0, 0))
    lib.save()
    truncate(tmp_path / "skills" / "manifest.json")
    again = SkillLibrary.open(tmp_path / "skills")
    assert set(again.entries) == {skill(1).skill_id}
    assert any("manifest.json" in p for p, _ in again.load_report.skipped)


def test_every_library_version_corrupt_is_an_error_naming_them(tmp_path):
    lib = SkillLibrary(tmp_path / "skills")
    lib.add(skill(1), Provenance("t1", 0, 0))
    v1 = lib.save()
    truncate(v1)
    with pytest.raises(LibraryError, match="library-v1.parquet"):
        SkillLibrary.open(tmp_path / "skills")


# --- trajectory Parquet ------------------------------------------------------------------------------
def test_trajectory_parquet_damage_is_detected_and_skipped(tmp_path):
    folder = tmp_path / "trajectories"
    tables = {}
    for it in range(3):
        t = pa.table(
            {"episode_id": [f"e{it}-{k}" for k in range(200)], "reward": [float(k) for k in range(200)]}
        )
        write_parquet(folder / f"iter-{it:05d}.parquet", t)
        tables[it] = t
    assert not list(folder.glob("*.tmp"))
    truncate(folder / "iter-00001.parquet")
    flip(folder / "iter-00002.parquet", at=0.3)  # inside a data page: only the page CRC sees it
    got, skipped = read_parquet_dir(folder)
    assert len(got) == 1 and got[0].equals(tables[0])
    assert [p for p, _ in skipped] == [str(folder / "iter-00001.parquet"), str(folder / "iter-00002.parquet")]
    assert "CRC" in skipped[1][1] or "checksum" in skipped[1][1].lower()
    with pytest.raises(CorruptFileError, match="iter-00001.parquet"):
        read_parquet(folder / "iter-00001.parquet")


def test_failed_parquet_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "iter-00000.parquet"
    old = pa.table({"x": [1, 2, 3]})
    write_parquet(path, old)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        write_parquet(path, pa.table({"x": [4]}))
    monkeypatch.undo()
    assert read_parquet(path).equals(old)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (needs root: CI runs as root; skipped elsewhere)."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_full_disk_is_named_and_leaves_the_old_version_and_no_fragment(full_disk):
    from cluster.core.storage import DiskFullError, append_line, atomic_write_bytes, read_json, write_json

    write_json(full_disk / "state.json", {"iteration": 1})
    with pytest.raises(DiskFullError, match="disk full while writing; the previous version is intact"):
        atomic_write_bytes(full_disk / "state.json", b"x" * 200_000)
    assert read_json(full_disk / "state.json") == {"iteration": 1}
    assert sorted(p.name for p in full_disk.iterdir()) == ["state.json"]  # no temp file left
    log = full_disk / "metrics.jsonl"
    append_line(log, '{"iteration": 1}')
    with pytest.raises(DiskFullError, match="disk full while appending"):
        append_line(log, '{"huge": "' + "y" * 200_000 + '"}')
    assert log.read_text() == '{"iteration": 1}\n'  # the cut line is gone: the next record stays readable
