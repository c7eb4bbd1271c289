"""One metric namespace, many sinks: metrics.jsonl (always; the record the run's tools read),
TensorBoard, Weights & Biases, MLflow, and Ray gauges (Prometheus shows a key `source/success` as
`ray_evorl_source_success{run="<run name>"}`; docs/monitoring.md).

Trackers keep the `/`-style keys. A resumed run continues its tracker runs: their ids are kept in the
run folder (`wandb_run_id`, `mlflow_run_id`). Each tracker package is imported only when asked for.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.core.storage import append_line

if TYPE_CHECKING:
    from cluster.core.config import Config

log = logging.getLogger("evorl.metrics")
_SAFE = re.compile(r"[^a-zA-Z0-9_]")
TRACKERS = ("wandb", "mlflow")
_PIP = {"wandb": "wandb==0.31.0", "mlflow": "mlflow-skinny==3.17.2"}


def metric_name(key: str) -> str:
    """The Ray gauge name of a key; Prometheus adds Ray's `ray_` prefix."""
    return "evorl_" + _SAFE.sub("_", key)


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"trainer.loggers has {module!r} but the {module} package is not installed; install it with "
            f"`.venv/bin/pip install {_PIP[module]}` or drop {module!r} from trainer.loggers"
        ) from e


def _tracker_run_id(run_dir: Path, tracker: str, resumed_at: int | None) -> str | None:
    """The tracker run to continue: the stored one on a resume, none for a fresh start (run.py clears
    a folder it starts over in, so a stored id there belongs to a run that is gone)."""
    path = run_dir / f"{tracker}_run_id"
    if resumed_at is None or not path.exists():
        return None
    return path.read_text().strip() or None


def _store_run_id(run_dir: Path, tracker: str, run_id: str) -> None:
    from cluster.core.storage import atomic_write_text

    atomic_write_text(run_dir / f"{tracker}_run_id", run_id + "\n")


class WandbSink:
    """One W&B run per evorl run. Steps go in an `iteration` field (W&B's own step only grows): the
    iterations a resumed run redoes show twice there, the killed attempt's and the redo."""

    def __init__(self, run_dir: Path, run_name: str, resumed_at: int | None, config: dict | None) -> None:
        wandb = _require("wandb")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "evorl"),
            name=run_name,
            id=_tracker_run_id(run_dir, "wandb", resumed_at),  # None: W&B picks a new one
            resume="allow",
            dir=str(run_dir),
            config=config,
            allow_val_change=True,  # a resume may change the config (more iterations)
            reinit="create_new",
            settings=wandb.Settings(console="off"),  # leave stdout to tqdm and Ray
        )
        self.run.define_metric("iteration")
        self.run.define_metric("*", step_metric="iteration")
        _store_run_id(run_dir, "wandb", self.run.id)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({"iteration": step, **values})

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    """One MLflow run per evorl run, in the experiment MLFLOW_EXPERIMENT_NAME (default "evorl") of
    the store MLFLOW_TRACKING_URI names. A resumed run logs the redone iterations' steps again."""

    def __init__(self, run_dir: Path, run_name: str, resumed_at: int | None, config: dict | None) -> None:
        _require("mlflow")
        from mlflow.tracking import MlflowClient

        self.client = c = MlflowClient()
        run_id = _tracker_run_id(run_dir, "mlflow", resumed_at)
        if run_id is not None:
            try:
                c.update_run(run_id, status="RUNNING")
            except Exception as e:  # noqa: BLE001 - a store without that run: start a new one
                log.warning("mlflow: cannot continue run %s (%s); starting a new run", run_id, e)
                run_id = None
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "evorl")
            exp = c.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else c.create_experiment(name)
            run_id = c.create_run(exp_id, run_name=run_name).info.run_id
            self._log_params(run_id, config or {})
        self.run_id = run_id
        _store_run_id(run_dir, "mlflow", run_id)

    def _log_params(self, run_id: str, config: dict) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:500]) for k, v in _flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow's per-call limit
            self.client.log_batch(run_id, params=params[i : i + 100])

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


_SINKS = {"wandb": WandbSink, "mlflow": MlflowSink}


class Metrics:
    """`resumed_at`: the iteration a resumed run continues after; records of later iterations (the
    killed run's, to be redone) are removed from metrics.jsonl and purged from TensorBoard, and the
    trackers continue their runs. `run_name` tags the Ray gauges and names the tracker runs."""

    def __init__(
        self,
        run_dir: Path,
        use_ray: bool = True,
        use_tensorboard: bool = True,
        resumed_at: int | None = None,
        run_name: str = "",
        trackers: tuple[str, ...] | list[str] = (),
        config: dict | None = None,
    ) -> None:
        run_dir = Path(run_dir)
        self.run_name = run_name or run_dir.name
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
        unknown = set(trackers) - set(_SINKS)
        if unknown:
            raise ValueError(f"unknown trackers {sorted(unknown)}; expected some of {list(_SINKS)}")
        self._trackers: dict[str, Any] = {}
        for name in trackers:
            self._trackers[name] = _SINKS[name](run_dir, self.run_name, resumed_at, config)

    @classmethod
    def from_config(
        cls, cfg: Config, run_dir: Path, resumed_at: int | None = None, use_ray: bool = True
    ) -> Metrics:
        """The sinks `cfg.trainer.loggers` names (jsonl is always written), named `cfg.trainer.run_name`
        or the run folder's name."""
        loggers = list(cfg.trainer.loggers)
        return cls(
            Path(run_dir),
            use_ray=use_ray,
            use_tensorboard="tensorboard" in loggers,
            resumed_at=resumed_at,
            run_name=cfg.trainer.run_name,
            trackers=[t for t in TRACKERS if t in loggers],
            config=cfg.to_dict(),
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
        # one write per record: a crash or a full disk never leaves half a line (cluster.core.storage)
        append_line(self.path, json.dumps({"iteration": step, "time": time.time(), **clean}))
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        for name, sink in self._trackers.items():
            try:
                sink.log(step, clean)
            except Exception as e:  # noqa: BLE001 - a tracker outage must not end a training run
                log.warning("%s: metrics of iteration %d not logged: %s", name, step, e)
        if self._use_ray:
            self._set_gauges(clean)

    def _set_gauges(self, values: dict[str, float]) -> None:
        from ray.util.metrics import Gauge

        tags = {"run": self.run_name}
        for k, v in values.items():
            name = metric_name(k)
            if name not in self._gauges:
                self._gauges[name] = Gauge(name, description=k, tag_keys=("run",))
            self._gauges[name].set(v, tags=tags)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        for name, sink in self._trackers.items():
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001
                log.warning("%s: closing failed: %s", name, e)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return rows
