"""Mind2Web's official JSON files: find them, stream and validate them, cache them as Parquet.

The release lays a split out as `data/<split>/*.json` (each file a JSON array of task records, often
hundreds of MB because of `raw_html`). We parse one record at a time (ijson) so memory stays bounded,
validate every field of the official format, and write one Parquet file per source file on first
use, keyed by the source's size and mtime so an edited file is re-read. Later reads go through
`TaskStore`, which loads one row group at a time.

The Hugging Face Hub's release (one Parquet row per action, `data/<split>-*.parquet`) is found here
too and read by `envs.mind2web.hub` into the same records and the same cache format, so nothing
downstream knows which release a folder holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.core.storage import atomic_write

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "test_task", "test_website", "test_domain")
OPS: tuple[str, ...] = ("CLICK", "TYPE", "SELECT")
# the Hub's Parquet shards of a split, tried after the JSON release's layouts
HUB_PATTERNS = ("data/{split}-*.parquet", "{split}-*.parquet", "data/{split}/*.parquet", "{split}/*.parquet")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
_ROWS_PER_GROUP = 16  # records per Parquet row group: bounds memory when caching and reading


class Mind2WebFormatError(ValueError):
    """A source file or record breaks the official format; names file, record and field."""

    def __init__(
        self,
        file: str | Path,
        msg: str,
        index: int | None = None,
        annotation_id: str = "",
        field: str = "",
        kind: str = "record",  # "row" for the Hub's Parquet files (one row per action)
    ) -> None:
        self.file, self.index, self.annotation_id, self.field = str(file), index, annotation_id, field
        where = str(file)
        if index is not None:
            where += f": {kind} {index}"
        if annotation_id:
            where += f" (annotation_id={annotation_id!r})"
        if field:
            where += f": field {field}"
        super().__init__(f"{where}: {msg}")


@dataclass(frozen=True)
class Candidate:
    tag: str
    attributes: str  # the official JSON string of the element's attributes
    backend_node_id: str
    is_original_target: bool
    is_top_level_target: bool

    def attribute_dict(self) -> dict[str, Any]:
        return json.loads(self.attributes)


@dataclass(frozen=True)
class Operation:
    op: str  # CLICK | TYPE | SELECT (HOVER and ENTER are folded into CLICK by the release)
    original_op: str
    value: str


@dataclass(frozen=True)
class ActionStep:
    action_uid: str
    cleaned_html: str
    operation: Operation
    pos_candidates: tuple[Candidate, ...]
    neg_candidates: tuple[Candidate, ...]
    raw_html: str | None = None


@dataclass(frozen=True)
class TaskRecord:
    annotation_id: str
    website: str
    domain: str
    subdomain: str
    confirmed_task: str
    action_reprs: tuple[str, ...]
    actions: tuple[ActionStep, ...]
    source: str = ""  # file the record came from (for error messages)
    record_index: int = -1

    @property
    def task_type(self) -> str:
        return f"{self.domain}/{self.subdomain}"


# ----------------------------------------------------------------------------------------- validation


@dataclass
class _Where:
    file: str
    index: int
    annotation_id: str = ""
    kind: str = "record"

    def fail(self, field: str, msg: str) -> Mind2WebFormatError:
        return Mind2WebFormatError(self.file, msg, self.index, self.annotation_id, field, self.kind)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _get(
    obj: dict, key: str, typ: type | tuple[type, ...], where: _Where, path: str, optional: bool = False
) -> Any:
    name = _join(path, key)
    if key not in obj:
        if optional:
            return None
        raise where.fail(name, "missing")
    val = obj[key]
    if optional and val is None:
        return None
    # bool is an int subclass: never accept it where a number/str is expected, or vice versa
    if not isinstance(val, typ) or (isinstance(val, bool) and bool not in _as_tuple(typ)):
        raise where.fail(name, f"expected {_type_name(typ)}, got {type(val).__name__}")
    return val


def _as_tuple(typ: type | tuple[type, ...]) -> tuple[type, ...]:
    return typ if isinstance(typ, tuple) else (typ,)


def _type_name(typ: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(typ))


def _candidate(obj: Any, where: _Where, path: str) -> Candidate:
    if not isinstance(obj, dict):
        raise where.fail(path, f"expected object, got {type(obj).__name__}")
    attributes = _get(obj, "attributes", str, where, path)
    try:
        parsed = json.loads(attributes)
    except json.JSONDecodeError as e:
        raise where.fail(_join(path, "attributes"), f"not a JSON string ({e.msg})") from None
    if not isinstance(parsed, dict):
        raise where.fail(_join(path, "attributes"), f"expected a JSON object, got {type(parsed).__name__}")
    node_id = _get(obj, "backend_node_id", (str, int), where, path)  # official: str; int tolerated
    if str(node_id) == "":
        raise where.fail(_join(path, "backend_node_id"), "empty")
    return Candidate(
        tag=_get(obj, "tag", str, where, path),
        attributes=attributes,
        backend_node_id=str(node_id),
        is_original_target=_get(obj, "is_original_target", bool, where, path),
        is_top_level_target=_get(obj, "is_top_level_target", bool, where, path),
    )


def _action(obj: Any, where: _Where, path: str) -> ActionStep:
    if not isinstance(obj, dict):
        raise where.fail(path, f"expected object, got {type(obj).__name__}")
    op_obj = _get(obj, "operation", dict, where, path)
    op_path = _join(path, "operation")
    op = _get(op_obj, "op", str, where, op_path)
    if op not in OPS:
        raise where.fail(f"{op_path}.op", f"expected one of {list(OPS)}, got {op!r}")
    operation = Operation(
        op=op,
        original_op=_get(op_obj, "original_op", str, where, op_path),
        value=_get(op_obj, "value", str, where, op_path),
    )
    cands = {}
    for key in ("pos_candidates", "neg_candidates"):
        items = _get(obj, key, list, where, path)
        cands[key] = tuple(_candidate(c, where, f"{_join(path, key)}[{i}]") for i, c in enumerate(items))
    return ActionStep(
        action_uid=_get(obj, "action_uid", str, where, path),
        cleaned_html=_get(obj, "cleaned_html", str, where, path),
        operation=operation,
        pos_candidates=cands["pos_candidates"],
        neg_candidates=cands["neg_candidates"],
        raw_html=_get(obj, "raw_html", str, where, path, optional=True),
    )


def validate_record(obj: Any, file: str | Path, index: int) -> TaskRecord:
    """One official task record -> TaskRecord, or Mind2WebFormatError naming file/record/field."""
    where = _Where(str(file), index)
    if not isinstance(obj, dict):
        raise where.fail("", f"expected a task object, got {type(obj).__name__}")
    where.annotation_id = _get(obj, "annotation_id", str, where, "")
    reprs = _get(obj, "action_reprs", list, where, "")
    for i, r in enumerate(reprs):
        if not isinstance(r, str):
            raise where.fail(f"action_reprs[{i}]", f"expected str, got {type(r).__name__}")
    actions = _get(obj, "actions", list, where, "")
    if not actions:
        raise where.fail("actions", "empty: a task needs at least one action")
    if len(reprs) != len(actions):
        raise where.fail("action_reprs", f"{len(reprs)} entries but {len(actions)} actions")
    return TaskRecord(
        annotation_id=where.annotation_id,
        website=_get(obj, "website", str, where, ""),
        domain=_get(obj, "domain", str, where, ""),
        subdomain=_get(obj, "subdomain", str, where, ""),
        confirmed_task=_get(obj, "confirmed_task", str, where, ""),
        action_reprs=tuple(reprs),
        actions=tuple(_action(a, where, f"actions[{i}]") for i, a in enumerate(actions)),
        source=str(file),
        record_index=index,
    )


# ----------------------------------------------------------------------------------------- streaming


def iter_json_records(path: str | Path) -> Iterator[TaskRecord]:
    """Stream the task records of one official JSON file (a top-level array), validating each."""
    path = Path(path)
    try:
        import ijson
    except ImportError:  # ijson comes with vLLM; without it we read the whole file (logged)
        ijson = None
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:].lstrip()
        if not head.startswith(b"["):
            raise Mind2WebFormatError(path, "expected a JSON array of task records at the top level")
        f.seek(0)
        if ijson is None:
            log.warning("ijson not installed: reading %s in one piece", path)
            try:
                items: Any = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise Mind2WebFormatError(path, f"invalid JSON: {e}") from None
            for i, obj in enumerate(items):
                yield validate_record(obj, path, i)
            return
        index = 0
        it = ijson.items(f, "item", use_float=True)
        while True:
            try:
                obj = next(it)
            except StopIteration:
                return
            except (ijson.JSONError, UnicodeDecodeError) as e:
                raise Mind2WebFormatError(path, f"invalid JSON: {e}", index) from None
            yield validate_record(obj, path, index)
            index += 1


def find_split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The files of a split. The JSON release first: its layout (`data/<split>/*.json`), `<split>/*.json`,
    or flat (`<split>.json`, `<split>_*.json` directly in data_dir); else the Hub's Parquet shards
    (`data/<split>-*.parquet`, `<split>-*.parquet`, `data/<split>/*.parquet`, `<split>/*.parquet`)."""
    if not _SPLIT_NAME.match(split):
        raise ValueError(f"bad split name {split!r}: expected letters, digits, '_' or '-'")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Mind2Web data folder not found: {root}")
    for folder in (root / "data" / split, root / split):
        if folder.is_dir():
            files = sorted(folder.glob("*.json"))
            if files:
                return files
    flat = sorted({*root.glob(f"{split}.json"), *root.glob(f"{split}_*.json")})
    if flat:
        return flat
    for pattern in HUB_PATTERNS:
        shards = sorted(root.glob(pattern.format(split=split)))
        if shards:
            return shards
    raise FileNotFoundError(
        f"no files for split {split!r} under {root} (looked for the JSON release in data/{split}/*.json, "
        f"{split}/*.json, {split}.json, {split}_*.json and for the Hub's Parquet in "
        + ", ".join(p.format(split=split) for p in HUB_PATTERNS)
        + ")"
    )


