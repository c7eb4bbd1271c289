"""The /act request: validation with a named reason for every bad field (4xx, never a 500)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ENVS = ("alfworld", "mind2web")
MAX_SEED = 2**63 - 1
MAX_CHAT_TOKENS = 1024
CHAT_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop",
               "seed", "stream", "user", "frequency_penalty", "presence_penalty", "logit_bias", "response_format"}  # fmt: skip
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
    seed = _seed(body.get("seed"))
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
    from cluster.core.storage import CorruptFileError, parse_json

    try:
        return parse_json(raw.decode("utf-8"), "request body", max_depth=16)
    except UnicodeDecodeError as e:
        raise RequestError(400, f"request body is not UTF-8: {e}") from None
    except CorruptFileError as e:
        raise RequestError(400, str(e)) from None


def _seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RequestError(422, f"field 'seed': expected an integer in [0, 2^63), got {seed!r:.40}")
    return seed


def _number(body: dict, key: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    v = body.get(key, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise RequestError(422, f"field {key!r}: expected a finite number, got {v!r:.40}")
    if not (lo < v if lo_open else lo <= v) or v > hi:
        raise RequestError(
            422, f"field {key!r}: expected {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v:g}"
        )
    return float(v)


@dataclass
class ChatRequest:
    """One validated /v1/chat/completions request."""

    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str] | None
    seed: int | None
    model: str


def parse_chat(body: Any) -> ChatRequest:
    """Validate an OpenAI chat.completions body; every bad field is a 4xx naming it. `stream: true`
    is refused with a 400 saying so (responses come whole)."""
    if not isinstance(body, dict):
        raise RequestError(422, "request body: expected a JSON object")
    unknown = sorted(set(body) - CHAT_FIELDS)
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown}")
    if body.get("stream"):
        raise RequestError(
            400, "field 'stream': streaming is not supported; send stream=false for a whole answer"
        )
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RequestError(422, "field 'messages': expected a non-empty list")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise RequestError(422, f"messages[{i}]: expected {{role: system|user|assistant, content}}")
        if not isinstance(m.get("content"), str):
            raise RequestError(422, f"messages[{i}].content: expected a string")
        out.append({"role": m["role"], "content": m["content"]})
    if body.get("n", 1) != 1:
        raise RequestError(422, "field 'n': only n=1 is supported")
    key = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    max_tokens = _number(body, key, 128, 1, MAX_CHAT_TOKENS)
    if max_tokens != int(max_tokens):
        raise RequestError(422, f"field {key!r}: expected an integer")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (
        isinstance(stop, list)
        and len(stop) <= 4
        and all(isinstance(x, str) and 0 < len(x) <= 256 for x in stop)
    ):
        raise RequestError(422, "field 'stop': expected a string or a list of at most 4 strings")
    model = body.get("model") or "evorl"
    if not isinstance(model, str):
        raise RequestError(422, "field 'model': expected a string")
    return ChatRequest(out, int(max_tokens), _number(body, "temperature", 0.0, 0.0, 2.0),
                       _number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True), stop, _seed(body.get("seed")), model)  # fmt: skip
