"""`evorl train` end to end on tiny settings: real vLLM engine, DeepSpeed learner, ALFWorld, Ray.

Two iterations of the evolving mode; the Ray metrics endpoint must serve evorl_* metrics while Ray
is up. Resume after a SIGKILL of the whole process is tested in tests/test_faults_resume.py.
"""

import json
import re
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.core.config import load_config
from cluster.metrics import read_metrics

pytestmark = pytest.mark.slow

TINY = [
    "env.max_steps=3",
    "env.history_window=1",
    "env.generate_per_type=2",
    "env.eval_splits=[valid_seen]",
    "skills.n_candidates=2",
    "skills.k_neighbours=1",
    "skills.extractor_max_tokens=448",
    "rollout.max_new_tokens=16",
    "trainer.batch_size=1",
    "trainer.eval_tasks=2",
    "trainer.iterations=2",
    "cluster.metrics_export_port=8089",
    "cluster.include_dashboard=false",
    "learner.skip_zero_advantage=false",  # the learner must step even when every group ties
]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    yield
    if ray.is_initialized():
        ray.shutdown()


def scrape(port: int, timeout_s: float = 40.0) -> str:
    deadline = time.time() + timeout_s
    text = ""
    while time.time() < deadline:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            text = ""
        if "evorl_" in text:
            return text
        time.sleep(2)
    return text


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_session):
    """One two-iteration run, shared: the train test checks it, the eval test evaluates its checkpoint."""
    from cluster.run import train

    tmp = tmp_path_factory.mktemp("e2e")
    run = tmp / "run"
    overrides = TINY + [f"trainer.run_dir={run}", f"env.data_dir={tmp / 'games'}"]
    cfg = load_config("configs/quickstart.yaml", overrides)
    assert train(cfg) == 0
    return cfg, run


def test_train_two_iterations(trained):
    cfg, run = trained
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iteration"] == 2
    assert summary["policy_version"] == 2
    assert set(summary["worker_versions"].values()) == {2}, summary["worker_versions"]

    traces = pq.read_table(run / "trajectories").to_pylist()
    roles = {t["role"] for t in traces}
    assert roles == {"solver", "extractor"}, roles
    assert all(t["behaviour_logprobs"] == [] for t in traces)  # recomputed by the learner's first pass
    solver = [t for t in traces if t["role"] == "solver"]
    assert all(len(t["advantages"]) == len(t["spans"]) for t in traces)
    assert any(len(t["spans"]) > 1 for t in solver)  # whole episodes as one sequence

    rows = read_metrics(run)
    steps = [r for r in rows if "learner/loss" in r]
    assert len(steps) == 2 and all("skills/candidates" in r for r in steps)
    assert any(k.startswith("skills/") and "library" in k for k in steps[-1])
    assert sorted(p.name for p in (run / "checkpoints").glob("iter-*")) == ["iter-00001", "iter-00002"]
    assert (run / "checkpoints" / "iter-00002" / "model" / "config.json").exists()
    assert (run / "skills").exists()

    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    assert port == cfg.cluster.metrics_export_port  # the configured port (free: nothing else listens)
    assert "evorl_" in scrape(port)


def test_eval_of_a_checkpoint_writes_a_dated_record(trained, tmp_path):
    """`evorl eval --out`: the trained checkpoint under the online protocol, every game and arm
    recorded (learning.py pairs them) and the finishing time written (the results tables date it)."""
    from cluster.run import evaluate_only

    cfg, run = trained
    out = tmp_path / "eval.json"
    ckpt = run / "checkpoints" / "iter-00002"
    assert evaluate_only(cfg, checkpoint=str(ckpt), protocol="online", out=str(out)) == 0
    record = json.loads(out.read_text())
    assert record["protocol"] == "online"
    assert Path(record["model"]).resolve() == (ckpt / "model").resolve(), record["model"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", record["finished"]), record["finished"]
    episodes = record["episodes"]
    assert {e["arm"] for e in episodes} == {"with_skill", "no_skill"}
    per_arm = {
        arm: sorted(e["task_id"] for e in episodes if e["arm"] == arm) for arm in ("with_skill", "no_skill")
    }
    assert per_arm["with_skill"] == per_arm["no_skill"] and len(per_arm["no_skill"]) == 2, per_arm  # paired
    assert all(isinstance(e["won"], bool) and e["task_type"] and e["split"] == "valid_seen" for e in episodes)
    assert record["stats"]["eval/protocol_online"] == 1.0
