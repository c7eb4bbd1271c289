"""Run checkpoints: <run>/checkpoints/iter-NNNNN/{model (HF + DeepSpeed state), trainer_state.json}.

A checkpoint folder is written under a temporary name and renamed into place when complete; the
newest folder whose state file verifies is the one resumed; older ones beyond `keep` are removed only
after the new one is in place.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from cluster.storage import CorruptFileError, publish_dir, read_json, write_json

log = logging.getLogger("evorl.checkpoint")
STATE = "trainer_state.json"


class CheckpointManager:
    def __init__(self, root: Path, keep: int = 2) -> None:
        self.root, self.keep = Path(root), keep

    def save(self, iteration: int, learners, state: dict) -> Path:
        final = self.root / f"iter-{iteration:05d}"
        tmp = self.root / f".tmp-iter-{iteration:05d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        learners.save(tmp / "model")
        write_json(tmp / STATE, state)
        publish_dir(tmp, final)
        for old in self.complete()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def complete(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.glob("iter-*") if (p / STATE).exists())

    def latest(self) -> tuple[Path, dict] | None:
        """Newest checkpoint whose state verifies; a corrupt one is reported and skipped."""
        for path in reversed(self.complete()):
            try:
                return path / "model", read_json(path / STATE)
            except CorruptFileError as e:
                log.error("skipping corrupt checkpoint: %s", e)
        return None
