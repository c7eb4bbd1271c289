"""Mind2Web as the Hugging Face Hub ships it (osunlp/Multimodal-Mind2Web): one Parquet row per action.

A row carries its task's fields (`annotation_id, website, domain, subdomain, confirmed_task,
action_reprs`, repeated on every row of the task), the action's position `target_action_index` (a
string of digits on the Hub), `operation` (a JSON string) and `pos_candidates` / `neg_candidates`
(lists of JSON strings), next to `raw_html` and a `screenshot` we never read. We group the rows of a
split's shards back into the JSON release's `TaskRecord`s with the same checks, so the cache, env and
evaluation cannot tell the releases apart.

Memory: only the columns we use are read, one row group at a time in small batches; a task is kept
until its last row has been seen (rows of a task are contiguous on the Hub, so that is one task, but
a task may straddle two shards). Every file's footer is checked against its size first, so a small
file claiming huge row groups is refused before anything is allocated for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from envs.mind2web.loader import (
    ActionStep,
    Mind2WebFormatError,
    TaskRecord,
    _action,
    _get,
    _Where,
    default_cache_dir,
    write_parquet,
)

log = logging.getLogger(__name__)

TASK_FIELDS = ("website", "domain", "subdomain", "confirmed_task", "action_reprs")
COLUMNS = (
    "annotation_id",
    *TASK_FIELDS,
    "target_action_index",
    "action_uid",
    "cleaned_html",
    "operation",
    "pos_candidates",
    "neg_candidates",
)
MAX_ROW_GROUP_BYTES = 2 << 30  # uncompressed bytes of the columns we read, per row group
MAX_RATIO = 1000  # uncompressed / compressed: HTML and JSON compress ~5-30x; far beyond is a bomb or a lie
_BATCH = 16  # rows decoded to Python at a time


def check_file(path: Path, max_row_group_bytes: int = MAX_ROW_GROUP_BYTES) -> pq.ParquetFile:
    """Open a Hub shard after checking its footer: the columns we need exist, and every row group's
    claims (rows, byte ranges, uncompressed size) fit the file's real size and our memory bound."""
    size = path.stat().st_size
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise Mind2WebFormatError(path, f"not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise Mind2WebFormatError(
            path, f"missing column(s) {missing} of the Hub format (the file has {names})", field=missing[0]
        )
    md = pf.metadata
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        if rg.num_rows > size:
            raise Mind2WebFormatError(path, f"row group {g} claims {rg.num_rows} rows in a {size}-byte file")
        packed = unpacked = 0
        for j in range(rg.num_columns):
            col = rg.column(j)
            name = col.path_in_schema.split(".")[0]
            if name not in COLUMNS:
                continue
            starts = [o for o in (col.dictionary_page_offset, col.data_page_offset) if o is not None]
            start = min(starts, default=0)
            if start < 0 or start + col.total_compressed_size > size:
                raise Mind2WebFormatError(
                    path,
                    f"row group {g} claims bytes {start}..{start + col.total_compressed_size} for column "
                    f"{name} but the file has {size} bytes (truncated or corrupt)",
                    field=name,
                )
            packed += col.total_compressed_size
            unpacked += col.total_uncompressed_size
        if unpacked > max_row_group_bytes:
            raise Mind2WebFormatError(
                path,
                f"row group {g} holds {unpacked} bytes of the columns read (limit {max_row_group_bytes}): "
                "rewrite the file with smaller row groups",
            )
        if unpacked > MAX_RATIO * max(packed, 1):
            raise Mind2WebFormatError(
                path,
                f"row group {g} claims {unpacked} bytes from {packed} compressed (over {MAX_RATIO}x): "
                "refusing a corrupt or hostile file",
            )
    return pf


def _json(val: Any, where: _Where, name: str) -> Any:
    """A JSON-string field (the Hub's encoding) -> its object; an already-decoded struct passes."""
    if not isinstance(val, str):
        return val
    try:
        return json.loads(val)
    except json.JSONDecodeError as e:
        raise where.fail(name, f"not valid JSON ({e.msg} at char {e.pos})") from None


def _candidate(val: Any, where: _Where, name: str) -> Any:
    obj = _json(val, where, name)
    if isinstance(obj, dict) and isinstance(obj.get("attributes"), dict):  # decoded variant: re-encode
        obj = {**obj, "attributes": json.dumps(obj["attributes"])}
    return obj


def _index(val: Any, where: _Where, n: int) -> int:
    if isinstance(val, str) and val.isascii() and val.strip().isdigit():  # the Hub's dtype is string
        val = int(val)
    if not isinstance(val, int) or isinstance(val, bool):
        raise where.fail("target_action_index", f"expected an integer or a string of digits, got {val!r}")
    if not 0 <= val < n:
        raise where.fail("target_action_index", f"{val} is out of range: the task has {n} action_reprs")
    return val


