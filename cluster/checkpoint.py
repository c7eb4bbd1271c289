"""Run checkpoints, one layout and one numbering: <run>/checkpoints/iter-NNNNN/ holding
    model/               the learner's folder: HF model (loadable as is), deepspeed/ shards, learner_state.json
    trainer_state.json   iteration, policy version, sampler position, library version (checksummed)
    MANIFEST.json        sha256 of every file above, written last
A checkpoint is written under a temporary name, fsynced, renamed into place (parent folder fsynced)
and then named by the `latest` pointer. "Complete" means its manifest verifies: `--resume`,
`evorl serve`, `evorl eval` and `evorl export` all take the newest complete one, and a torn or
altered one is reported and skipped. Keep-last-K never deletes the checkpoint just written.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from cluster.core.storage import (
    CorruptFileError,
    atomic_write_text,
    fsync_tree,
    publish_dir,
    read_json,
    verify_manifest,
    write_json,
    write_manifest,
)

log = logging.getLogger("evorl.checkpoint")
STATE = "trainer_state.json"
MODEL = "model"
LATEST = "latest"
_NAME = re.compile(r"^iter-(\d{5,})$")


def checkpoint_name(iteration: int) -> str:
    return f"iter-{iteration:05d}"


class CheckpointManager:
    def __init__(self, root: Path, keep: int = 2) -> None:
        self.root, self.keep = Path(root), keep

    def save(self, iteration: int, learners, state: dict) -> Path:
        final = self.root / checkpoint_name(iteration)
        tmp = self.root / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        learners.save(str(tmp / MODEL))
        write_json(tmp / STATE, state)
        write_manifest(tmp)
        fsync_tree(tmp)
        publish_dir(tmp, final)
        atomic_write_text(self.root / LATEST, final.name + "\n")
        for old in self.published()[: -self.keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def published(self) -> list[Path]:
        """Published checkpoint folders, oldest first (by iteration number)."""
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), p) for p in self.root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))
        ]
        return [p for _, p in sorted(found)]

    def latest(self) -> tuple[Path, dict] | None:
        """(folder, trainer state) of the newest complete checkpoint; a corrupt one is reported and
        skipped."""
        for path in reversed(self.published()):
            try:
                verify_manifest(path)
                return path, read_json(path / STATE)
            except (CorruptFileError, OSError) as e:
                log.error("skipping incomplete or corrupt checkpoint %s: %s", path.name, e)
        return None


def resolve_model_dir(path: str | Path) -> Path:
    """An HF model folder for any checkpoint form: an HF folder itself, a checkpoint (iter-N), a
    checkpoints root or a run folder (its newest complete checkpoint). FileNotFoundError otherwise."""
    p = Path(path)
    if (p / "config.json").exists():
        return p
    for root in (p, p / "checkpoints"):
        if (root / MODEL / "config.json").exists() and _NAME.match(root.name):
            verify_manifest(root)
            return root / MODEL
        found = CheckpointManager(root).latest() if root.is_dir() else None
        if found is not None:
            return found[0] / MODEL
    raise FileNotFoundError(
        f"{path}: no HF model folder (config.json) here, and no complete checkpoint in it or in its checkpoints/"
    )
