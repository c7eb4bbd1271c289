"""Skills from files, told apart by their content whatever the file extension: a JSON skill (either
schema), a JSON list of them, an export record (`{"skill": {...}, ...}`, from `evorl skills export`),
JSONL of any of those, or a raw extractor response (analysis text and a final JSON object, fenced
or not). Every record is validated with a named reason; an imported skill never keeps trials, wins
or a status it did not earn here: it enters as a candidate with zero trials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cluster.core.storage import json_depth
from skills.parse import parse_skill
from skills.schema import TOP_LEVEL_FIELDS, SchemaName, Skill, SkillValidationError, validate_skill_dict

MAX_FILE_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 32  # a skill is 3 levels deep; anything far deeper is not one


@dataclass(frozen=True)
class Imported:
    where: str  # file[:line][#item]
    skill: Skill | None
    reason: str | None  # why it was refused


def _loads(text: str):
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"too_deep: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text)  # raises JSONDecodeError (a ValueError) for anything else


def _record(obj, where: str, schema: SchemaName, max_chars: int) -> list[Imported]:
    if isinstance(obj, list):
        return [r for i, o in enumerate(obj) for r in _record(o, f"{where}#{i}", schema, max_chars)]
    if not isinstance(obj, dict):
        return [Imported(where, None, f"not_a_skill_record: a JSON {type(obj).__name__}")]
    if isinstance(obj.get("skill"), dict):  # an export record: only the skill is taken
        obj = obj["skill"]
    elif not any(k in obj for k in TOP_LEVEL_FIELDS):
        return [Imported(where, None, "not_a_skill_record: no skill field in the object")]
    try:
        return [Imported(where, validate_skill_dict(obj, max_chars=max_chars, schema=schema), None)]
    except SkillValidationError as e:
        return [Imported(where, None, str(e))]


def read_skills(path: str | Path, schema: SchemaName = "paper", max_chars: int = 4000) -> list[Imported]:
    """Every skill record of one file, each with its skill or the reason it was refused."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return [Imported(str(path), None, f"too_large: over {MAX_FILE_BYTES} bytes")]
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        return [Imported(str(path), None, f"unreadable: {e.strerror or e}")]
    except UnicodeDecodeError:
        return [Imported(str(path), None, "unreadable: not UTF-8 text")]
    if not text.strip():
        return [Imported(str(path), None, "empty: no content")]
    try:
        return _record(_loads(text), str(path), schema, max_chars)
    except ValueError as e:
        if str(e).startswith("too_deep"):
            return [Imported(str(path), None, str(e))]
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    try:  # JSONL: every line an object
        parsed = [(n, _loads(line)) for n, line in lines]
    except ValueError:
        parsed = None
    if parsed and all(isinstance(o, dict | list) for _, o in parsed):
        return [r for n, o in parsed for r in _record(o, f"{path}:{n}", schema, max_chars)]
    result = parse_skill(text, max_chars=max_chars, schema=schema)  # a raw extractor response
    return [Imported(str(path), result.skill, result.reason)]
