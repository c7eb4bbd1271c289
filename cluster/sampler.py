"""Seeded task sampler whose position is part of the checkpoint, so a resumed run sees the same tasks."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from cluster.core.records import TaskSpec


@dataclass
class TaskSampler:
    tasks: list[TaskSpec]
    seed: int
    epoch: int = 0
    position: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("task sampler: no tasks to sample from")
        self._shuffle()

    def _shuffle(self) -> None:
        self._order = list(range(len(self.tasks)))
        random.Random(f"{self.seed}-{self.epoch}").shuffle(self._order)

    def next(self, n: int) -> list[TaskSpec]:
        out = []
        for _ in range(n):
            if self.position >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._shuffle()
            out.append(self.tasks[self._order[self.position]])
            self.position += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def restore(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._shuffle()
