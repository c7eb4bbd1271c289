"""The skill: the paper's structured JSON record, its validation, its identity and its Markdown card.

One trajectory yields one skill; other tasks use it through `render_card` in the solver's system
prompt. Two sets of limits exist on purpose:
- `SKILL_JSON_SCHEMA` (generation): tight string / list bounds so that a small model decoding under
  the schema always reaches the closing brace within the extractor's token budget;
- `validate_skill_dict` (acceptance): looser caps, so unconstrained outputs that are a little verbose
  still count, while pathological ones are rejected with a named reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# Chat-template control tokens (<|im_start|>, <|im_end|>, <|endoftext|>, any <|...|>): a skill is model
# output that later becomes prompt text, so it must never carry turn delimiters into another prompt.
CONTROL_TOKEN_RE = re.compile(r"<\|[^<>|\n]{0,64}\|>")
_CTRL_CHARS_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Acceptance caps (validation).
MAX_NAME_CHARS = 64
MAX_FIELD_CHARS = 800
MAX_LIST_ITEMS = 12
DEFAULT_MAX_SKILL_CHARS = 4000  # compact JSON of the whole skill (config skills.max_skill_chars)

TOP_LEVEL_FIELDS = (
    "name",
    "description",
    "metadata",
    "skill_overview",
    "when_to_use",
    "inputs_to_identify",
    "workflow",
    "decision_rules",
    "error_handling",
    "output_requirements",
)
METADATA_FIELDS = ("source_task_type", "success_signal", "abstraction_level", "skill_category")
STEP_FIELDS = ("step", "goal", "action", "tools_or_strategy", "completion_condition")
ERROR_FIELDS = ("error", "cause", "response")


class SkillValidationError(ValueError):
    """`reason` is a machine-readable code: missing_field:<f>, wrong_type:<f>, bad_name, too_long[:<f>]."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def clean_text(text: str, max_chars: int | None = None) -> str:
    """Strip chat-template control tokens and control characters; cap the length.

    Repeated until nothing changes, so a removal cannot splice a token together (`<|im_\x00start|>`)."""
    while True:
        before = text
        text = _CTRL_CHARS_RE.sub("", CONTROL_TOKEN_RE.sub("", text))
        if text == before:
            break
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars]
    return text


@dataclass(frozen=True)
class SkillMetadata:
    source_task_type: str
    success_signal: str
    abstraction_level: str
    skill_category: str


@dataclass(frozen=True)
class WorkflowStep:
    step: int
    goal: str
    action: str
    tools_or_strategy: str
    completion_condition: str


