"""Model output -> Skill or a reason. The extractor's format reward is read off this result.

Models write analysis first, fence the JSON or not, and keep talking afterwards; the skill is the
complete top-level JSON object with the most skill keys (then the longest, then the latest), so a
stray `{}` in trailing chatter or a short format example never wins. Reasons are stable codes so they can be counted in metrics:
no_json, invalid_json, missing_field:<f>, wrong_type:<f>, bad_name, too_long[:<f>].
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from cluster.core.text import sanitize
from skills.schema import (
    DEFAULT_MAX_SKILL_CHARS,
    TOP_LEVEL_FIELDS,
    SchemaName,
    Skill,
    SkillValidationError,
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


def _scan(text: str) -> tuple[list[tuple[dict, int]], bool]:
    """Top-level JSON objects in `text` with their lengths (nested ones skipped), and whether a
    JSON-looking `{"` failed.

    A failed `{"...` is an attempted object that never closed (truncated) or is malformed; objects
    decoded after it are usually its own nested parts, which must not pass for the answer.
    """
    decoder = json.JSONDecoder()
    found: list[tuple[dict, int]] = []
    failed_json_like = False
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested past the stack
            if _OBJECT_START_RE.match(text, i):
                failed_json_like = True
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append((obj, end - i))
        i = text.find("{", end)
    return found, failed_json_like


def find_final_json(text: str) -> tuple[dict | None, str | None]:
    """(object, None) for the final JSON object, else (None, 'no_json' | 'invalid_json').

    Preference (the authors' rule): the object with the most top-level skill keys, then the longer,
    then the later one; else, when an attempted object failed to decode, invalid_json; else the last
    object (validation then names what is missing).
    """
    if "{" not in text:
        return None, "no_json"
    objects, failed_json_like = _scan(text)
    ranked = [(sum(k in o for k in TOP_LEVEL_FIELDS), n, i, o) for i, (o, n) in enumerate(objects)]
    skill_like = [r for r in ranked if r[0] > 0]
    if skill_like:
        return max(skill_like, key=lambda r: r[:3])[3], None
    if failed_json_like:
        return None, "invalid_json"
    if not objects:
        return None, "no_json"  # braces in prose only, e.g. "put {obj} in {recep}"
    return objects[-1][0], None


def parse_skill(
    text: str, max_chars: int = DEFAULT_MAX_SKILL_CHARS, schema: SchemaName = "paper"
) -> ParseResult:
    """Parse one extractor output under the `schema` rules. Control tokens are stripped first."""
    if not isinstance(text, str):
        raise TypeError(f"parse_skill: expected str, got {type(text).__name__}")
    text = sanitize(text[-MAX_INPUT_CHARS:])
    obj, reason = find_final_json(text)
    if obj is None:
        return ParseResult(None, reason)
    try:
        return ParseResult(validate_skill_dict(obj, max_chars=max_chars, schema=schema), None)
    except SkillValidationError as e:
        return ParseResult(None, e.reason)


def score_candidates(
    texts: list[str], max_chars: int = DEFAULT_MAX_SKILL_CHARS, schema: SchemaName = "paper"
) -> list[ParseResult]:
    """Format score (and parsed skill) of each of the N extractor candidates of one trajectory."""
    return [parse_skill(t, max_chars=max_chars, schema=schema) for t in texts]
