"""The text-environment interface shared by ALFWorld and Mind2Web."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from cluster.core.records import TaskSpec


@dataclass
class Observation:
    text: str
    admissible_actions: list[str]
    task_text: str
    task_type: str


@dataclass
class StepResult:
    observation: Observation
    reward: float
    done: bool
    won: bool
    invalid_action: bool = False
    info: dict = field(default_factory=dict)


class TextEnv(Protocol):
    """reset(task) -> Observation; step(action) -> StepResult. `max_steps` ends the episode (done, not won)."""

    max_steps: int

    def reset(self, task: TaskSpec) -> Observation: ...

    def step(self, action: str) -> StepResult: ...

    def close(self) -> None: ...
