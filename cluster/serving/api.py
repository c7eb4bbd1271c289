"""The /act request: validation with a named reason for every bad field (4xx, never a 500)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ENVS = ("alfworld", "mind2web")
ACT_FIELDS = (
    "env",
    "task",
    "task_type",
    "observation",
    "page",
    "admissible_actions",
    "history",
    "steps",
    "seed",
)
MAX_ACTIONS = 2000  # admissible actions per request


class RequestError(ValueError):
    """A bad request: `status` is the HTTP code answered, the message says which field and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class AgentRequest:
    """One validated /act request."""

    env: str
    task: str
    observation: str
    admissible_actions: list[str]
    history: list[tuple[str, str]] = field(default_factory=list)  # (action, observation after it)
    task_type: str = ""
    seed: int | None = None
    # the episode so far as the env showed it: (observation, admissible actions, action taken), oldest
    # first; the sequence context rebuilds the rollout conversation from it exactly
    steps: list[tuple[str, list[str], str]] = field(default_factory=list)


def _text(body: dict, key: str, required: bool) -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise RequestError(422, f"field {key!r} is required (a string)")
        return ""
    if not isinstance(value, str):
        raise RequestError(422, f"field {key!r}: expected a string, got {type(value).__name__}")
    return value


def _history(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(422, f"field 'history': expected a list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            pair = (item.get("action"), item.get("observation"))
        elif isinstance(item, list | tuple) and len(item) == 2:
            pair = (item[0], item[1])
        else:
            raise RequestError(
                422, f"history[{i}]: expected [action, observation] or {{action, observation}}"
            )
        if not all(isinstance(x, str) for x in pair):
            raise RequestError(422, f"history[{i}]: action and observation must be strings")
        out.append((pair[0], pair[1]))
    return out


def parse_request(body: Any, default_env: str = "alfworld") -> AgentRequest:
    """Validate a decoded /act body. ALFWorld needs `admissible_actions`; Mind2Web needs the page
    snapshot (`page`, or `observation`) and may give admissible actions for constrained decoding."""
    if not isinstance(body, dict):
        raise RequestError(422, f"request body: expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(ACT_FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown}; expected some of {list(ACT_FIELDS)}")
    env = body.get("env", default_env)
    if env not in ENVS:
        raise RequestError(422, f"field 'env': expected one of {list(ENVS)}, got {env!r}")
    task = _text(body, "task", required=True)
    if not task.strip():
        raise RequestError(422, "field 'task' is empty")
    page = _text(body, "page", required=False)
    observation = _text(body, "observation", required=not (env == "mind2web" and page))
    if page and observation and page != observation:
        raise RequestError(422, "give the page snapshot as 'page' or 'observation', not both")
    actions = body.get("admissible_actions")
    if actions is None:
        if env == "alfworld":
            raise RequestError(422, "field 'admissible_actions' is required for env 'alfworld' (a list)")
        actions = []
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise RequestError(422, "field 'admissible_actions': expected a list of strings")
    actions = list(dict.fromkeys(a.strip() for a in actions if a.strip()))
    if env == "alfworld" and not actions:
        raise RequestError(422, "field 'admissible_actions' is empty")
    if len(actions) > MAX_ACTIONS:
        raise RequestError(413, f"field 'admissible_actions': {len(actions)} > {MAX_ACTIONS} actions")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(422, f"field 'seed': expected an integer, got {seed!r}")
    return AgentRequest(
        env=env,
        task=task,
        observation=page or observation,
        admissible_actions=actions,
        history=_history(body.get("history")),
        task_type=_text(body, "task_type", required=False),
        seed=seed,
        steps=_steps(body.get("steps")),
    )


def _steps(value: Any) -> list[tuple[str, list[str], str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(422, f"field 'steps': expected a list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"observation", "admissible_actions", "action"}:
            raise RequestError(422, f"steps[{i}]: expected {{observation, admissible_actions, action}}")
        obs, acts, action = item.get("observation"), item.get("admissible_actions", []), item.get("action")
        if not isinstance(obs, str) or not isinstance(action, str):
            raise RequestError(422, f"steps[{i}]: observation and action must be strings")
        if not isinstance(acts, list) or not all(isinstance(a, str) for a in acts):
            raise RequestError(422, f"steps[{i}].admissible_actions: expected a list of strings")
        out.append((obs, acts, action))
    return out


def decode_body(raw: bytes, max_chars: int) -> Any:
    if len(raw) > max_chars:
        raise RequestError(
            413, f"request body of {len(raw)} bytes exceeds serve.max_request_chars={max_chars}"
        )
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"request body is not valid JSON: {e}") from None
