"""Checkpoint folders: atomic publish (tmp dir + fsync + rename), a `latest` pointer, keep-last-K.

Layout of one checkpoint `<root>/step-<version>`: an HF model folder at the top (config.json,
*.safetensors, tokenizer) so vLLM and transformers load it as is; `deepspeed/` with the engine and
optimizer state for resume; `learner_state.json` with the policy version.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from cluster.storage import atomic_write_text, fsync_dir, fsync_tree

_STEP = re.compile(r"^step-(\d+)$")


def step_name(version: int) -> str:
    return f"step-{version:08d}"


def tmp_checkpoint_dir(root: str | Path, version: int) -> Path:
    return Path(root) / f".tmp-{step_name(version)}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Published checkpoints under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found)]


def finalize_checkpoint(root: str | Path, tmp: Path, version: int, keep: int) -> Path:
    """Publish `tmp` as <root>/step-<version>, point `latest` at it, delete all but the newest `keep`."""
    root = Path(root)
    final = root / step_name(version)
    fsync_tree(tmp)
    if final.exists():  # same version saved again (e.g. no step in between): replace it
        old = root / f".old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(root)
    atomic_write_text(root / "latest", final.name + "\n")
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or a root: the one `latest` names, else the newest step-*."""
    p = Path(path)
    if (p / "learner_state.json").exists():
        return p
    latest = p / "latest"
    if latest.exists():
        c = p / latest.read_text().strip()
        if (c / "learner_state.json").exists():
            return c
    found = list_checkpoints(p)
    if not found:
        raise FileNotFoundError(f"{p}: not a learner checkpoint and holds no step-* checkpoints")
    return found[-1]