@dataclass(frozen=True)
class ErrorCase:
    error: str
    cause: str
    response: str


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    metadata: SkillMetadata
    skill_overview: str
    when_to_use: str
    inputs_to_identify: list[str]
    workflow: list[WorkflowStep]
    decision_rules: list[str]
    error_handling: list[ErrorCase]
    output_requirements: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """Canonical compact JSON (field order as in the schema): the hashed and stored form."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @property
    def skill_id(self) -> str:
        return skill_id(self)

    @classmethod
    def from_dict(cls, data: Any, max_chars: int = DEFAULT_MAX_SKILL_CHARS) -> Skill:
        return validate_skill_dict(data, max_chars=max_chars)


def skill_id(skill: Skill) -> str:
    """Stable content hash: same content, same id, across processes and machines."""
    return hashlib.sha256(skill.to_json().encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- validation


def _str(data: dict, key: str, path: str, max_chars: int = MAX_FIELD_CHARS) -> str:
    if key not in data or data[key] is None:
        raise SkillValidationError(f"missing_field:{path}")
    value = data[key]
    if not isinstance(value, str):
        raise SkillValidationError(f"wrong_type:{path}", f"expected string, got {type(value).__name__}")
    value = clean_text(value).strip()
    if not value:
        raise SkillValidationError(f"missing_field:{path}", "empty string")
    if len(value) > max_chars:
        raise SkillValidationError(f"too_long:{path}", f"{len(value)} > {max_chars} chars")
    return value


def _list(data: dict, key: str, path: str) -> list:
    if key not in data or data[key] is None:
        raise SkillValidationError(f"missing_field:{path}")
    value = data[key]
    if not isinstance(value, list):
        raise SkillValidationError(f"wrong_type:{path}", f"expected list, got {type(value).__name__}")
    if not value:
        raise SkillValidationError(f"missing_field:{path}", "empty list")
    if len(value) > MAX_LIST_ITEMS:
        raise SkillValidationError(f"too_long:{path}", f"{len(value)} > {MAX_LIST_ITEMS} items")
    return value


def _obj(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise SkillValidationError(f"wrong_type:{path}", f"expected object, got {type(value).__name__}")
    return value


def _str_list(data: dict, key: str) -> list[str]:
    items = _list(data, key, key)
    return [_str({"v": v}, "v", f"{key}[{i}]") for i, v in enumerate(items)]


def validate_skill_dict(data: Any, max_chars: int = DEFAULT_MAX_SKILL_CHARS) -> Skill:
    """Build a Skill from decoded JSON or raise SkillValidationError with the first problem found.

    Unknown keys are ignored; strings are cleaned of control tokens and stripped; empty strings and
    empty lists count as missing.
    """
    data = _obj(data, "skill")
    name = _str(data, "name", "name", MAX_NAME_CHARS)
    if not NAME_RE.match(name):
        raise SkillValidationError("bad_name", f"{name!r} is not kebab-case")
    description = _str(data, "description", "description")
    if "metadata" not in data or data["metadata"] is None:
        raise SkillValidationError("missing_field:metadata")
    meta = _obj(data["metadata"], "metadata")
    metadata = SkillMetadata(**{k: _str(meta, k, f"metadata.{k}") for k in METADATA_FIELDS})
    skill_overview = _str(data, "skill_overview", "skill_overview")
    when_to_use = _str(data, "when_to_use", "when_to_use")
    inputs = _str_list(data, "inputs_to_identify")
    workflow = []
    for i, raw in enumerate(_list(data, "workflow", "workflow")):
        path = f"workflow[{i}]"
        raw = _obj(raw, path)
        if "step" not in raw or raw["step"] is None:
            raise SkillValidationError(f"missing_field:{path}.step")
        step = raw["step"]
        if isinstance(step, bool) or not isinstance(step, int):
            raise SkillValidationError(f"wrong_type:{path}.step", f"expected integer, got {step!r}")
        texts = {k: _str(raw, k, f"{path}.{k}") for k in STEP_FIELDS[1:]}
        workflow.append(WorkflowStep(step=step, **texts))
    decision_rules = _str_list(data, "decision_rules")
    errors = []
    for i, raw in enumerate(_list(data, "error_handling", "error_handling")):
        path = f"error_handling[{i}]"
        raw = _obj(raw, path)
        errors.append(ErrorCase(**{k: _str(raw, k, f"{path}.{k}") for k in ERROR_FIELDS}))
    output_requirements = _str(data, "output_requirements", "output_requirements")
    skill = Skill(
        name=name,
        description=description,
        metadata=metadata,
        skill_overview=skill_overview,
        when_to_use=when_to_use,
        inputs_to_identify=inputs,
        workflow=workflow,
        decision_rules=decision_rules,
        error_handling=errors,
        output_requirements=output_requirements,
    )
    size = len(skill.to_json())
    if size > max_chars:
        raise SkillValidationError("too_long", f"skill JSON is {size} > {max_chars} chars")
    return skill


# -------------------------------------------------------------------------------- generation JSON schema


def _s(max_len: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": max_len}


def _arr(items: dict, max_items: int) -> dict:
    return {"type": "array", "items": items, "minItems": 1, "maxItems": max_items}


def _object(props: dict) -> dict:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def skill_json_schema(text_chars: int = 40, items: int = 2) -> dict:
    """The generation schema with every free-text field capped near `text_chars` characters and
    every list at `items` entries (workflow: items + 1). Property order is the order the grammar
    emits, which follows the paper's schema."""
    c = max(16, text_chars)
    n = max(1, items)
    return _object(
        {
            # xgrammar ignores maxLength next to a pattern: the pattern itself is bounded (<= 64 chars).
            "name": {"type": "string", "pattern": "^[a-z0-9]{1,12}(-[a-z0-9]{1,12}){0,4}$"},
            "description": _s(2 * c),
            "metadata": _object(
                {
                    "source_task_type": _s(c // 2),
                    "success_signal": _s(c // 2),
                    "abstraction_level": {"type": "string", "enum": ["low", "medium", "high"]},
                    "skill_category": _s(c // 2),
                }
            ),
            "skill_overview": _s(2 * c),
            "when_to_use": _s(2 * c),
            "inputs_to_identify": _arr(_s(c // 2), n),
            "workflow": _arr(
                _object(
                    {
                        "step": {"type": "integer", "minimum": 1, "maximum": 9},
                        "goal": _s(c),
                        "action": _s(c),
                        "tools_or_strategy": _s(c),
                        "completion_condition": _s(c),
                    }
                ),
                n + 1,
            ),
            "decision_rules": _arr(_s(c), n),
            "error_handling": _arr(_object({"error": _s(c // 2), "cause": _s(c // 2), "response": _s(c)}), n),
            "output_requirements": _s(c),
        }
    )


# Default bounds measured on SmolLM2-135M (benchmarks/skills_format_rate.py, 512 tokens, T=1): with
# (80 chars, 3 items) 4/16 samples closed their JSON, with (40, 2) 11/16 (engine without free
# whitespace) or 7/16 (with): small models write short tokens, about 2.4 characters each.
SKILL_JSON_SCHEMA: dict = skill_json_schema()


# ----------------------------------------------------------------------------------------- Markdown card


def render_card(skill: Skill, max_chars: int = 1500) -> str:
    """Compact Markdown for the solver's "Reference Skill" section; cut at a line boundary when long."""
    lines = [f"### Skill: {skill.name}", skill.description, ""]
    lines.append(f"**When to use:** {skill.when_to_use}")
    lines.append(f"**Overview:** {skill.skill_overview}")
    lines.append(f"**Identify first:** {'; '.join(skill.inputs_to_identify)}")
    lines.append("**Steps:**")
    for i, s in enumerate(skill.workflow, 1):
        lines.append(
            f"{i}. {s.goal}: {s.action} ({s.tools_or_strategy}). Done when: {s.completion_condition}"
        )
    lines.append("**Rules:**")
    lines.extend(f"- {r}" for r in skill.decision_rules)
    lines.append("**If something goes wrong:**")
    lines.extend(f"- {e.error} (cause: {e.cause}): {e.response}" for e in skill.error_handling)
    lines.append(f"**Output:** {skill.output_requirements}")
    text = clean_text("\n".join(lines))
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 2]
    nl = cut.rfind("\n")
    if nl > max_chars // 2:
        cut = cut[:nl]
    return cut.rstrip() + "\n…"
