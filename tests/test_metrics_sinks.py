"""cluster/metrics.py's sinks: metrics.jsonl and TensorBoard drop a resumed run's redone iterations;
W&B (offline) and MLflow (local file store) keep one tracker run per evorl run across a resume; the
Ray gauges reach a real Prometheus as ray_evorl_*{run=...}, and the shipped scrape config and Grafana
dashboard queries work against it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from cluster.core.config import load_config
from cluster.metrics import Metrics, metric_name, read_metrics

MONITORING = Path(__file__).resolve().parent.parent / "cluster" / "monitoring"


def _log_iterations(m: Metrics, steps: range, value: float) -> None:
    for i in steps:
        m.log(i, {"source/success": value + i, "learner/loss": 1.0})


def test_jsonl_and_tensorboard_drop_redone_iterations(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = Metrics(tmp_path, use_ray=False)
    _log_iterations(m, range(4), 0.0)  # the killed run got to iteration 3; its checkpoint is at 1
    m.close()
    m = Metrics(tmp_path, use_ray=False, resumed_at=1)
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [0, 1]
    _log_iterations(m, range(2, 4), 10.0)
    m.close()
    rows = read_metrics(tmp_path)
    assert [(r["iteration"], r["source/success"]) for r in rows] == [(0, 0.0), (1, 1.0), (2, 12.0), (3, 13.0)]
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("source/success")] == [
        (0, 0.0),
        (1, 1.0),
        (2, 12.0),
        (3, 13.0),
    ]


def test_from_config_picks_sinks_and_name(tmp_path):
    cfg = load_config(None, ["trainer.loggers=[jsonl]"])
    m = Metrics.from_config(cfg, tmp_path / "my-run", use_ray=False)
    assert m.run_name == "my-run" and m._tb is None and not m._trackers
    m.log(0, {"a/b": 1, "skip": float("nan"), "text": "x"})
    assert read_metrics(tmp_path / "my-run")[0]["a/b"] == 1.0
    cfg = load_config(None, ["trainer.run_name=named", "trainer.loggers=[tensorboard]"])
    m2 = Metrics.from_config(cfg, tmp_path / "other", use_ray=False)
    assert m2.run_name == "named" and m2._tb is not None
    m.close(), m2.close()
    assert metric_name("skill-eval/restarts") == "evorl_skill_eval_restarts"


def test_missing_tracker_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ImportError, match=r"pip install wandb==") as e:
        Metrics(tmp_path, use_ray=False, use_tensorboard=False, trackers=["wandb"])
    assert "trainer.loggers" in str(e.value)
    with pytest.raises(ValueError, match="unknown trackers"):
        Metrics(tmp_path, use_ray=False, use_tensorboard=False, trackers=["neptune"])


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (requirements/cpu.txt: wandb==0.31.0)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # nothing under ~
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))


def test_wandb_offline_run_id_survives_resume(tmp_path, wandb_offline):
    run = tmp_path / "run"
    cfg = load_config(None, ["trainer.loggers=[jsonl,wandb]"])
    m = Metrics.from_config(cfg, run, use_ray=False)
    first = m._trackers["wandb"].run.id
    _log_iterations(m, range(3), 0.0)
    m.close()
    assert (run / "wandb_run_id").read_text().strip() == first
    m = Metrics.from_config(cfg, run, resumed_at=1, use_ray=False)  # a resume continues the W&B run
    assert m._trackers["wandb"].run.id == first
    _log_iterations(m, range(2, 3), 10.0)
    m.close()
    offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith(first) for name in offline)
    m = Metrics.from_config(cfg, run, use_ray=False)  # a fresh start is a new W&B run
    assert m._trackers["wandb"].run.id != first
    m.close()


def test_mlflow_file_store_metrics_and_resume(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed (requirements/cpu.txt: mlflow-skinny==3.17.2)")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this
    run = tmp_path / "run"
    cfg = load_config(None, ["trainer.loggers=[jsonl,mlflow]", "trainer.run_name=ml-run"])
    m = Metrics.from_config(cfg, run, use_ray=False)
    run_id = m._trackers["mlflow"].run_id
    _log_iterations(m, range(3), 0.0)
    m.close()
    m = Metrics.from_config(cfg, run, resumed_at=1, use_ray=False)
    assert m._trackers["mlflow"].run_id == run_id == (run / "mlflow_run_id").read_text().strip()
    _log_iterations(m, range(2, 3), 10.0)
    m.close()
    client = MlflowClient()
    got = client.get_run(run_id)
    assert got.info.run_name == "ml-run" and got.info.status == "FINISHED"
    assert got.data.params["trainer.run_name"] == "ml-run"
    history = [(h.step, h.value) for h in client.get_metric_history(run_id, "source/success")]
    assert history[:3] == [(0, 0.0), (1, 1.0), (2, 2.0)] and history[-1] == (2, 12.0)  # the redo is last
    assert len(client.search_runs([got.info.experiment_id])) == 1  # one MLflow run per evorl run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prom_query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


# Every series the dashboard plots, with a value to log.
DASHBOARD_KEYS = {
    "source/success": 0.25,
    "downstream/success": 0.5,
    "baseline/success": 0.125,
    "learner/loss": 1.5,
    "policy_version": 3,
    "time/source": 2.0,
    "time/learn": 4.0,
    "iteration_s": 7.0,
    "rollout/restarts": 1,
}


@pytest.mark.slow
def test_ray_gauges_reach_prometheus(tmp_path, monkeypatch):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("no prometheus binary (Debian: apt-get install -y --no-install-recommends prometheus)")
    import ray
    import ray._private.ray_constants as rc
    import yaml

    if shutil.which("promtool"):  # the shipped config is valid as it stands
        subprocess.run(["promtool", "check", "config", str(MONITORING / "prometheus.yml")], check=True)
    # The shipped config, pointed at this test's Ray and scraped every second.
    scrape = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    ray_port, prom_port = _free_port(), _free_port()
    scrape["global"]["scrape_interval"] = "1s"
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "evorl"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{ray_port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape))

    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # as cluster.placement: all on loopback
    monkeypatch.setattr(rc, "ENABLE_RAY_CLUSTER", False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _metrics_export_port=ray_port)
    prom_log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=prom_log,
    )  # fmt: skip
    base, run = f"http://127.0.0.1:{prom_port}", f"prom-test-{time.time_ns()}"
    try:
        m = Metrics(tmp_path / "run", use_tensorboard=False, run_name=run)
        m.log(3, DASHBOARD_KEYS)
        found, deadline = [], time.monotonic() + 60
        while not found and time.monotonic() < deadline:
            time.sleep(1)
            try:
                found = _prom_query(base, f'ray_evorl_source_success{{run="{run}"}}')
            except OSError:  # Prometheus still starting
                continue
        log_tail = (tmp_path / "prometheus.log").read_text()[-2000:]
        assert found, (
            f"no ray_evorl_source_success{{run={run!r}}} in Prometheus after 60 s; its log: {log_tail}"
        )
        assert float(found[0]["value"][1]) == 0.25
        assert found[0]["metric"]["__name__"] == "ray_evorl_source_success"
        # Every dashboard query is valid PromQL and finds this run's series.
        dash = json.loads((MONITORING / "grafana_dashboard.json").read_text())
        for panel in dash["panels"]:
            for target in panel["targets"]:
                assert _prom_query(base, target["expr"].replace("$run", run)), (
                    panel["title"],
                    target["expr"],
                )
        m.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        prom_log.close()
        ray.shutdown()


def test_grafana_dashboard_model():
    dash = json.loads((MONITORING / "grafana_dashboard.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert "run" in variables and dash["uid"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 6
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and p["gridPos"]["w"] > 0
        for t in p["targets"]:
            assert "ray_evorl_" in t["expr"] and '$run"' in t["expr"]


class _FakeLLM:
    """The shape of vllm.LLM's stats: llm_engine.log_stats and get_metrics() -> vllm.v1.metrics.reader records."""

    def __init__(self, prompt: int, hits: int, ttft: float) -> None:
        from types import SimpleNamespace as N

        self.llm_engine = N(log_stats=True)
        lbl = {"engine": "0"}
        self.metrics = [
            N(name="vllm:prompt_tokens", labels=lbl, value=prompt),
            N(name="vllm:prefix_cache_queries", labels=lbl, value=prompt),
            N(name="vllm:prefix_cache_hits", labels=lbl, value=hits),
            N(name="vllm:request_success", labels={**lbl, "finished_reason": "stop"}, value=2),
            N(name="vllm:request_success", labels={**lbl, "finished_reason": "length"}, value=1),
            N(name="vllm:kv_cache_usage_perc", labels=lbl, value=0.5),
            N(name="vllm:time_to_first_token_seconds", labels=lbl, count=3, sum=ttft, buckets={}),
            N(name="vllm:cache_config_info", labels=lbl, value=1.0),  # not a statistic
        ]

    def get_metrics(self):
        return self.metrics


