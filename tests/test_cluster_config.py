"""Cluster launch pieces that need no cluster (issue #19): the rollout worker's placement-group plan,
the actors' offline rule, the official-data rule, and the deployables (ray_cluster.yaml against Ray's
own schema, cluster/runtime_env.yaml, the KubeRay manifests, the README's submit line).

The KubeRay manifests are checked against the operator's CRD schemas when KUBERAY_CRD_DIR names a
folder holding ray.io_rayjobs.yaml and ray.io_rayclusters.yaml (KubeRay's ray-operator/config/crd/bases);
otherwise only their structure is checked here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from actors.pool import worker_bundles
from cluster import placement
from cluster.core.config import ConfigError, load_config
from cluster.data import ensure_data, names_official_data

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = ("configs/alfworld_qwen2.5_7b.yaml", "configs/mind2web_qwen2.5_7b.yaml")


# ---------------------------------------------------------------------------------- placement plan


def test_tensor_parallel_worker_gets_one_gpu_bundle_per_rank():
    bundles = worker_bundles(num_cpus=2, num_gpus=1, tensor_parallel_size=4, resources={"rollout": 1})
    assert bundles == [
        {"GPU": 1.0, "rollout": 1.0, "CPU": 2.0},  # the worker itself runs in the first bundle
        {"GPU": 1.0, "rollout": 1.0},
        {"GPU": 1.0, "rollout": 1.0},
        {"GPU": 1.0, "rollout": 1.0},
    ]


@pytest.mark.parametrize(
    ("cpus", "gpus", "tp"),
    [(1, 1, 1), (1, 0, 4), (1, 0, 1)],  # tp 1 on GPU; CPU workers (vLLM's CPU engine ignores tp)
)
def test_no_placement_group_without_tensor_parallel_gpus(cpus, gpus, tp):
    assert worker_bundles(cpus, gpus, tp, {"rollout": 1}) is None


def test_bundle_plan_without_cpus_or_custom_resources():
    assert worker_bundles(0, 1, 2, {}) == [{"GPU": 1.0}, {"GPU": 1.0}]


def test_paper_configs_request_the_node_types_resources():
    cluster_yaml = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    offered = {k for t in cluster_yaml["available_node_types"].values() for k in t.get("resources", {})}
    for path in PAPER_CONFIGS:
        cfg = load_config(ROOT / path)
        assert cfg.rollout.resources == {"rollout": 1.0}, path
        assert cfg.skills.eval_resources == {"rollout": 1.0}, path
        assert cfg.learner.resources == {"learner": 1.0}, path
        assert {"rollout", "learner"} <= offered


# ---------------------------------------------------------------------------------- actors' offline rule


@pytest.fixture
def clean_env(monkeypatch):
    for k in (*placement.ACTOR_ENV_KEYS, "RAY_JOB_CONFIG_JSON_ENV_VAR"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("path", "local"),
    [("embedded", True), ("/mnt/evorl/models/Qwen2.5-7B-Instruct", True), ("./models/x", True),
     ("~/models/x", True), ("Qwen/Qwen2.5-7B-Instruct", False), ("HuggingFaceTB/SmolLM2-135M-Instruct", False)],
)  # fmt: skip
def test_is_local_model(path, local):
    assert placement.is_local_model(path) is local


def test_actors_are_offline_only_when_every_model_is_local(clean_env):
    local = placement.actor_env(load_config(None))  # the embedded model
    assert local["HF_HUB_OFFLINE"] == local["TRANSFORMERS_OFFLINE"] == "1"
    hub = placement.actor_env(load_config(None, ["model.path=Qwen/Qwen2.5-7B-Instruct"]))
    assert "HF_HUB_OFFLINE" not in hub and "TRANSFORMERS_OFFLINE" not in hub  # nodes may download


def test_an_explicit_offline_setting_wins(clean_env):
    clean_env.setenv("HF_HUB_OFFLINE", "1")  # e.g. a pre-filled shared HF_HOME
    assert (
        placement.actor_env(load_config(None, ["model.path=Qwen/Qwen2.5-7B-Instruct"]))["HF_HUB_OFFLINE"]
        == "1"
    )
    clean_env.setenv("HF_HUB_OFFLINE", "0")
    assert placement.actor_env(load_config(None))["HF_HUB_OFFLINE"] == "0"


def test_keys_of_the_jobs_runtime_env_are_left_to_it(clean_env):
    """Ray refuses a driver runtime env repeating one of the job's env_vars (a failed ray.init)."""
    job_env = {"EVORL_CACHE": "/opt/evorl/.cache", "ALFWORLD_DATA": "/mnt/evorl/alfworld"}
    clean_env.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": job_env}}))
    for k, v in job_env.items():
        clean_env.setenv(k, v)  # the job's env_vars are in the driver's environment too
    env = placement.actor_env(load_config(None))
    assert not set(env) & set(job_env)
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


