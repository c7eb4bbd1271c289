"""A readable console: per-stage progress inside an iteration and one summary line per iteration.

On a terminal each stage is a live bar (episodes or prompts done / total); elsewhere (CI, a log file)
one plain line per finished stage. Everything else (vLLM, DeepSpeed, Ray actor logs) stays off the
console unless `evorl -v` (cluster/cli.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

ProgressFn = Callable[[int, int], None]


class Progress:
    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.iteration = 0

    def stage(self, name: str) -> ProgressFn:
        """A callback for one stage: call it with (done, total) as work comes back."""
        t0 = time.perf_counter()

        def update(done: int, total: int) -> None:
            if self.tty:
                end = "\n" if done >= total else ""
                self.stream.write(
                    f"\r  [{self.iteration}] {name:10s} {done}/{total} ({time.perf_counter() - t0:.0f} s)"
                    + end
                )
                self.stream.flush()
            elif done >= total:
                self.stream.write(
                    f"  [{self.iteration}] {name}: {total} done in {time.perf_counter() - t0:.1f} s\n"
                )
                self.stream.flush()

        return update

    def summary(self, iteration: int, total: int, stats: dict[str, float]) -> str:
        """One line of the iteration's main figures (also returned, for tests)."""
        keys = (("source/success", "source"), ("downstream/success", "downstream"), ("baseline/success", "no-skill"),
                ("learner/loss", "loss"), ("policy_version", "v"))  # fmt: skip
        parts = [f"{label} {stats[k]:.3g}" for k, label in keys if k in stats]
        times = ", ".join(f"{k[5:]} {v:.0f}" for k, v in stats.items() if k.startswith("time/"))
        line = (
            f"iteration {iteration}/{total}: "
            + " | ".join(parts)
            + f" ({stats.get('iteration_s', 0):.0f} s: {times})"
        )
        self.stream.write(line + "\n")
        self.stream.flush()
        return line