def _row(obj: dict, where: _Where) -> tuple[dict, int, ActionStep]:
    """One row -> (its task fields, its target_action_index, its ActionStep), validated."""
    where.annotation_id = _get(obj, "annotation_id", str, where, "")
    task = {k: _get(obj, k, str, where, "") for k in TASK_FIELDS if k != "action_reprs"}
    reprs = _get(obj, "action_reprs", list, where, "")
    for i, r in enumerate(reprs):
        if not isinstance(r, str):
            raise where.fail(f"action_reprs[{i}]", f"expected str, got {type(r).__name__}")
    task["action_reprs"] = tuple(reprs)
    index = _index(obj["target_action_index"], where, len(reprs))
    act = {
        "action_uid": obj["action_uid"],
        "cleaned_html": obj["cleaned_html"],
        "operation": _json(obj["operation"], where, "operation"),
    }
    for key in ("pos_candidates", "neg_candidates"):
        items = _get(obj, key, list, where, "")
        act[key] = [_candidate(c, where, f"{key}[{i}]") for i, c in enumerate(items)]
    return task, index, _action(act, where, "")


@dataclass
class _Task:
    """A task whose rows are still coming in."""

    fields: dict
    file: str  # where its first row is
    row: int
    ordinal: int
    steps: dict[int, tuple[ActionStep, str, int]] = field(default_factory=dict)  # index -> step, file, row


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _rows(files: list[Path], pfs: list[pq.ParquetFile]) -> Iterator[tuple[_Where, dict]]:
    """Every row of every shard, row group by row group, a few rows at a time, needed columns only."""
    for path, pf in zip(files, pfs):
        row = 0
        for g in range(pf.num_row_groups):
            for batch in pf.iter_batches(_BATCH, row_groups=[g], columns=list(COLUMNS), use_threads=False):
                for obj in batch.to_pylist():
                    yield _Where(str(path), row, kind="row"), obj
                    row += 1


def iter_hub_records(
    files: Iterable[str | Path], max_row_group_bytes: int = MAX_ROW_GROUP_BYTES
) -> Iterator[TaskRecord]:
    """The tasks of a split's Hub shards (in order), each yielded once its last row is read.
    `source` is the file of a task's first row, `record_index` its position in the split."""
    files = [Path(f) for f in files]
    pfs = [check_file(p, max_row_group_bytes) for p in files]  # every footer before any data
    open_: dict[str, _Task] = {}
    done: dict[str, tuple[str, int]] = {}  # complete tasks: annotation_id -> their first row
    for where, obj in _rows(files, pfs):
        task, i, step = _row(obj, where)
        aid = where.annotation_id
        if aid in done:
            f0, r0 = done[aid]
            raise where.fail(
                "target_action_index",
                f"duplicate {i}: the task was already complete (first row: {f0} row {r0})",
            )
        t = open_.get(aid)
        if t is None:
            t = open_[aid] = _Task(task, where.file, where.index, len(open_) + len(done))
        for k in TASK_FIELDS:
            if task[k] != t.fields[k]:
                raise where.fail(
                    k,
                    f"{_short(task[k])} differs from the task's first row ({t.file} row {t.row}): {_short(t.fields[k])}",
                )
        if i in t.steps:
            raise where.fail(
                "target_action_index", f"duplicate {i}: also {t.steps[i][1]} row {t.steps[i][2]}"
            )
        t.steps[i] = (step, where.file, where.index)
        if len(t.steps) == len(t.fields["action_reprs"]):  # indexes are distinct and in range: 0..n-1
            del open_[aid]
            done[aid] = (t.file, t.row)
            yield TaskRecord(
                annotation_id=aid,
                **t.fields,
                actions=tuple(t.steps[k][0] for k in range(len(t.steps))),
                source=t.file,
                record_index=t.ordinal,
            )
    for aid, t in open_.items():  # a task still open at the end lacks rows: report the first
        n = len(t.fields["action_reprs"])
        missing = [k for k in range(n) if k not in t.steps]
        raise Mind2WebFormatError(
            t.file,
            f"the task has {n} action_reprs but no row for target_action_index {missing} "
            f"(rows for {sorted(t.steps)})",
            t.row,
            aid,
            "target_action_index",
            "row",
        )


def hub_cache_path(files: list[Path], split: str, cache_dir: Path) -> Path:
    """`m2w-hub-<split>-<folder hash>-<hash of the shards' names, sizes, mtimes>.parquet`."""
    folder = hashlib.sha256(str(files[0].resolve().parent).encode()).hexdigest()[:12]
    stats = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    tag = hashlib.sha256("\n".join(stats).encode()).hexdigest()[:12]
    return cache_dir / f"m2w-hub-{split}-{folder}-{tag}.parquet"


def cached_hub_parquet(files: list[Path], split: str, cache_dir: str | Path | None = None) -> Path:
    """One cache file (the loader's task schema) for all of a split's shards, written on first use;
    a changed, added or removed shard gives a new one and the stale one is deleted."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = hub_cache_path(files, split, cache_dir)
    if dest.exists():
        return dest
    log.info("building the Parquet cache of %s from %d Hub shards (first use)", split, len(files))
    n = write_parquet(iter_hub_records(files), dest)
    for old in cache_dir.glob(dest.name.rsplit("-", 1)[0] + "-*.parquet"):
        if old != dest:
            old.unlink(missing_ok=True)
    log.info("cached %d Mind2Web tasks from %d Hub shards of %s at %s", n, len(files), split, dest)
    return dest
