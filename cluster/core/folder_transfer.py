"""A folder between nodes through the Ray object store: checkpoints whose learner ranks run on nodes
that do not mount the driver's run folder (learner/group.py).

`pack` puts every file as chunks (at most CHUNK bytes each, so no single object is huge) and returns
{relative path: [ObjectRef]}; `unpack` writes such a mapping into a folder, chunk by chunk, each file
atomically. `rank_files` keeps what one learner rank needs to resume: its own ZeRO shards, never
another rank's.
"""

from __future__ import annotations

import re
from pathlib import Path

CHUNK = 256 * 2**20
_ZERO_SHARD = re.compile(r"zero_pp_rank_(\d+)_")


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def pack(folder: str | Path, only: list[str] | None = None) -> dict[str, list]:
    import ray

    folder = Path(folder)
    out: dict[str, list] = {}
    for rel in files_under(folder) if only is None else only:
        refs = []
        with open(folder / rel, "rb") as f:
            while chunk := f.read(CHUNK):
                refs.append(ray.put(chunk))
        out[rel] = refs
    return out


def unpack(files: dict[str, list], dest: str | Path) -> int:
    """Write the packed files under `dest`; returns the bytes written."""
    import ray

    from cluster.core.storage import atomic_write

    dest = Path(dest)
    total = 0
    for rel, refs in files.items():
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"packed file {rel!r}: not a path inside the folder")

        def write(f, refs=refs) -> None:
            for ref in refs:  # one chunk in memory at a time
                f.write(ray.get(ref))

        atomic_write(dest / p, write)
        total += (dest / p).stat().st_size
    return total


def rank_files(paths: list[str], rank: int, top: tuple[str, ...], prefix: str = "deepspeed/") -> list[str]:
    """What a resuming rank reads: the DeepSpeed files under `prefix` except other ranks' ZeRO shards,
    and the top-level files named in `top` (not the HF export, which it never reads)."""
    keep = []
    for rel in paths:
        if rel.startswith(prefix):
            m = _ZERO_SHARD.search(rel)
            if m is None or int(m.group(1)) == rank:
                keep.append(rel)
        elif rel in top:
            keep.append(rel)
    return keep
