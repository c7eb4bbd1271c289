"""The skill: the paper's structured JSON record, its validation, its identity and its Markdown card.

One trajectory yields one skill; other tasks use it through `render_card` in the solver's system
prompt. The record is the authors' schema (Fanzy27/Evolving-RL, src/*/prompts.py): prose fields are
lists of short items, `when_not_to_use` is optional. Two validation rules exist (`skills.schema`):
- "paper": only `name` and `description` are required, every other field may be missing or empty
  (the authors' REQUIRED_SKILL_FIELDS); a name that is not kebab-case is normalised, not refused;
- "strict": every field except `when_not_to_use` is required and non-empty, and the name must be
  kebab-case; it pairs with `skill_json_schema()` for constrained decoding of small models.
Either way wrong types, oversized fields and pathological sizes are refused with a named reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cluster.core.text import sanitize

SchemaName = Literal["paper", "strict"]
NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_NON_SLUG = re.compile(r"[^a-z0-9]+")

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
    "when_not_to_use",
    "inputs_to_identify",
    "workflow",
    "decision_rules",
    "error_handling",
    "output_requirements",
)
METADATA_FIELDS = ("source_task_type", "success_signal", "abstraction_level", "skill_category")
STEP_FIELDS = ("step", "goal", "action", "tools_or_strategy", "completion_condition")
ERROR_FIELDS = ("error", "cause", "response")
# Lists of prose items; a single string is read as a one-item list (older skills and many writers
# give these as one sentence). Lists of named things (inputs, rules) must be lists.
PROSE_LISTS = ("skill_overview", "when_to_use", "when_not_to_use", "output_requirements")
STR_LISTS = ("skill_overview", "when_to_use", "when_not_to_use", "inputs_to_identify", "decision_rules",
             "output_requirements")  # fmt: skip
OPTIONAL_IN_STRICT = ("when_not_to_use",)


class SkillValidationError(ValueError):
    """`reason` is a machine-readable code: missing_field:<f>, wrong_type:<f>, bad_name, too_long[:<f>]."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class SkillMetadata:
    source_task_type: str = ""
    success_signal: str = ""
    abstraction_level: str = ""
    skill_category: str = ""


@dataclass(frozen=True)
class WorkflowStep:
    step: int
    goal: str = ""
    action: str = ""
    tools_or_strategy: str = ""
    completion_condition: str = ""