# ---------------------------------------------------------------------------------- official data rule


@pytest.mark.parametrize(
    ("path", "official"),
    [("data/alfworld-official", True), ("/mnt/evorl/alfworld/json_2.1.1", True),
     ("/data/official/alfworld/train", True), ("data/alfworld-easy", False), ("/mnt/evorl/data/gen", False)],
)  # fmt: skip
def test_names_official_data(path, official):
    assert names_official_data(path, alfworld_data="") is official


def test_a_folder_inside_alfworld_data_is_official(tmp_path):
    assert names_official_data(tmp_path / "alfworld" / "games", alfworld_data=str(tmp_path / "alfworld"))
    assert not names_official_data(tmp_path / "gen", alfworld_data=str(tmp_path / "alfworld"))


@pytest.fixture
def generated(monkeypatch):
    calls: list[tuple] = []
    import envs.alfworld.generator as gen

    monkeypatch.setattr(gen, "ensure_generated", lambda *a, **k: calls.append(a) or True)
    return calls


def test_missing_official_data_is_an_error_not_generated_games(tmp_path, monkeypatch, generated):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "alfworld"))
    for data_dir in (tmp_path / "alfworld-official", tmp_path / "alfworld" / "json_2.1.1"):
        cfg = load_config(None, [f"env.data_dir={data_dir}"])
        with pytest.raises(ConfigError, match=r"names official ALFWorld data.*alfworld-download"):
            ensure_data(cfg)
    assert generated == []


def test_a_generated_games_folder_is_generated_on_first_use(tmp_path, monkeypatch, generated):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "alfworld"))
    cfg = load_config(None, [f"env.data_dir={tmp_path / 'alfworld-easy'}", "env.generate_per_type=3"])
    ensure_data(cfg)
    assert generated == [(str(tmp_path / "alfworld-easy"), 3, "easy", 0)]


def test_official_data_that_is_there_is_used_as_found(tmp_path, monkeypatch, generated):
    game = tmp_path / "alfworld-official" / "train" / "pick_x" / "trial_1"
    game.mkdir(parents=True)
    (game / "game.tw-pddl").write_text("{}")
    ensure_data(load_config(None, [f"env.data_dir={tmp_path / 'alfworld-official'}"]))
    ensure_data(load_config(None, ["env.name=mind2web", "env.data_dir=/nonexistent-official"]))
    assert generated == []


# ---------------------------------------------------------------------------------- deployables


def _ray_start_lines(cfg: dict) -> list[str]:
    return [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in cfg[key]]


def test_ray_cluster_yaml_passes_rays_schema_and_starts_an_authenticated_cluster():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(raw))  # Ray's own JSON schema, offline
    starts = [c for c in _ray_start_lines(raw) if " start " in c]
    assert len(starts) == 2
    for c in starts:
        assert "RAY_AUTH_MODE=token" in c and "ulimit -n 65536" in c and ".venv/bin/ray start" in c
    assert "--dashboard-host=127.0.0.1" in starts[0]
    for c in _ray_start_lines(raw):  # never a bare `ray` (Ray lives only in the venv)
        assert not re.search(r"(^|[;&|]\s*)ray ", c), c
    assert "/home/ubuntu/.ray/auth_token" in raw["file_mounts"]
    setup = " ".join(raw["setup_commands"])
    assert "python3.11" in setup and "deadsnakes" in setup and "make setup" in setup
    assert any("boto3" in c for c in raw["head_setup_commands"])
    assert "/mnt/evorl" in " ".join(raw["initialization_commands"])
    types = raw["available_node_types"]
    assert types["rollout_gpu"]["resources"]["rollout"] == types["rollout_gpu"]["resources"]["GPU"]
    assert types["learner_gpu"]["resources"]["learner"] == types["learner_gpu"]["resources"]["GPU"]


def test_runtime_env_yaml_is_a_valid_ray_runtime_env():
    from ray.runtime_env import RuntimeEnv

    data = yaml.safe_load((ROOT / "cluster" / "runtime_env.yaml").read_text())
    RuntimeEnv(**data)  # Ray's own field validation
    assert data["working_dir"] == "."
    assert {".git", ".venv", ".cache", "runs/", "data/"} <= set(data["excludes"])
    env = data["env_vars"]
    assert env["EVORL_CACHE"].startswith("/opt/evorl/")
    assert not any(k.startswith("RAY_AUTH") or k in placement.OFFLINE_KEYS for k in env)


