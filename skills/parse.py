"""Model output -> Skill or a reason. The extractor's format reward is read off this result.

Models write analysis first, fence the JSON or not, and keep talking afterwards; the skill is the
last complete top-level JSON object in the text (preferring one that looks like a skill over a
stray `{}` in trailing chatter). Reasons are stable codes so they can be counted in metrics:
no_json, invalid_json, missing_field:<f>, wrong_type:<f>, bad_name, too_long[:<f>].
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from skills.schema import (
    DEFAULT_MAX_SKILL_CHARS,
    TOP_LEVEL_FIELDS,
    Skill,
    SkillValidationError,
    clean_text,
    validate_skill_dict,
)

# Raw model output longer than this is cut to its tail (the final object is at the end) before scanning,
# which bounds the scan's cost on runaway generations.
MAX_INPUT_CHARS = 32_000
# `{"key"`, `{'key'` or `{key:`: the start of an attempted JSON object (not a brace in prose).
_OBJECT_START_RE = re.compile(r"""\{\s*(?:["']|[A-Za-z_]\w*\s*:)""")


@dataclass(frozen=True)
class ParseResult:
    skill: Skill | None
    reason: str | None  # None when skill is set

    @property
    def ok(self) -> bool:
        return self.skill is not None

    @property
    def score(self) -> float:
        """Format score of an extractor candidate: 1 for a valid skill, 0 otherwise."""
        return 1.0 if self.skill is not None else 0.0

    @property
    def category(self) -> str | None:
        """The reason without its field detail (`missing_field:name` -> `missing_field`)."""
        return None if self.reason is None else self.reason.split(":", 1)[0]


def _scan(text: str) -> tuple[list[dict], bool]:
    """Top-level JSON objects in `text` (nested ones skipped), and whether a JSON-looking `{"` failed.

    A failed `{"...` is an attempted object that never closed (truncated) or is malformed; objects
    decoded after it are usually its own nested parts, which must not pass for the answer.
    """
    decoder = json.JSONDecoder()
    found: list[dict] = []
    failed_json_like = False
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            if _OBJECT_START_RE.match(text, i):
                failed_json_like = True
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found, failed_json_like


def find_final_json(text: str) -> tuple[dict | None, str | None]:
    """(object, None) for the final JSON object, else (None, 'no_json' | 'invalid_json').

    Preference: the last object that has a top-level skill key; else, when an attempted object
    failed to decode, invalid_json; else the last object (validation then names what is missing).
    """
    if "{" not in text:
        return None, "no_json"
    objects, failed_json_like = _scan(text)
    skill_like = [o for o in objects if any(k in o for k in TOP_LEVEL_FIELDS)]
    if skill_like:
        return skill_like[-1], None
    if failed_json_like:
        return None, "invalid_json"
    if not objects:
        return None, "no_json"  # braces in prose only, e.g. "put {obj} in {recep}"
    return objects[-1], None


def parse_skill(text: str, max_chars: int = DEFAULT_MAX_SKILL_CHARS) -> ParseResult:
    """Parse one extractor output. Control tokens are stripped before anything else."""
    if not isinstance(text, str):
        raise TypeError(f"parse_skill: expected str, got {type(text).__name__}")
    text = clean_text(text[-MAX_INPUT_CHARS:])
    obj, reason = find_final_json(text)
    if obj is None:
        return ParseResult(None, reason)
    try:
        return ParseResult(validate_skill_dict(obj, max_chars=max_chars), None)
    except SkillValidationError as e:
        return ParseResult(None, e.reason)


def score_candidates(texts: list[str], max_chars: int = DEFAULT_MAX_SKILL_CHARS) -> list[ParseResult]:
    """Format score (and parsed skill) of each of the N extractor candidates of one trajectory."""
    return [parse_skill(t, max_chars=max_chars) for t in texts]
