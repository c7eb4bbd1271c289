"""Outside text -> prompt text: the one sanitiser, and chat messages -> token ids.

Observations, tasks, skills and HTTP request bodies are all model input that somebody else wrote; none
may carry a chat-template control token into a prompt (it would forge a turn boundary) or a control
character. Every prompt in the project (rollout, extractor, SFT demos, serving) goes through
`sanitize` and `encode_messages`.
"""

from __future__ import annotations

import re
from typing import Any

# <|im_start|>, <|im_end|>, <|endoftext|>, any <|...|> up to 64 characters on one line
CONTROL_TOKEN_RE = re.compile(r"<\|[^<>|\n]{0,64}\|>")
_CTRL_CHARS_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def special_tokens(tokenizer: Any) -> list[str]:
    """The tokenizer's special and added-special token strings, longest first."""
    toks = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            toks.add(str(tok))
    return sorted((t for t in toks if t), key=len, reverse=True)


def sanitize(text: str, max_chars: int | None = None, *, tokenizer: Any = None) -> str:
    """Remove control tokens (the pattern above and, given a tokenizer, its special tokens) and control
    characters; cap at `max_chars`.

    Repeated until nothing changes: removing an inner token must not splice an outer one together
    (`<|im_<|x|>start|>` -> `<|im_start|>`)."""
    toks = special_tokens(tokenizer) if tokenizer is not None else []
    while True:
        before = text
        text = _CTRL_CHARS_RE.sub("", CONTROL_TOKEN_RE.sub("", text))
        for tok in toks:
            text = text.replace(tok, "")
        if text == before:
            break
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars]
    return text


def cap(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars`, marked with "..." when cut."""
    return text if len(text) <= max_chars else text[: max(0, max_chars - 3)] + "..."


def encode_messages(
    tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = True
) -> list[int]:
    """Chat template (with the assistant generation prompt) -> token ids."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return list(tokenizer.encode(text, add_special_tokens=False))