def available_splits(data_dir: str | Path) -> list[str]:
    out = []
    for split in SPLITS:
        try:
            find_split_files(data_dir, split)
        except FileNotFoundError:
            continue
        out.append(split)
    return out


# ----------------------------------------------------------------------------------------- parquet

_CANDIDATE = pa.struct(
    [
        ("tag", pa.string()),
        ("attributes", pa.string()),
        ("backend_node_id", pa.string()),
        ("is_original_target", pa.bool_()),
        ("is_top_level_target", pa.bool_()),
    ]
)
_OPERATION = pa.struct([("op", pa.string()), ("original_op", pa.string()), ("value", pa.string())])
_ACTION = pa.struct(
    [
        ("action_uid", pa.string()),
        ("raw_html", pa.large_string()),
        ("cleaned_html", pa.large_string()),
        ("operation", _OPERATION),
        ("pos_candidates", pa.list_(_CANDIDATE)),
        ("neg_candidates", pa.list_(_CANDIDATE)),
    ]
)
TASK_SCHEMA = pa.schema(
    [
        ("annotation_id", pa.string()),
        ("website", pa.string()),
        ("domain", pa.string()),
        ("subdomain", pa.string()),
        ("confirmed_task", pa.string()),
        ("action_reprs", pa.list_(pa.string())),
        ("actions", pa.list_(_ACTION)),
        ("source", pa.string()),
        ("record_index", pa.int32()),
    ]
)
INDEX_COLUMNS = ["annotation_id", "website", "domain", "subdomain", "confirmed_task"]


