"""What a generation request asks for and what comes back: the records every engine, pool and caller share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenParams:
    """Sampling settings of one request. `choices` = constrained decoding to exactly one of these strings;
    `json_schema` = structured output; at most one of them. `logprobs`: return the engine's behaviour
    logprobs of the sampled tokens (off by default: the learner recomputes them in its first pass)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 48
    seed: int | None = None
    stop: list[str] | None = None
    choices: list[str] | None = None
    json_schema: dict | None = None
    n: int = 1
    logprobs: bool = False

    def __post_init__(self) -> None:
        if self.choices is not None and self.json_schema is not None:
            raise ValueError("GenParams: choices and json_schema are mutually exclusive")
        if self.choices is not None and not self.choices:
            raise ValueError("GenParams: choices is an empty list")
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError(f"GenParams: n={self.n} and max_tokens={self.max_tokens} must be >= 1")


@dataclass
class Generation:
    """One sampled completion. `logprobs[i]` is the raw logprob of `token_ids[i]` when the request
    asked for them, else empty. `policy_version`: the weights of the engine that sampled it."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    policy_version: int = 0
