"""Mind2Web's metrics, as MindAct's evaluator computes them, plus the replay "action accuracy".

- element accuracy: the chosen element is one of the step's positive candidates;
- operation F1: token F1 between the predicted and gold operation strings ("CLICK", "TYPE <value>",
  "SELECT <value>"), over token *sets* after lower-casing, as MindAct's `calculate_f1`;
- step success: element right and operation F1 == 1;
- task success: every step of the task successful;
- action accuracy (the offline replay of the Evolving-RL paper, which stops at the first wrong
  action): steps done right before the first error, over all gold steps.
Each of the step metrics is reported micro (over steps) and macro (per task, then over tasks;
MindAct's `marco_*`, the numbers the Mind2Web paper reports). No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def op_string(op: str, value: str) -> str:
    """MindAct's operation string: the value is dropped for CLICK."""
    op = op.upper()
    return op if op == "CLICK" else f"{op} {value}".strip()


def token_f1(pred: str, gold: str) -> float:
    p, g = set(normalise(pred).split()), set(normalise(gold).split())
    if not p and not g:
        return 1.0
    if not p or not g:
        return 0.0
    tp = len(p & g)
    if tp == 0:
        return 0.0
    precision, recall = tp / len(p), tp / len(g)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class StepScore:
    step: int
    element_correct: bool
    op_f1: float

    @property
    def success(self) -> bool:
        return self.element_correct and self.op_f1 == 1.0


@dataclass
class EpisodeScore:
    """The scored steps of one task; `n_steps` counts the gold steps, scored or not (paper mode stops
    scoring at the first error, and max_steps may cut a long task)."""

    annotation_id: str
    n_steps: int
    steps: list[StepScore] = field(default_factory=list)
    website: str = ""
    domain: str = ""
    subdomain: str = ""

    @property
    def success(self) -> bool:
        return len(self.steps) == self.n_steps and all(s.success for s in self.steps)

    @property
    def prefix(self) -> int:
        """Leading successful steps."""
        n = 0
        for s in self.steps:
            if not s.success:
                break
            n += 1
        return n


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def aggregate(episodes: Iterable[EpisodeScore]) -> dict[str, float | int]:
    eps = list(episodes)
    steps = [s for e in eps for s in e.steps]
    scored = [e for e in eps if e.steps]
    gold_steps = sum(e.n_steps for e in eps)
    return {
        "tasks": len(eps),
        "gold_steps": gold_steps,
        "scored_steps": len(steps),
        "element_acc": _mean([float(s.element_correct) for s in steps]),
        "op_f1": _mean([s.op_f1 for s in steps]),
        "step_sr": _mean([float(s.success) for s in steps]),
        "macro_element_acc": _mean([_mean([float(s.element_correct) for s in e.steps]) for e in scored]),
        "macro_op_f1": _mean([_mean([s.op_f1 for s in e.steps]) for e in scored]),
        "macro_step_sr": _mean([_mean([float(s.success) for s in e.steps]) for e in scored]),
        "task_sr": _mean([float(e.success) for e in eps]),
        "action_acc": sum(e.prefix for e in eps) / gold_steps if gold_steps else 0.0,
    }


def aggregate_by(episodes: Iterable[EpisodeScore], key: str) -> dict[str, dict[str, float | int]]:
    """aggregate() per value of an EpisodeScore attribute (website, domain, subdomain)."""
    groups: dict[str, list[EpisodeScore]] = {}
    for e in episodes:
        groups.setdefault(getattr(e, key), []).append(e)
    return {k: aggregate(v) for k, v in sorted(groups.items())}