def test_readme_submits_with_the_runtime_env_and_the_venvs_interpreter():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## On a GPU cluster", 1)[1].split("\n## ", 1)[0]
    submit = re.search(r"ray job submit.*?(?=\n```|\n\n)", section, re.S).group(0)
    for part in ("--runtime-env cluster/runtime_env.yaml", "--submission-id", "--no-wait",
                 "/opt/evorl/.venv/bin/evorl train", "trainer.resume=auto", "RAY_AUTH_MODE=token"):  # fmt: skip
        assert part in submit, part
    assert "--working-dir" not in submit and " .venv/bin" not in submit


def _manifests() -> dict[str, list[dict]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in (ROOT / "cluster" / "k8s").glob("*.yaml")}  # fmt: skip


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def test_kuberay_manifests_authenticate_place_and_resume():
    docs = {d["kind"]: d for ds in _manifests().values() for d in ds}
    assert {"RayJob", "RayCluster", "PersistentVolumeClaim"} <= set(docs)
    assert "trainer.resume=auto" in docs["RayJob"]["spec"]["entrypoint"]
    assert docs["RayJob"]["spec"]["entrypoint"].startswith("/opt/evorl/.venv/bin/evorl train")
    for kind in ("RayJob", "RayCluster"):
        spec = _cluster_spec(docs[kind])
        assert spec["authOptions"] == {"mode": "token", "secretName": "evorl-ray-token"}
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
        for name in ("rollout", "learner"):
            res = json.loads(json.loads(groups[name]["rayStartParams"]["resources"]))
            gpus = groups[name]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
            assert res == {name: int(gpus)}
        pods = [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
        for pod in pods:
            env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "evorl-ray-token"
            assert {"name": "shared", "mountPath": "/mnt/evorl"} in pod["spec"]["containers"][0][
                "volumeMounts"
            ]


def _schema_errors(value, schema: dict, path: str = "") -> list[str]:
    """jsonschema errors plus fields the schema does not know (what `kubectl apply` with strict
    field validation rejects: a CRD's structural schema would otherwise prune them silently)."""
    import jsonschema

    errors = [f"{path}/{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(value)]  # fmt: skip

    def unknown(v, s, p):
        if not isinstance(s, dict) or s.get("x-kubernetes-preserve-unknown-fields"):
            return
        if isinstance(v, dict):
            props = s.get("properties")
            if props is not None:
                for k, sub in v.items():
                    if k not in props:
                        errors.append(f"{p}/{k}: unknown field")
                    else:
                        unknown(sub, props[k], f"{p}/{k}")
            elif isinstance(s.get("additionalProperties"), dict):
                for k, sub in v.items():
                    unknown(sub, s["additionalProperties"], f"{p}/{k}")
        elif isinstance(v, list) and isinstance(s.get("items"), dict):
            for i, sub in enumerate(v):
                unknown(sub, s["items"], f"{p}[{i}]")

    unknown(value, schema, path)
    return errors


@pytest.mark.skipif(not os.environ.get("KUBERAY_CRD_DIR"), reason="KUBERAY_CRD_DIR not set")
def test_kuberay_manifests_match_the_crd_schemas():
    crds = {}
    for name in ("ray.io_rayjobs.yaml", "ray.io_rayclusters.yaml"):
        crd = yaml.safe_load((Path(os.environ["KUBERAY_CRD_DIR"]) / name).read_text())
        v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        crds[crd["spec"]["names"]["kind"]] = v1["schema"]["openAPIV3Schema"]
    checked = 0
    for file, docs in _manifests().items():
        for doc in docs:
            if doc["kind"] in crds:
                assert doc["apiVersion"] == "ray.io/v1"
                assert _schema_errors(doc, crds[doc["kind"]], f"{file}:{doc['kind']}") == []
                checked += 1
    assert checked == 2


def test_actor_log_level_follows_verbose(monkeypatch):
    """Actors log warnings by default (console and `ray job logs` stay readable); INFO with -v."""
    from cluster import placement
    from cluster.core.config import load_config

    monkeypatch.delenv("EVORL_VERBOSE", raising=False)
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    env = placement.actor_env(load_config(None))
    assert env["EVORL_LOG_LEVEL"] == "WARNING" and env["VLLM_LOGGING_LEVEL"] == "WARNING"
    monkeypatch.setenv("EVORL_VERBOSE", "1")
    assert placement.actor_env(load_config(None))["EVORL_LOG_LEVEL"] == "INFO"