def _record_row(r: TaskRecord, keep_raw_html: bool) -> dict:
    def cand(c: Candidate) -> dict:
        return {
            "tag": c.tag,
            "attributes": c.attributes,
            "backend_node_id": c.backend_node_id,
            "is_original_target": c.is_original_target,
            "is_top_level_target": c.is_top_level_target,
        }

    return {
        "annotation_id": r.annotation_id,
        "website": r.website,
        "domain": r.domain,
        "subdomain": r.subdomain,
        "confirmed_task": r.confirmed_task,
        "action_reprs": list(r.action_reprs),
        "actions": [
            {
                "action_uid": a.action_uid,
                "raw_html": a.raw_html if keep_raw_html else None,
                "cleaned_html": a.cleaned_html,
                "operation": {
                    "op": a.operation.op,
                    "original_op": a.operation.original_op,
                    "value": a.operation.value,
                },
                "pos_candidates": [cand(c) for c in a.pos_candidates],
                "neg_candidates": [cand(c) for c in a.neg_candidates],
            }
            for a in r.actions
        ],
        "source": r.source,
        "record_index": r.record_index,
    }


def record_from_row(row: dict) -> TaskRecord:
    """A Parquet row (already validated when cached) -> TaskRecord."""

    def cands(items: list[dict]) -> tuple[Candidate, ...]:
        return tuple(Candidate(**c) for c in items)

    return TaskRecord(
        annotation_id=row["annotation_id"],
        website=row["website"],
        domain=row["domain"],
        subdomain=row["subdomain"],
        confirmed_task=row["confirmed_task"],
        action_reprs=tuple(row["action_reprs"]),
        actions=tuple(
            ActionStep(
                action_uid=a["action_uid"],
                cleaned_html=a["cleaned_html"],
                operation=Operation(**a["operation"]),
                pos_candidates=cands(a["pos_candidates"]),
                neg_candidates=cands(a["neg_candidates"]),
                raw_html=a["raw_html"],
            )
            for a in row["actions"]
        ),
        source=row["source"],
        record_index=row["record_index"],
    )


