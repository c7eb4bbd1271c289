"""The persistent skill library: versioned Parquet snapshots, a statistical gate, near-duplicate merging.

Layout of a library folder:
    library-v1.parquet, library-v2.parquet, ...   one full snapshot per save, never rewritten
    manifest.json                                  {"format": 1, "versions": [{version, file, sha256, rows}]}
Both are written atomically; the manifest is the commit point. `load` takes the newest manifest
version whose file matches its checksum and falls back to older ones (reporting each skipped path),
so a save killed at any moment leaves the previous version readable. Without a readable manifest it
falls back to reading the snapshot files themselves, newest first.

The library is owned by one process (the trainer's driver); it is not safe for concurrent writers.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.core.storage import CorruptFileError, atomic_write_bytes, check_parquet_size, parse_json
from skills.schema import Skill, SkillValidationError, validate_skill_dict
from skills.stats import SkillStats

log = logging.getLogger(__name__)

Status = Literal["candidate", "accepted", "retired"]
STATUSES: tuple[Status, ...] = ("candidate", "accepted", "retired")
FORMAT = 1
MANIFEST = "manifest.json"
_VERSION_RE = re.compile(r"^library-v(\d+)\.parquet$")
_RELOAD_MAX_CHARS = 1_000_000  # stored skills were validated on entry; reload must not re-apply caps

LIBRARY_SCHEMA = pa.schema(
    [
        ("skill_id", pa.string()),
        ("name", pa.string()),
        ("skill_json", pa.string()),
        ("source_task_id", pa.string()),
        ("source_task_type", pa.string()),
        ("iteration", pa.int64()),
        ("policy_version", pa.int64()),
        ("status", pa.string()),
        ("trials", pa.int64()),
        ("wins", pa.int64()),
        ("baseline_trials", pa.int64()),
        ("baseline_wins", pa.int64()),
        ("failed", pa.int64()),
        ("embedding", pa.list_(pa.float64())),
        ("merged_ids", pa.list_(pa.string())),
    ]
)


class LibraryError(RuntimeError):
    pass


@dataclass(frozen=True)
class Provenance:
    source_task_id: str
    iteration: int
    policy_version: int
    source_task_type: str = ""


@dataclass(frozen=True)
class GateConfig:
    """From config `skills`: gate_min_trials, gate_confidence, merge_similarity."""

    min_trials: int = 4
    confidence: float = 0.9
    merge_similarity: float = 0.95

    @classmethod
    def from_config(cls, skills_cfg) -> GateConfig:
        return cls(skills_cfg.gate_min_trials, skills_cfg.gate_confidence, skills_cfg.merge_similarity)


@dataclass
class LibraryEntry:
    skill: Skill
    provenance: Provenance
    stats: SkillStats = field(default_factory=SkillStats)
    status: Status = "candidate"
    embedding: list[float] = field(default_factory=list)
    merged_ids: list[str] = field(default_factory=list)  # ids of near-duplicates folded into this one

    @property
    def skill_id(self) -> str:
        return self.skill.skill_id


@dataclass
class LoadReport:
    path: Path | None  # the snapshot loaded; None for an empty (new) library
    version: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of newer, unusable versions


def gate_status(status: Status, stats: SkillStats, gate: GateConfig) -> Status:
    """Accept when the gain's lower bound is > 0; retire when its upper bound is < 0. Retired is final.

    Nothing changes before both the skill and its baseline have `min_trials` trials.
    """
    if status == "retired" or stats.trials < gate.min_trials or stats.baseline_trials < gate.min_trials:
        return status
    lower, upper = stats.gain_interval(gate.confidence)
    if upper < 0:
        return "retired"
    if status == "candidate" and lower > 0:
        return "accepted"
    return status


def cosine(a: list[float], b: list[float]) -> float:
    if not a or not b or len(a) != len(b):
        return 0.0
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class SkillLibrary:
    """Skills with provenance, downstream stats, status and embedding; see the module docstring."""

    def __init__(self, directory: str | Path, gate: GateConfig | None = None) -> None:
        self.dir = Path(directory)
        self.gate = gate or GateConfig()
        self.entries: dict[str, LibraryEntry] = {}
        self._alias: dict[str, str] = {}  # merged skill id -> id of the entry that holds its stats
        self.load_report = LoadReport(None, 0)

    @classmethod
    def open(cls, directory: str | Path, gate: GateConfig | None = None) -> SkillLibrary:
        """A library over `directory`, loaded from its newest valid version (empty if there is none)."""
        lib = cls(directory, gate)
        lib.load()
        return lib

    # ------------------------------------------------------------------------------------------ content

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries.values())

    def resolve(self, skill: Skill | str) -> str:
        """The id of the entry holding `skill` (an id, an id prefix, a name or a Skill)."""
        sid = skill.skill_id if isinstance(skill, Skill) else skill
        sid = self._alias.get(sid, sid)
        if sid in self.entries:
            return sid
        if isinstance(skill, str):
            hits = [k for k, e in self.entries.items() if k.startswith(skill) or e.skill.name == skill]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise KeyError(f"{skill!r} is ambiguous in {self.dir}: {', '.join(hits)}")
        raise KeyError(f"skill {sid!r} not in library {self.dir}")

    def get(self, skill: Skill | str) -> LibraryEntry:
        return self.entries[self.resolve(skill)]

    def with_status(self, *statuses: Status) -> list[LibraryEntry]:
        return [e for e in self.entries.values() if e.status in statuses]

    def add(
        self,
        skill: Skill,
        provenance: Provenance,
        embedding: list[float] | None = None,
        stats: SkillStats | None = None,
        status: Status = "candidate",
    ) -> str:
        """Add a skill, or merge it into an existing one (same id, or a non-retired entry with cosine
        similarity >= merge_similarity: stats are added, the older text is kept). Returns the holder id."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r} not in {STATUSES}")
        sid = skill.skill_id
        embedding = [float(x) for x in (embedding or [])]
        stats = stats or SkillStats()
        holder = self._alias.get(sid, sid if sid in self.entries else None)
        if holder is None and embedding:
            best, best_sim = None, -1.0
            for k, e in self.entries.items():
                sim = cosine(embedding, e.embedding)
                if e.status != "retired" and sim > best_sim:
                    best, best_sim = k, sim
            if best is not None and best_sim >= self.gate.merge_similarity:
                holder = best
        if holder is None:
            self.entries[sid] = LibraryEntry(skill, provenance, stats, status, embedding)
            self._apply_gate(sid)
            return sid
        entry = self.entries[holder]
        entry.stats = entry.stats + stats
        if sid != holder and sid not in entry.merged_ids:
            entry.merged_ids.append(sid)
            self._alias[sid] = holder
        self._apply_gate(holder)
        return holder

    def record_trials(
        self,
        skill: Skill | str,
        trials: int,
        wins: int,
        baseline_trials: int,
        baseline_wins: int,
        failed: int = 0,
    ) -> LibraryEntry:
        """Add downstream results of one evaluation round and re-run the gate."""
        sid = self.resolve(skill)
        entry = self.entries[sid]
        entry.stats = entry.stats + SkillStats(trials, wins, baseline_trials, baseline_wins, failed)
        self._apply_gate(sid)
        return entry

    def _apply_gate(self, sid: str) -> None:
        entry = self.entries[sid]
        new = gate_status(entry.status, entry.stats, self.gate)
        if new != entry.status:
            lo, hi = entry.stats.gain_interval(self.gate.confidence)
            log.info("skill %s (%s): %s -> %s, gain %.3f [%.3f, %.3f] over %d trials",
                     sid, entry.skill.name, entry.status, new, entry.stats.gain, lo, hi, entry.stats.trials)  # fmt: skip
            entry.status = new

    # -------------------------------------------------------------------------------------- persistence

    def _manifest(self) -> dict | None:
        path = self.dir / MANIFEST
        if not path.exists():
            return None
        try:
            data = parse_json(path.read_text(), str(path))
            versions = data["versions"]
            if not isinstance(versions, list) or data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, versions {type(versions).__name__}")
            for v in versions:
                int(v["version"]), str(v["file"]), str(v["sha256"])  # noqa: B018 (shape check)
                if not _VERSION_RE.match(
                    str(v["file"])
                ):  # a bare snapshot name: never a path out of the folder
                    raise ValueError(f"file entry {v['file']!r} is not a library-v<N>.parquet name")
            return data
        except (ValueError, KeyError, TypeError) as e:  # CorruptFileError is a ValueError
            log.warning("skill library %s: unreadable manifest (%s); falling back to snapshot files", path, e)
            self.load_report.skipped.append((str(path), f"unreadable manifest: {e}"))
            return None

    def _disk_versions(self) -> dict[int, Path]:
        if not self.dir.is_dir():
            return {}
        return {int(m.group(1)): p for p in self.dir.iterdir() if (m := _VERSION_RE.match(p.name))}

    def save(self) -> Path:
        """Write a new snapshot version, then commit it in the manifest. Returns the snapshot path."""
        manifest = self._manifest() or {"format": FORMAT, "versions": []}
        known = [int(v["version"]) for v in manifest["versions"]] + list(self._disk_versions())
        version = max(known, default=0) + 1
        buf = io.BytesIO()
        pq.write_table(self._to_table(), buf)
        data = buf.getvalue()
        path = atomic_write_bytes(self.dir / f"library-v{version}.parquet", data)
        manifest["versions"].append(
            {
                "version": version,
                "file": path.name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "rows": len(self),
            }
        )
        atomic_write_bytes(self.dir / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        self.load_report = LoadReport(path, version)
        return path

    def load(self, version: int | None = None) -> LoadReport:
        """Load the newest valid version (at most `version`, for a resumed run whose checkpoint
        recorded it); each newer version that could not be used is reported."""
        self.load_report = report = LoadReport(None, 0)
        manifest = self._manifest()
        disk = self._disk_versions()
        if manifest is not None:
            committed = {int(v["version"]) for v in manifest["versions"]}
            for num in sorted(set(disk) - committed, reverse=True):
                if num > max(committed, default=0):
                    report.skipped.append(
                        (str(disk[num]), "not committed in the manifest (interrupted save)")
                    )
            candidates = [
                (int(v["version"]), self.dir / v["file"], v["sha256"]) for v in manifest["versions"]
            ]
        else:
            candidates = [(num, path, None) for num, path in disk.items()]
        if version is not None:
            candidates = [c for c in candidates if c[0] <= version]
        for num, path, sha in sorted(candidates, key=lambda c: c[0], reverse=True):
            try:
                data = path.read_bytes()
                if sha is not None and hashlib.sha256(data).hexdigest() != sha:
                    raise LibraryError("checksum mismatch")
                check_parquet_size(pq.ParquetFile(io.BytesIO(data)).metadata, str(path), file_bytes=len(data))
                entries = self._from_table(pq.read_table(io.BytesIO(data)), path)
            except (OSError, pa.ArrowException, LibraryError, CorruptFileError) as e:
                log.warning("skill library: skipping %s (%s)", path, e)
                report.skipped.append((str(path), str(e)))
                continue
            self.entries = {e.skill_id: e for e in entries}
            self._alias = {m: e.skill_id for e in entries for m in e.merged_ids}
            report.path, report.version = path, num
            if report.skipped:
                log.warning("skill library %s: loaded version %d after skipping %d newer path(s)",
                            self.dir, num, len(report.skipped))  # fmt: skip
            return report
        if candidates:
            raise LibraryError(f"skill library {self.dir}: no readable version; skipped {report.skipped}")
        self.entries, self._alias = {}, {}
        return report

    def _to_table(self) -> pa.Table:
        rows = []
        for sid, e in self.entries.items():
            s, p = e.stats, e.provenance
            rows.append(
                {
                    "skill_id": sid,
                    "name": e.skill.name,
                    "skill_json": e.skill.to_json(),
                    "source_task_id": p.source_task_id,
                    "source_task_type": p.source_task_type,
                    "iteration": p.iteration,
                    "policy_version": p.policy_version,
                    "status": e.status,
                    "trials": s.trials,
                    "wins": s.wins,
                    "baseline_trials": s.baseline_trials,
                    "baseline_wins": s.baseline_wins,
                    "failed": s.failed,
                    "embedding": e.embedding,
                    "merged_ids": e.merged_ids,
                }
            )
        return pa.Table.from_pylist(rows, schema=LIBRARY_SCHEMA)

    @staticmethod
    def _from_table(table: pa.Table, path: Path) -> list[LibraryEntry]:
        missing = set(LIBRARY_SCHEMA.names) - set(table.column_names)
        if missing:
            raise LibraryError(f"missing columns {sorted(missing)}")
        out = []
        for i, row in enumerate(table.to_pylist()):
            where = f"{path} row {i} (skill {row['skill_id']})"
            try:
                skill = validate_skill_dict(parse_json(row["skill_json"], where), max_chars=_RELOAD_MAX_CHARS)
            except (ValueError, SkillValidationError) as e:
                raise LibraryError(f"{where}: skill_json: {e}") from None
            if skill.skill_id != row["skill_id"]:
                raise LibraryError(f"{where}: skill_id does not match the content hash {skill.skill_id}")
            if row["status"] not in STATUSES:
                raise LibraryError(f"{where}: status {row['status']!r} not in {STATUSES}")
            stats = SkillStats(
                row["trials"], row["wins"], row["baseline_trials"], row["baseline_wins"], row["failed"]
            )
            prov = Provenance(
                row["source_task_id"], row["iteration"], row["policy_version"], row["source_task_type"]
            )
            out.append(
                LibraryEntry(
                    skill, prov, stats, row["status"], list(row["embedding"]), list(row["merged_ids"])
                )
            )
        return out


def entry_record(entry: LibraryEntry, confidence: float = 0.9) -> dict:
    """A JSON-ready export record: skill, provenance, stats (with rates and intervals), status, embedding."""
    s = entry.stats
    return {
        "skill_id": entry.skill_id,
        "status": entry.status,
        "skill": entry.skill.to_dict(),
        "provenance": vars(entry.provenance).copy(),
        "stats": {
            **vars(s),
            "win_rate": s.win_rate,
            "win_interval": list(s.win_interval(confidence)),
            "baseline_rate": s.baseline_rate,
            "gain": s.gain,
            "gain_interval": list(s.gain_interval(confidence)),
        },
        "embedding": entry.embedding,
        "merged_ids": entry.merged_ids,
    }


def write_export(entries: list[LibraryEntry], out: Path, confidence: float = 0.9) -> tuple[Path, Path]:
    """`<out>.jsonl` (one entry_record per skill) and `<out>.md` (the cards), atomically."""
    from skills.schema import render_card

    jsonl = "".join(json.dumps(entry_record(e, confidence), ensure_ascii=False) + "\n" for e in entries)
    cards = [
        f"<!-- {e.skill_id} {e.status} -->\n{render_card(e.skill, max_chars=100_000)}\n" for e in entries
    ]
    out = Path(out)
    a = atomic_write_bytes(out.with_name(out.name + ".jsonl"), jsonl.encode())
    b = atomic_write_bytes(out.with_name(out.name + ".md"), "\n---\n\n".join(cards).encode())
    return a, b
