"""Two DeepSpeed ranks as Ray actors (ZeRO-3, gloo), and WeightSync into a real rollout worker.

One Ray session and one learner group for the module: equal (gathered) replicas after a step, then
both push paths of the trainer's WeightSync: the object store (learner rank 0 puts, the worker loads)
and the collective path (gloo here = the NCCL code path on GPU, ZeRO-3 parameters gathered bucket by
bucket), each checked by the engine's prompt logprobs matching the learner's within 1e-3 (fp32).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from cluster.core.config import load_config
from cluster.core.records import Trace, traces_to_table
from cluster.core.text import encode_messages

pytestmark = pytest.mark.slow

ENV = {
    k: os.environ[k]
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_EXTENSIONS_DIR", "EVORL_CACHE")
    if k in os.environ
} | {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
OVERRIDES = [
    "learner.num_learners=2",
    "learner.zero_stage=3",
    "learner.lr=1e-5",
    "learner.micro_batch_tokens=128",
    "learner.kl_coef={solver: 0.0, extractor: 0.0}",
    "learner.num_cpus_per_learner=0.5",
    "engine.kv_cache_gib=0.5",
    "model.max_model_len=1024",
]


@pytest.fixture(scope="module")
def group():
    from cluster.core.model_store import resolve_model

    try:
        resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    import ray

    from learner.group import LearnerGroup

    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": ENV}, log_to_driver=False)
    g = LearnerGroup(load_config(None, OVERRIDES), timeout_s=600)
    yield g
    g.shutdown()
    ray.shutdown()


def table(tok, advantages):
    qs = ["What is 2+2?", "Name a fruit.", "Say hello.", "Count to three.", "Name a colour."]
    traces = []
    for i, (q, adv) in enumerate(zip(qs, advantages)):
        prompt = encode_messages(tok, [{"role": "user", "content": q}])
        resp = tok.encode([" 4.", " Apple.", " Hello!", " 1, 2, 3.", " Red."][i], add_special_tokens=False)
        traces.append(Trace(f"e{i}", 0, "t", "qa", "solver" if i % 2 else "extractor", prompt + resp,
                            [(len(prompt), len(prompt) + len(resp))], [], 0, advantages=[adv]))  # fmt: skip
    return traces_to_table(traces)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from cluster.core.model_store import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("embedded"))


def test_zero3_two_ranks_stay_equal(group, tok):
    assert all(i["zero_stage"] == 3 for i in group.info)
    before = group.digests()
    assert before[0] == before[1]
    metrics = group.train(table(tok, [1.0, -1.0, 0.5, -0.5, 1.0]))  # 5 samples: uneven shards
    after = group.digests()
    assert after[0] == after[1] and after[0] != before[0]
    assert metrics["steps"] == 1 and np.isfinite(metrics["grad_norm"])
    assert metrics["tokens"] == sum(
        b - a for s in table(tok, [0] * 5).column("spans").to_pylist() for a, b in s
    )


def test_weight_sync_both_paths_match_the_learner(group, tok):
    import ray

    from actors.pool import RolloutPool
    from cluster.weight_sync import WeightSync

    pool = RolloutPool(load_config(None, OVERRIDES), "rollout", 1)
    worker = pool.workers[0]
    probe = table(tok, [0.0] * 5)
    rows = probe.to_pylist()

    def engine_logprobs(w, ids, spans):
        ((a, b),) = spans
        return w.engine.prompt_logprobs(ids[:a], ids[a:b])

    def gap() -> float:
        learner_lp = group.score(probe)
        engine_lp = ray.get(
            [worker.__ray_call__.remote(engine_logprobs, r["token_ids"], r["spans"]) for r in rows]
        )
        return max(float(np.max(np.abs(np.subtract(a, b)))) for a, b in zip(learner_lp, engine_lp))

    try:
        assert gap() > 1e-3, (
            "precondition: the learner has trained a step, the engine has the original weights"
        )
        sync = WeightSync(group, [pool])
        assert sync.backend == "object_store"  # the learners run on CPU
        m = sync.push(1)
        assert m["weight_sync/nccl"] == 0.0 and m["weight_sync/engines"] == 1.0
        assert gap() < 1e-3 and pool.versions() == [1]

        group.train(table(tok, [-1.0, 1.0, -0.5, 0.5, -1.0]))  # only on the learners
        assert gap() > 1e-3
        sync.backend = "nccl"  # the GPU path's logic: a weight group over gloo, ZeRO-3 gathered per bucket
        m = sync.push(2)
        assert m["weight_sync/nccl"] == 1.0
        assert gap() < 1e-3 and pool.versions() == [2]
    finally:
        pool.shutdown()


def test_checkpoint_through_the_object_store(group, tok, tmp_path):
    """learner.checkpoint_transfer=object_store (what ranks on other nodes do): each rank's files come
    to the driver's folder through the object store, and go back to each rank on resume, its own
    ZeRO shards only; the resumed replicas equal the saved ones."""
    group.cfg.learner.checkpoint_transfer = "object_store"
    try:
        folder = tmp_path / "model"
        assert group.save(str(folder)) == str(folder)
        files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        shards = sorted(f for f in files if "zero_pp_rank_" in f and "optim_states" in f)
        assert "model.safetensors" in files and "learner_state.json" in files
        assert [s.split("zero_pp_rank_")[1][0] for s in shards] == ["0", "1"]  # both ranks' parts arrived
        saved = group.digests()
        group.train(table(tok, [1.0, -1.0, 0.5, -0.5, 1.0]))
        assert group.digests() != saved
        group.load(str(folder))
        assert group.digests() == saved
        from cluster.core.model_store import project_cache

        left = [p for p in (project_cache() / "checkpoint-staging").glob("*/*") if any(p.rglob("*.pt"))]
        assert not left  # the ranks' staging copies are removed
    finally:
        group.cfg.learner.checkpoint_transfer = "auto"
