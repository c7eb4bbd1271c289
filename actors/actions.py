"""Parse the solver's free-text output into one env command (ALFWorld and Mind2Web alike).

The paper's format is `<reasoning>...</reasoning><action>...</action>` with the action copied
verbatim from the admissible list. A bare one-line action is accepted too. When nothing parsable is
found the result carries the reason, and the episode loop counts it (EpisodeResult.unparsable_actions)
instead of guessing. Parsing never checks admissibility: a well-formed but non-admissible action goes
to the engine, which answers "Nothing happens." and the env counts it as invalid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_ACTION_RE = re.compile(r"<action>(.*?)</action>", re.IGNORECASE | re.DOTALL)
_OPEN_RE = re.compile(r"<action>", re.IGNORECASE)
_TAG_RE = re.compile(r"</?\s*(reasoning|action|think)\s*>", re.IGNORECASE)
_PREFIX_RE = re.compile(r"^(action|>)\s*:?\s*", re.IGNORECASE)
MAX_ACTION_CHARS = 200


@dataclass(frozen=True)
class ParsedAction:
    action: str | None  # the command to send to the env, None when unparsable
    reason: str = ""  # why it is unparsable ("" when parsed)

    @property
    def ok(self) -> bool:
        return self.action is not None


def _clean(text: str) -> str:
    text = " ".join(text.split())
    text = text.strip("`'\" ")
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text


def _canonical(action: str, admissible: Sequence[str] | None) -> str:
    """The admissible command's own spelling when it matches up to case and spacing."""
    if admissible:
        key = action.lower()
        for cand in admissible:
            if " ".join(cand.split()).lower() == key:
                return cand
    return action


def parse_action(text: str, admissible: Sequence[str] | None = None) -> ParsedAction:
    """The last `<action>...</action>` of `text`; else an unclosed `<action>` up to the line end
    (generation cut by the token limit); else the text itself when it is a single line without tags."""
    if not text or not text.strip():
        return ParsedAction(None, "empty output")
    tagged = _ACTION_RE.findall(text)
    if tagged:
        action = _clean(tagged[-1])
        if not action:
            return ParsedAction(None, "empty <action> tag")
    else:
        opens = list(_OPEN_RE.finditer(text))
        if opens:
            tail = text[opens[-1].end() :].strip()
            action = _clean(tail.splitlines()[0]) if tail else ""
            if not action:
                return ParsedAction(None, "unclosed empty <action> tag")
        else:
            lines = [ln for ln in text.strip().splitlines() if ln.strip()]
            if len(lines) != 1 or _TAG_RE.search(text):
                return ParsedAction(None, "no <action> tag and not a single bare action line")
            action = _clean(_PREFIX_RE.sub("", lines[0].strip()))
            if not action:
                return ParsedAction(None, "empty action line")
    if len(action) > MAX_ACTION_CHARS:
        return ParsedAction(None, f"action longer than {MAX_ACTION_CHARS} characters")
    return ParsedAction(_canonical(action, admissible))


def format_action(action: str, reasoning: str = "") -> str:
    """The solver's output format, for demonstrations and for constrained decoding's choices."""
    return f"<reasoning>{reasoning}</reasoning><action>{action}</action>"


def choose_action(text: str, choices: Sequence[str] | None, admissible: Sequence[str] | None) -> ParsedAction:
    """The env command a solver output stands for: under constrained decoding the chosen string
    itself; else the parsed `<action>` (unparsable: the reason, and the env gets the raw text)."""
    if choices is not None and text.strip() in choices:
        return ParsedAction(text.strip())
    return parse_action(text, admissible)