def default_cache_dir() -> Path:
    base = os.environ.get("EVORL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "evorl")
    return Path(base) / "mind2web"


def cache_path(source: str | Path, cache_dir: str | Path) -> Path:
    """`<stem>-<path hash>-<size>-<mtime_ns>.parquet`: a changed source gets a new cache file."""
    source = Path(source).resolve()
    st = source.stat()
    tag = hashlib.sha256(str(source).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{source.stem}-{tag}-{st.st_size}-{st.st_mtime_ns}.parquet"


def write_parquet(records: Iterator[TaskRecord], dest: Path, keep_raw_html: bool = False) -> int:
    """Write records to `dest` atomically (cluster.core.storage.atomic_write); returns the record count."""
    n = 0

    def write(fh) -> None:
        nonlocal n
        with pq.ParquetWriter(fh, TASK_SCHEMA, compression="zstd") as writer:
            batch: list[dict] = []
            for r in records:
                batch.append(_record_row(r, keep_raw_html))
                n += 1
                if len(batch) == _ROWS_PER_GROUP:
                    writer.write_table(pa.Table.from_pylist(batch, schema=TASK_SCHEMA))
                    batch = []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=TASK_SCHEMA))

    atomic_write(dest, write)
    return n


def cached_parquet(
    source: str | Path, cache_dir: str | Path | None = None, keep_raw_html: bool = False
) -> Path:
    """Parquet copy of one source JSON file, written on first use; a stale copy is replaced."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache_path(source, cache_dir)
    if dest.exists():
        return dest
    log.info("building the Parquet cache of %s (first use; validates every record)", source)
    n = write_parquet(iter_json_records(source), dest, keep_raw_html)
    prefix = dest.name.rsplit("-", 2)[0] + "-"
    for old in cache_dir.glob(prefix + "*.parquet"):
        if old != dest:
            old.unlink(missing_ok=True)
    log.info("cached %d Mind2Web tasks from %s at %s", n, source, dest)  # first use only
    return dest


def split_parquets(data_dir: str | Path, split: str, cache_dir: str | Path | None = None) -> list[Path]:
    """Parquet caches of every file of a split; annotation_ids must be unique across the split.
    The Hub's shards get one cache for the whole split: a task's rows may straddle two shards."""
    files = find_split_files(data_dir, split)
    if files[0].suffix == ".parquet":
        from envs.mind2web.hub import cached_hub_parquet

        return [cached_hub_parquet(files, split, cache_dir)]
    out = [cached_parquet(f, cache_dir) for f in files]
    seen: dict[str, Path] = {}
    for p in out:
        for aid in pq.read_table(p, columns=["annotation_id"]).column(0).to_pylist():
            if aid in seen:
                raise Mind2WebFormatError(
                    p, f"annotation_id {aid!r} also in {seen[aid]} (split {split!r})", field="annotation_id"
                )
            seen[aid] = p
    return out


def iter_records(path: str | Path) -> Iterator[TaskRecord]:
    """Records of a cached Parquet file, of an official JSON file, or of one Hub shard (whose tasks
    must then lie wholly in it: use `hub.iter_hub_records` on all of a split's shards)."""
    path = Path(path)
    if path.suffix == ".parquet":
        pf = pq.ParquetFile(path)
        if "actions" not in pf.schema_arrow.names:  # not our cache: one row per action
            from envs.mind2web.hub import iter_hub_records

            yield from iter_hub_records([path])
            return
        for g in range(pf.num_row_groups):
            for row in pf.read_row_group(g).to_pylist():
                yield record_from_row(row)
    else:
        yield from iter_json_records(path)


@dataclass
class TaskStore:
    """Loads single tasks by ref `<file>#<annotation_id>`; keeps an id -> row-group index per file so a
    lookup reads one row group, not the whole file. Owned by one env (no module-level cache)."""

    _index: dict[str, dict[str, int]] = field(default_factory=dict)
    _group: tuple[str, int, dict[str, TaskRecord]] | None = None

    def get(self, ref: str) -> TaskRecord:
        file, sep, aid = ref.rpartition("#")
        if not sep or not file or not aid:
            raise ValueError(f"bad Mind2Web task ref {ref!r}: expected '<file>#<annotation_id>'")
        if not file.endswith(".parquet"):
            for r in iter_json_records(file):
                if r.annotation_id == aid:
                    return r
            raise KeyError(f"annotation_id {aid!r} not in {file}")
        index = self._index.get(file)
        if index is None:
            index = self._build_index(file)
            self._index[file] = index
        if aid not in index:
            raise KeyError(f"annotation_id {aid!r} not in {file}")
        g = index[aid]
        if self._group is None or self._group[:2] != (file, g):
            rows = pq.ParquetFile(file).read_row_group(g).to_pylist()
            self._group = (file, g, {row["annotation_id"]: record_from_row(row) for row in rows})
        return self._group[2][aid]

    @staticmethod
    def _build_index(file: str) -> dict[str, int]:
        pf = pq.ParquetFile(file)
        index = {}
        for g in range(pf.num_row_groups):
            for aid in pf.read_row_group(g, columns=["annotation_id"]).column(0).to_pylist():
                index[aid] = g
        return index
