"""One metric namespace (`evorl_*`) written to three sinks: metrics.jsonl, TensorBoard and the Ray
dashboard (ray.util.metrics gauges, scraped from Ray's Prometheus endpoint)."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

_SAFE = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(key: str) -> str:
    return "evorl_" + _SAFE.sub("_", key)


class Metrics:
    """`resumed_at`: the iteration a resumed run continues after; records of later iterations (the
    killed run's, to be redone) are removed from metrics.jsonl and purged from TensorBoard."""

    def __init__(
        self, run_dir: Path, use_ray: bool = True, use_tensorboard: bool = True, resumed_at: int | None = None
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resumed_at is not None and self.path.exists():
            from cluster.core.storage import atomic_write_text

            keep = [
                json.dumps(r) + "\n" for r in read_metrics(run_dir) if r.get("iteration", 0) <= resumed_at
            ]
            atomic_write_text(self.path, "".join(keep))
        self._gauges: dict = {}
        self._use_ray = use_ray
        self._tb = None
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resumed_at is None else resumed_at + 1
                self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
            except ImportError:  # tensorboard is optional at run time
                self._tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
        with self.path.open("a") as f:  # append-only; one line per record survives a crash
            f.write(json.dumps({"iteration": step, "time": time.time(), **clean}) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._use_ray:
            from ray.util.metrics import Gauge

            for k, v in clean.items():
                name = metric_name(k)
                if name not in self._gauges:
                    self._gauges[name] = Gauge(name, description=k)
                self._gauges[name].set(v)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return rows
