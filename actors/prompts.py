"""The solver prompt (paper format) in one place: chat messages -> token ids via the chat template.

System: role, rules, output format. User: optional "Reference Skill", task, recent history window,
current observation, admissible actions. Every piece of outside text (observations, skills, tasks)
is stripped of chat-template control tokens first, so an env or a generated skill cannot forge a
turn boundary. Prompts are kept short on purpose: on CPU the prefill dominates rollout time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_CONTROL = re.compile(r"<\|[^|<>\s]{1,40}\|>")  # <|im_start|>, <|im_end|>, <|endoftext|>, ...

DOMAINS = {
    "alfworld": "a text-based household environment (ALFWorld)",
    "mind2web": "a website, acting on page elements (Mind2Web)",
}

RULES = (
    "Rules: choose exactly one action per turn from the admissible actions; "
    "use the reference skill when it fits the task; do not repeat actions that changed nothing."
)
FORMAT_FREE = "Answer in this format:\n<reasoning>one short sentence</reasoning>\n<action>one admissible action</action>"
FORMAT_CONSTRAINED = "Answer with the action only, copied exactly from the admissible actions."


@dataclass
class SolverView:
    """What the solver sees at one turn."""

    task_text: str
    observation: str
    admissible_actions: list[str]
    history: list[tuple[str, str]]  # (action, observation) pairs, oldest first
    skill: str | None = None


def special_tokens(tokenizer: Any) -> list[str]:
    toks = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            toks.add(str(tok))
    return sorted((t for t in toks if t), key=len, reverse=True)


def sanitize(text: str, tokenizer: Any = None) -> str:
    """Remove chat-template control tokens and the tokenizer's special tokens from outside text.

    Repeated until nothing changes: removing an inner token must not splice an outer one together
    (`<|im_<|x|>start|>` -> `<|im_start|>`)."""
    toks = special_tokens(tokenizer) if tokenizer is not None else []
    while True:
        before = text
        text = _CONTROL.sub("", text)
        for tok in toks:
            text = text.replace(tok, "")
        if text == before:
            return text


def _cap(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(0, max_chars - 3)] + "..."


def solver_messages(
    view: SolverView,
    env_name: str = "alfworld",
    constrained: bool = True,
    max_observation_chars: int = 2000,
    tokenizer: Any = None,
    max_skill_chars: int = 4000,  # skills.max_skill_chars: a card longer than that was not made by us
) -> list[dict[str, str]]:
    """Chat messages for one solver turn (sanitised; observation and skill capped)."""

    def clean(s: str, limit: int = max(max_observation_chars, 1000)) -> str:
        # cut first (a 1 MB string must not cost 1 MB of scans), then sanitise, then cap what remains
        return _cap(sanitize(s[: 2 * limit], tokenizer).strip(), limit)

    system = (
        f"You are an agent acting in {DOMAINS.get(env_name, env_name)}. "
        f"{RULES}\n{FORMAT_CONSTRAINED if constrained else FORMAT_FREE}"
    )
    parts = []
    if view.skill:
        parts.append(f"## Reference Skill\n{clean(view.skill, max_skill_chars)}")
    parts.append(f"## Task\n{clean(view.task_text)}")
    if view.history:
        lines = [f"> {clean(a)}\n{clean(o, max_observation_chars // 2)}" for a, o in view.history]
        parts.append("## Recent history\n" + "\n".join(lines))
    parts.append(f"## Observation\n{clean(view.observation, max_observation_chars)}")
    if view.admissible_actions:
        parts.append("## Admissible actions\n" + "\n".join(clean(a) for a in view.admissible_actions))
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def encode_messages(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Chat template (with the assistant generation prompt) -> token ids."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))
