"""Atomic, checksummed files: every file the system writes goes through here.

write: temp file in the same folder + fsync + os.replace, so a crash leaves the old version or the
new one, never half of either. JSON state carries a sha256 of its payload, checked on read.
"""

from __future__ import annotations

import errno
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


class DiskFullError(OSError):
    """A write ran out of space (ENOSPC); the previous version of the file is intact."""


MAX_JSON_DEPTH = 64  # nothing we write nests deeper; anything that does is refused before parsing
MAX_PARQUET_EXPANSION = 2**30  # uncompressed bytes a Parquet file may claim before it is read


def json_depth(text: str) -> int:
    """Deepest bracket nesting outside JSON strings (a linear scan, no recursion)."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(text: str, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads with a nesting limit: CorruptFileError naming `where` for nesting past `max_depth`
    (instead of a RecursionError) or for invalid JSON."""
    if json_depth(text) > max_depth:
        raise CorruptFileError(f"{where}: JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CorruptFileError(f"{where}: not valid JSON ({type(e).__name__}: {e})") from None


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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise DiskFullError(
                errno.ENOSPC, f"{path}: disk full while writing; the previous version is intact"
            ) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def append_line(path: str | Path, line: str) -> None:
    """Append one line as one write; a failed write (a full disk) is cut back off, so the file never
    ends in a fragment that would make the next record unreadable."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        except OSError as e:
            os.ftruncate(fd, size)
            if e.errno == errno.ENOSPC:
                raise DiskFullError(
                    errno.ENOSPC, f"{path}: disk full while appending; earlier lines intact"
                ) from e
            raise
    finally:
        os.close(fd)


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
        doc = parse_json(path.read_text(), str(path))
        payload = doc["payload"]
        digest = doc["sha256"]
    except (KeyError, TypeError, UnicodeDecodeError) as e:
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
        check_parquet_size(pq.ParquetFile(path).metadata, str(path), file_bytes=path.stat().st_size)
        return pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as e:
        raise CorruptFileError(f"{path}: unreadable Parquet ({type(e).__name__}: {e})") from None


def check_parquet_size(
    metadata, where: str, limit: int = MAX_PARQUET_EXPANSION, file_bytes: int | None = None
) -> None:
    """Refuse a Parquet file before any of it is decoded when its row groups claim more uncompressed
    bytes than `limit`, or (run-length / dictionary bombs: a few KB for millions of rows) more rows
    than 64 per byte of the file."""
    claimed = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if claimed > limit:
        raise CorruptFileError(f"{where}: row groups claim {claimed} uncompressed bytes (limit {limit})")
    if file_bytes is not None and metadata.num_rows > 64 * max(file_bytes, 1):
        raise CorruptFileError(
            f"{where}: {metadata.num_rows} rows in {file_bytes} bytes: refused (decompression bomb)"
        )


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
    if not (folder / MANIFEST).is_file():
        raise CorruptFileError(f"{folder}: no {MANIFEST} (an incomplete folder)")
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