@dataclass(frozen=True)
class ErrorCase:
    error: str = ""
    cause: str = ""
    response: str = ""


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    metadata: SkillMetadata = field(default_factory=SkillMetadata)
    skill_overview: list[str] = field(default_factory=list)
    when_to_use: list[str] = field(default_factory=list)
    when_not_to_use: list[str] = field(default_factory=list)
    inputs_to_identify: list[str] = field(default_factory=list)
    workflow: list[WorkflowStep] = field(default_factory=list)
    decision_rules: list[str] = field(default_factory=list)
    error_handling: list[ErrorCase] = field(default_factory=list)
    output_requirements: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; the optional `when_not_to_use` only when it has items (the generation schema,
        like the authors' ALFWorld schema, has no such key)."""
        d = asdict(self)
        if not d["when_not_to_use"]:
            del d["when_not_to_use"]
        return d

    def to_json(self) -> str:
        """Canonical compact JSON (field order as in the schema): the hashed and stored form."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @property
    def skill_id(self) -> str:
        return skill_id(self)

    @classmethod
    def from_dict(
        cls, data: Any, max_chars: int = DEFAULT_MAX_SKILL_CHARS, schema: SchemaName = "paper"
    ) -> Skill:
        return validate_skill_dict(data, max_chars=max_chars, schema=schema)


def skill_id(skill: Skill) -> str:
    """Stable content hash: same content, same id, across processes and machines."""
    return hashlib.sha256(skill.to_json().encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- validation


class _Rules:
    def __init__(self, schema: SchemaName) -> None:
        if schema not in ("paper", "strict"):
            raise ValueError(f"skill schema {schema!r}: expected 'paper' or 'strict'")
        self.strict = schema == "strict"

    def text(self, data: dict, key: str, path: str, required: bool, max_chars: int = MAX_FIELD_CHARS) -> str:
        value = data.get(key)
        if value is None:
            if required:
                raise SkillValidationError(f"missing_field:{path}")
            return ""
        if not isinstance(value, str):
            raise SkillValidationError(f"wrong_type:{path}", f"expected string, got {type(value).__name__}")
        value = sanitize(value).strip()
        if not value and required:
            raise SkillValidationError(f"missing_field:{path}", "empty string")
        if len(value) > max_chars:
            raise SkillValidationError(f"too_long:{path}", f"{len(value)} > {max_chars} chars")
        return value

    def items(self, data: dict, key: str, required: bool) -> list:
        value = data.get(key)
        if value is None:
            value = []
        elif isinstance(value, str) and key in PROSE_LISTS:
            value = [value] if value.strip() else []
        elif not isinstance(value, list):
            raise SkillValidationError(f"wrong_type:{key}", f"expected list, got {type(value).__name__}")
        if not value and required:
            raise SkillValidationError(f"missing_field:{key}", "empty list" if key in data else "")
        if len(value) > MAX_LIST_ITEMS:
            raise SkillValidationError(f"too_long:{key}", f"{len(value)} > {MAX_LIST_ITEMS} items")
        return value

    def required(self, key: str) -> bool:
        return self.strict and key not in OPTIONAL_IN_STRICT


def _obj(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise SkillValidationError(f"wrong_type:{path}", f"expected object, got {type(value).__name__}")
    return value


def _slug(name: str) -> str:
    return _NON_SLUG.sub("-", name.lower()).strip("-")


def validate_skill_dict(
    data: Any, max_chars: int = DEFAULT_MAX_SKILL_CHARS, schema: SchemaName = "paper"
) -> Skill:
    """Build a Skill from decoded JSON or raise SkillValidationError with the first problem found.

    Unknown keys are ignored; strings are cleaned of control tokens and stripped; empty items of
    lists are dropped in the paper schema and refused in the strict one."""
    rules = _Rules(schema)
    data = _obj(data, "skill")
    name = rules.text(data, "name", "name", True, MAX_NAME_CHARS)
    if not NAME_RE.match(name):
        if rules.strict or not _slug(name):
            raise SkillValidationError("bad_name", f"{name!r} is not kebab-case")
        name = _slug(name)[:MAX_NAME_CHARS].strip("-")
    description = rules.text(data, "description", "description", True)
    meta_raw = data.get("metadata")
    if meta_raw is None:
        if rules.strict:
            raise SkillValidationError("missing_field:metadata")
        meta_raw = {}
    meta = _obj(meta_raw, "metadata")
    metadata = SkillMetadata(
        **{k: rules.text(meta, k, f"metadata.{k}", rules.strict) for k in METADATA_FIELDS}
    )

    lists: dict[str, list[str]] = {}
    for key in STR_LISTS:
        out = []
        for i, v in enumerate(rules.items(data, key, rules.required(key))):
            text = rules.text({"v": v}, "v", f"{key}[{i}]", rules.strict)
            if text:
                out.append(text)
        lists[key] = out
    workflow = []
    for i, raw in enumerate(rules.items(data, "workflow", rules.strict)):
        path = f"workflow[{i}]"
        raw = _obj(raw, path)
        step = raw.get("step")
        if step is None and not rules.strict:
            step = i + 1
        elif step is None:
            raise SkillValidationError(f"missing_field:{path}.step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise SkillValidationError(f"wrong_type:{path}.step", f"expected integer, got {step!r}")
        texts = {k: rules.text(raw, k, f"{path}.{k}", rules.strict) for k in STEP_FIELDS[1:]}
        workflow.append(WorkflowStep(step=step, **texts))
    errors = []
    for i, raw in enumerate(rules.items(data, "error_handling", rules.strict)):
        path = f"error_handling[{i}]"
        raw = _obj(raw, path)
        errors.append(ErrorCase(**{k: rules.text(raw, k, f"{path}.{k}", rules.strict) for k in ERROR_FIELDS}))
    skill = Skill(
        name=name,
        description=description,
        metadata=metadata,
        workflow=workflow,
        error_handling=errors,
        **lists,
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
    """The constrained-decoding schema: the paper's fields (without the optional when_not_to_use),
    every free-text item capped near `text_chars` characters and every list at `items` entries
    (workflow: items + 1). Property order is the order the grammar emits."""
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
            "skill_overview": _arr(_s(2 * c), 1),
            "when_to_use": _arr(_s(2 * c), 1),
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
            "output_requirements": _arr(_s(c), 1),
        }
    )


# Default bounds measured on SmolLM2-135M (benchmarks/skills_format_rate.py, 512 tokens, T=1): with
# (80 chars, 3 items) 4/16 samples closed their JSON, with (40, 2) 11/16 (engine without free
# whitespace) or 7/16 (with): small models write short tokens, about 2.4 characters each.
SKILL_JSON_SCHEMA: dict = skill_json_schema()


# ----------------------------------------------------------------------------------------- Markdown card


def render_card(skill: Skill, max_chars: int = 1500) -> str:
    """Markdown for the solver's "Reference Skill" (the authors' section layout); empty sections are
    left out; cut at a line boundary when longer than `max_chars`."""
    m = skill.metadata
    lines = [f"# Skill: {skill.name}", skill.description]
    meta = [f"**{k}**: {v}" for k, v in (("Category", m.skill_category), ("Source", m.source_task_type),
                                          ("Level", m.abstraction_level), ("Signal", m.success_signal)) if v]  # fmt: skip
    if meta:
        lines.append(" | ".join(meta))

    def section(title: str, items: list[str]) -> None:
        if items:
            lines.append(f"## {title}")
            lines.extend(f"- {x}" for x in items)

    section("Overview", skill.skill_overview)
    section("When to Use", skill.when_to_use)
    section("When NOT to Use", skill.when_not_to_use)
    section("Inputs to Identify", skill.inputs_to_identify)
    if skill.workflow:
        lines.append("## Workflow")
        for i, s in enumerate(skill.workflow, 1):
            lines.append(f"{i}. **{s.goal}**: {s.action}" if s.goal else f"{i}. {s.action}")
            if s.tools_or_strategy:
                lines.append(f"   - Strategy: {s.tools_or_strategy}")
            if s.completion_condition:
                lines.append(f"   - Done when: {s.completion_condition}")
    section("Decision Rules", skill.decision_rules)
    section(
        "Error Handling",
        [f"**{e.error}**: {e.cause} -> {e.response}" if e.cause else f"**{e.error}**: {e.response}"
         for e in skill.error_handling],
    )  # fmt: skip
    section("Output Requirements", skill.output_requirements)
    text = sanitize("\n".join(lines))
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 2]
    nl = cut.rfind("\n")
    if nl > max_chars // 2:
        cut = cut[:nl]
    return cut.rstrip() + "\n…"
