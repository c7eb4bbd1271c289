"""A teacher's skill, written by rule from one planner demonstration (the extractor's SFT target).

The paper starts from an instruction-tuned 7B model that already writes usable skills; the embedded
135M model does not (it copies the schema's placeholders). For the warm start we distil a teacher:
the demonstration's actions are cut into at most three phases at their key verbs (take, then a
transformation such as clean/heat/cool/use, then put), instance numbers are dropped ("cup 1" ->
"cup"), and every field is cut to the generation schema's bounds, so the target is exactly what
constrained decoding can emit. Nothing here is task-type specific: the phases come from the demo.
"""

from __future__ import annotations

import re
from typing import Any

from skills.schema import Skill, WorkflowStep, validate_skill_dict

# Key verbs end a phase; "go to" / "open" / "examine" lead into the next one.
_TRANSFORM = ("clean", "heat", "cool", "use", "slice")
_NUM = re.compile(r"\s+\d+\b")
_WORD = re.compile(r"[^a-z0-9]+")
TEXT_CHARS = 40  # skills.schema.SKILL_JSON_SCHEMA's text bound (c); lists hold at most 2 items, workflow 3


def _fit(text: str, limit: int) -> str:
    """Cut at a word boundary to `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut or text[:limit]


def _generic(action: str) -> str:
    return _NUM.sub("", action.strip().lower())


def _slug(text: str) -> str:
    return _WORD.sub("", text.lower())[:12] or "x"


def phases(actions: list[str]) -> list[list[str]]:
    """Split the action list after each key verb (take / transform / move); at most three phases
    (later ones are merged into the last); trailing moves without a key verb join the last phase."""
    out: list[list[str]] = [[]]
    for a in actions:
        out[-1].append(a)
        verb = a.strip().lower().split(" ", 1)[0]
        if verb in ("take", "move", "put", *_TRANSFORM) and len(out) < 3:
            out.append([])
    if not out[-1] and len(out) > 1:
        out.pop()
    return out


def _step(n: int, acts: list[str]) -> WorkflowStep:
    key = _generic(acts[-1])
    verb = key.split(" ", 1)[0]
    goes = [_generic(a)[len("go to ") :] for a in acts[:-1] if a.lower().startswith("go to ")]
    where = goes[-1] if goes else "the current place"
    goal = {"take": "pick up the target object", "move": "put it at the destination", "put": "put it"}.get(
        verb, f"{verb} the object"
    )
    opened = any(a.lower().startswith("open ") for a in acts)
    return WorkflowStep(
        step=n,
        goal=_fit(goal, TEXT_CHARS),
        action=_fit(key, TEXT_CHARS),
        tools_or_strategy=_fit(f"go to {where}" + (", open it" if opened else ""), TEXT_CHARS),
        completion_condition=_fit(f"the env confirms: {verb}", TEXT_CHARS),
    )


def planner_skill(task_type: str, task_text: str, actions: list[str]) -> Skill:
    """The teacher's skill for one solved demonstration (`actions`: the planner's actions in order)."""
    acts = [a for a in actions if a.strip()]
    if not acts:
        raise ValueError(f"planner_skill: no actions for task {task_text!r}")
    parts = phases(acts)
    keys = [_generic(p[-1]) for p in parts]
    taken = next((k.split(" ")[1] for k in keys if k.startswith("take ") and len(k.split(" ")) > 1), "object")
    verbs = [k.split(" ", 1)[0] for k in keys]
    dest = _generic(acts[-1]).rsplit(" ", 1)[-1] if verbs[-1] in ("move", "put") else "target"
    kind = next((v for v in verbs if v in _TRANSFORM), "place")
    task = _fit(task_text.strip().rstrip("."), 2 * TEXT_CHARS)
    c, h = TEXT_CHARS, TEXT_CHARS // 2
    raw: dict[str, Any] = {
        "name": "-".join(_slug(w) for w in (kind, taken, "to", dest)),
        "description": _fit(f"How to {task}", 2 * c),
        "metadata": {
            "source_task_type": _fit(task_type, h),
            "success_signal": _fit("task completed", h),
            "abstraction_level": "medium",
            "skill_category": _fit("household task", h),
        },
        "skill_overview": _fit(" then ".join(verbs) + f" the {taken}", 2 * c),
        "when_to_use": _fit(f"tasks like: {task}", 2 * c),
        "inputs_to_identify": [_fit(f"{taken} location", h), _fit(f"the {dest}", h)],
        "workflow": [_step(n, p).__dict__ for n, p in enumerate(parts, 1)],
        "decision_rules": [
            _fit(f"search new places for the {taken}", c),
            _fit("open a closed receptacle first", c),
        ],
        "error_handling": [
            {
                "error": _fit("object not seen", h),
                "cause": _fit("wrong place", h),
                "response": _fit("go to another receptacle", c),
            },
            {
                "error": _fit("nothing happens", h),
                "cause": _fit("invalid action", h),
                "response": _fit("pick another admissible action", c),
            },
        ],  # fmt: skip
        "output_requirements": _fit("one admissible action per turn", c),
    }
    return validate_skill_dict(raw)
