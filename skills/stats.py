"""Downstream statistics of a skill: win rate with a Wilson interval and its gain over the no-skill
baseline on the same tasks, with a Newcombe (hybrid Wilson score) interval for the difference.

Bounds are one-sided at `confidence` (z = Phi^-1(confidence)): the gate asks "is the gain above zero
with 90% confidence", not for a symmetric interval.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from statistics import NormalDist

log = logging.getLogger(__name__)


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(confidence)


def wilson_interval(wins: int, trials: int, confidence: float = 0.9) -> tuple[float, float]:
    """Wilson score bounds of a binomial proportion; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = wins / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class SkillStats:
    trials: int = 0
    wins: int = 0
    baseline_trials: int = 0
    baseline_wins: int = 0
    failed: int = 0  # episodes that crashed: excluded from trials, counted so they are never silent

    def __post_init__(self) -> None:
        for a, b in (("wins", "trials"), ("baseline_wins", "baseline_trials")):
            w, t = getattr(self, a), getattr(self, b)
            if t < 0 or w < 0 or w > t:
                raise ValueError(f"SkillStats: need 0 <= {a} ({w}) <= {b} ({t})")
        if self.failed < 0:
            raise ValueError(f"SkillStats: failed must be >= 0, got {self.failed}")

    def __add__(self, other: SkillStats) -> SkillStats:
        return SkillStats(
            self.trials + other.trials,
            self.wins + other.wins,
            self.baseline_trials + other.baseline_trials,
            self.baseline_wins + other.baseline_wins,
            self.failed + other.failed,
        )

    @property
    def win_rate(self) -> float:
        return self.wins / self.trials if self.trials else 0.0

    @property
    def baseline_rate(self) -> float:
        return self.baseline_wins / self.baseline_trials if self.baseline_trials else 0.0

    @property
    def gain(self) -> float:
        return self.win_rate - self.baseline_rate

    def win_interval(self, confidence: float = 0.9) -> tuple[float, float]:
        return wilson_interval(self.wins, self.trials, confidence)

    def gain_interval(self, confidence: float = 0.9) -> tuple[float, float]:
        """Newcombe's hybrid score bounds of win_rate - baseline_rate; (-1, 1) without data."""
        if self.trials == 0 or self.baseline_trials == 0:
            return -1.0, 1.0
        p1, p2 = self.win_rate, self.baseline_rate
        l1, u1 = self.win_interval(confidence)
        l2, u2 = wilson_interval(self.baseline_wins, self.baseline_trials, confidence)
        d = p1 - p2
        lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
        upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
        return max(-1.0, lower), min(1.0, upper)