def test_engine_stats_flatten_delta_combine():
    from actors.engine_stats import combine, delta, engine_stats

    before, after = engine_stats(_FakeLLM(100, 0, 0.3)), engine_stats(_FakeLLM(300, 150, 0.9))
    assert after["request_success"] == 3 and "cache_config_info" not in after
    assert after["prefix_cache_hit_rate"] == 0.5 and after[
        "time_to_first_token_seconds_mean"
    ] == pytest.approx(0.3)
    d = delta(before, after)
    assert (
        d["prompt_tokens"] == 200 and d["prefix_cache_hit_rate"] == 0.75 and d["kv_cache_usage_perc"] == 0.5
    )
    both = combine([d, {"prompt_tokens": 200.0, "prefix_cache_queries": 200.0, "kv_cache_usage_perc": 0.1}])
    assert both["prompt_tokens"] == 400 and both["prefix_cache_hit_rate"] == 0.375
    assert both["kv_cache_usage_perc"] == pytest.approx(0.3)
    assert engine_stats(object()) == {}  # the transformers engine has no vLLM stats


@pytest.mark.slow
def test_engine_stats_of_a_real_vllm_engine():
    from cluster.core.model_store import resolve_model

    try:
        model = resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    from vllm import LLM, SamplingParams

    from actors.engine_stats import delta, engine_stats

    llm = LLM(model=model, dtype="float32", enforce_eager=True, enable_prefix_caching=True, max_model_len=512,
              kv_cache_memory_bytes=2**28, disable_log_stats=False)  # fmt: skip
    prompt = {"prompt_token_ids": list(range(100, 400))}  # > one 128-token block: the repeat hits the cache
    try:
        llm.generate([prompt], SamplingParams(max_tokens=4), use_tqdm=False)
        first = engine_stats(llm)
        llm.generate([prompt], SamplingParams(max_tokens=4), use_tqdm=False)
        d = delta(first, engine_stats(llm))
    finally:
        llm.llm_engine.engine_core.shutdown()  # now, not whenever the GC finds it (actors/engine.py close)
    assert first["prompt_tokens"] == 300 and first["generation_tokens"] == 4 and first["request_success"] == 1
    assert d["prompt_tokens"] == 300 and d["prefix_cache_hits"] > 0 and 0 < d["prefix_cache_hit_rate"] <= 1
    assert d["time_to_first_token_seconds_count"] == 1 and d["e2e_request_latency_seconds_mean"] > 0
    assert all(isinstance(v, float) for v in d.values())
