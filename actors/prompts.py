"""The solver prompt in one place, for rollouts, SFT demonstrations and serving.

System: the agent's role, rules and output format; with a skill (`skills.placement: system`, the
paper's), the skill card follows at the end of the system message under "Reference Skill", after
the instruction to first judge whether it applies. User: "Your task is to: ...", the observation and
the admissible actions. Two contexts (`env.context`):
- sequence: the conversation grows turn by turn (system, user, assistant, user, ...) and its token
  ids are append-only (`Conversation`): the whole episode is one trace, observations mask 0;
- window: every turn is one fresh prompt with the last `history_window` steps (`window_messages`).
Every piece of outside text goes through cluster.core.text.sanitize.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cluster.core.text import cap, encode_messages, sanitize

DOMAINS = {
    "alfworld": "the ALFRED household environment (ALFWorld)",
    "mind2web": "a web browsing environment, acting on page elements (Mind2Web)",
}
RULES = (
    "Rules: choose exactly one action per turn from the admissible actions, copied exactly; "
    "do not repeat actions that changed nothing."
)
FORMAT_FREE = "Answer in this format:\n<reasoning>one short sentence</reasoning>\n<action>one admissible action</action>"
FORMAT_CONSTRAINED = "Answer with the action only, copied exactly from the admissible actions."
SKILL_INSTRUCTION = (
    "A relevant skill extracted from a previous similar task is given below for your reference. "
    "First judge whether the skill applies to this task; follow it where it does."
)


@dataclass
class SolverView:
    """What the solver sees at one turn (window context and serving)."""

    task_text: str
    observation: str
    admissible_actions: list[str]
    history: list[tuple[str, str]] = field(default_factory=list)  # (action, observation), oldest first
    skill: str | None = None


@dataclass(frozen=True)
class PromptStyle:
    """The prompt settings of one run (from env and skills config)."""

    env_name: str = "alfworld"
    constrained: bool = True
    max_observation_chars: int = 2000
    max_skill_chars: int = 4000
    skill_placement: str = "system"

    @classmethod
    def from_config(cls, cfg: Any) -> PromptStyle:
        return cls(cfg.env.name, cfg.env.constrained_actions, cfg.env.max_observation_chars,
                   cfg.skills.max_skill_chars, cfg.skills.placement)  # fmt: skip


def _clean(text: str, limit: int, tokenizer: Any) -> str:
    # cut first (a 1 MB string must not cost 1 MB of scans), then sanitise, then cap what remains
    return cap(sanitize(text[: 2 * limit], tokenizer=tokenizer).strip(), limit)


def system_prompt(style: PromptStyle, skill: str | None, constrained: bool, tokenizer: Any = None) -> str:
    text = (
        f"You are an intelligent agent in {DOMAINS.get(style.env_name, style.env_name)}. "
        f"{RULES}\n{FORMAT_CONSTRAINED if constrained else FORMAT_FREE}"
    )
    if skill and style.skill_placement == "system":
        text += (
            f"\n\n{SKILL_INSTRUCTION}\n\nReference Skill:\n{_clean(skill, style.max_skill_chars, tokenizer)}"
        )
    return text


def _observation_block(style: PromptStyle, observation: str, admissible: list[str], tokenizer: Any) -> str:
    parts = [_clean(observation, style.max_observation_chars, tokenizer)]
    if admissible:
        parts.append("Admissible actions:\n" + "\n".join(_clean(a, 1000, tokenizer) for a in admissible))
    return "\n\n".join(parts)


def first_user(style: PromptStyle, task_text: str, observation: str, admissible: list[str],
               skill: str | None, tokenizer: Any = None) -> str:  # fmt: skip
    head = []
    if skill and style.skill_placement == "user":
        head.append(f"Reference Skill:\n{_clean(skill, style.max_skill_chars, tokenizer)}")
    head.append(f"Your task is to: {_clean(task_text, 1000, tokenizer)}")
    return "\n\n".join([*head, _observation_block(style, observation, admissible, tokenizer)])


def next_user(style: PromptStyle, observation: str, admissible: list[str], tokenizer: Any = None) -> str:
    return _observation_block(style, observation, admissible, tokenizer)


def window_messages(style: PromptStyle, view: SolverView, tokenizer: Any = None) -> list[dict[str, str]]:
    """Chat messages for one turn in the window context (and for serving)."""
    constrained = style.constrained and bool(view.admissible_actions)
    user = first_user(style, view.task_text, "", [], view.skill, tokenizer).rstrip()
    if view.history:
        half = max(style.max_observation_chars // 2, 100)
        lines = [f"> {_clean(a, 200, tokenizer)}\n{_clean(o, half, tokenizer)}" for a, o in view.history]
        user += "\n\nRecent history:\n" + "\n".join(lines)
    user += "\n\nObservation:\n" + _observation_block(
        style, view.observation, view.admissible_actions, tokenizer
    )
    return [
        {"role": "system", "content": system_prompt(style, view.skill, constrained, tokenizer)},
        {"role": "user", "content": user},
    ]


def conversation_messages(style: PromptStyle, task_text: str, observations: list[str], admissible: list[list[str]],
                          actions: list[str], skill: str | None, tokenizer: Any = None) -> list[dict[str, str]]:  # fmt: skip
    """The sequence context as chat messages (serving: the request carries the episode so far):
    observations[i], with admissible[i] offered at it, precedes actions[i]."""
    if not len(observations) == len(admissible) == len(actions) + 1:
        raise ValueError(
            f"{len(observations)} observations, {len(admissible)} action lists, {len(actions)} actions"
        )
    constrained = style.constrained and bool(admissible[-1])
    msgs = [{"role": "system", "content": system_prompt(style, skill, constrained, tokenizer)}]
    for i, (obs, acts) in enumerate(zip(observations, admissible)):
        user = (
            first_user(style, task_text, obs, acts, skill, tokenizer)
            if i == 0
            else next_user(style, obs, acts, tokenizer)
        )
        msgs.append({"role": "user", "content": user})
        if i < len(actions):
            msgs.append({"role": "assistant", "content": _clean(actions[i], 200, tokenizer)})
    return msgs


class ChatFormat:
    """How a tokenizer's chat template continues a conversation after an assistant turn, derived once
    by rendering a probe conversation: the text that closes an assistant message, and the text around
    a new user message up to the next assistant header. Requires a template whose rendering of a
    conversation is a prefix of the rendering of any continuation (ChatML: SmolLM2, Qwen2.5)."""

    _PROBE = "\x1fPROBE\x1f"

    def __init__(self, tokenizer: Any) -> None:
        sys_user = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
        closed = tokenizer.apply_chat_template(
            [*sys_user, {"role": "assistant", "content": "A"}], tokenize=False
        )
        longer = tokenizer.apply_chat_template(
            [*sys_user, {"role": "assistant", "content": "A"}, {"role": "user", "content": self._PROBE}],
            tokenize=False,
            add_generation_prompt=True,
        )
        if not longer.startswith(closed) or self._PROBE not in longer:
            raise ValueError("chat template is not append-only: use env.context=window")
        self.end_of_assistant = closed[closed.rindex("A") + 1 :]  # "<|im_end|>\n"
        self.before_user, self.after_user = longer[len(closed) :].split(self._PROBE)
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if eos is not None else set()
        self.eos_text = tokenizer.eos_token or ""

    def continuation(self, response_ids: list[int], user_text: str) -> list[int]:
        """Token ids to append after a generated response, up to the next generation prompt."""
        close = self.end_of_assistant
        if response_ids and response_ids[-1] in self.eos_ids and close.startswith(self.eos_text):
            close = close[len(self.eos_text) :]  # the model already emitted the end-of-turn token
        text = close + self.before_user + user_text + self.after_user
        return list(self.tokenizer.encode(text, add_special_tokens=False))


@dataclass
class Conversation:
    """The append-only token transcript of one episode (context=sequence)."""

    ids: list[int]
    spans: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def start(cls, tokenizer: Any, system: str, user: str) -> Conversation:
        return cls(encode_messages(tokenizer, [{"role": "system", "content": system},
                                               {"role": "user", "content": user}]))  # fmt: skip

    def add_response(self, token_ids: list[int]) -> None:
        start = len(self.ids)
        self.ids = self.ids + list(token_ids)
        self.spans.append((start, len(self.ids)))

    def add_user(self, fmt: ChatFormat, user_text: str) -> None:
        last = self.ids[self.spans[-1][0] : self.spans[-1][1]] if self.spans else []
        self.ids = self.ids + fmt.continuation(last, user_text)
