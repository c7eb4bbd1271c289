"""Atomic, checksummed files: every file the system writes goes through here.

write: temp file in the same folder + fsync + os.replace, so a crash leaves the old version or the
new one, never half of either. JSON state carries a sha256 of its payload, checked on read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


class CorruptFileError(ValueError):
    pass


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(fh)` on a temp file beside `path`, fsync, rename into place, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; these are ordinary data files
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync every file and folder under `path` (before a folder is renamed into place)."""
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def write_json(path: str | Path, payload: Any) -> None:
    body = json.dumps(payload, sort_keys=True, indent=1)
    digest = hashlib.sha256(body.encode()).hexdigest()
    atomic_write_bytes(
        path, json.dumps({"sha256": digest, "payload": payload}, sort_keys=True, indent=1).encode()
    )


def write_json_plain(path: str | Path, payload: Any) -> None:
    """Human-facing JSON (summaries): atomic, no checksum envelope."""
    atomic_write_bytes(path, (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """Read a file written by write_json; CorruptFileError (naming the path) if truncated or altered."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        payload = doc["payload"]
        digest = doc["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if hashlib.sha256(json.dumps(payload, sort_keys=True, indent=1).encode()).hexdigest() != digest:
        raise CorruptFileError(f"{path}: checksum mismatch")
    return payload


def publish_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written folder into place; the previous one is removed only after the rename."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".old-{final_dir.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)  # the rename itself must survive a power cut
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_parquet(path: str | Path, table) -> Path:
    """Atomic Parquet with per-page CRC checksums (so a flipped byte is caught on read, not only a cut)."""
    import pyarrow.parquet as pq

    return atomic_write(path, lambda f: pq.write_table(table, f, write_page_checksum=True))


def read_parquet(path: str | Path):
    """Read a Parquet file, verifying page checksums; CorruptFileError naming the path if unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        return pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as e:
        raise CorruptFileError(f"{path}: unreadable Parquet ({type(e).__name__}: {e})") from None


def read_parquet_dir(folder: str | Path, pattern: str = "*.parquet") -> tuple[list, list[tuple[str, str]]]:
    """Every readable Parquet file of a folder (sorted by name) and the (path, why) of each skipped one.

    A truncated or corrupted file (e.g. one iteration's trajectories cut by a crash) costs only itself.
    """
    tables, skipped = [], []
    for p in sorted(Path(folder).glob(pattern)):
        try:
            tables.append(read_parquet(p))
        except CorruptFileError as e:
            skipped.append((str(p), str(e)))
    return tables, skipped


MANIFEST = "MANIFEST.json"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """A checksummed list of every file under `folder` (path, bytes, sha256): written last, so a
    folder whose manifest verifies is complete."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = [{"path": str(p.relative_to(folder)), "bytes": p.stat().st_size, "sha256": _sha256_file(p)}
               for p in files]  # fmt: skip
    write_json(folder / MANIFEST, {"files": entries})
    return folder / MANIFEST


def verify_manifest(folder: str | Path) -> int:
    """Check every file of a folder against its manifest; CorruptFileError names the first one that
    is missing, resized or altered (or a manifest entry that points outside the folder). Returns the
    number of files checked."""
    folder = Path(folder).resolve()
    entries = read_json(folder / MANIFEST).get("files")
    if not isinstance(entries, list):
        raise CorruptFileError(f"{folder / MANIFEST}: no file list")
    for e in entries:
        try:
            rel, size, digest = str(e["path"]), int(e["bytes"]), str(e["sha256"])
        except (KeyError, TypeError, ValueError):
            raise CorruptFileError(f"{folder / MANIFEST}: malformed entry {e!r:.200}") from None
        path = (folder / rel).resolve()
        if not path.is_relative_to(folder):
            raise CorruptFileError(f"{folder / MANIFEST}: entry {rel!r} points outside the folder")
        if not path.is_file():
            raise CorruptFileError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != size or _sha256_file(path) != digest:
            raise CorruptFileError(f"{path}: does not match its manifest checksum")
    return len(entries)
