"""Two DeepSpeed ranks as Ray actors (ZeRO-2, gloo), and weight broadcast into a real vLLM engine.

One Ray session and one learner group for the module: bitwise-equal replicas after a step, then
both broadcast paths (object store; gloo collective = the NCCL code path) checked by the engine's
prompt logprobs matching the learner's within 1e-3 (fp32).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from actors.prompts import encode_messages
from cluster.config import EngineConfig, load_config
from cluster.records import Turn, turns_to_table

pytestmark = pytest.mark.slow

ENV = {
    k: os.environ[k]
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_EXTENSIONS_DIR", "EVORL_CACHE")
    if k in os.environ
} | {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


@pytest.fixture(scope="module")
def group():
    from cluster.model_store import resolve_model

    try:
        resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    import ray

    from learner.group import LearnerGroup

    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": ENV}, log_to_driver=False)
    cfg = load_config(
        None,
        [
            "learner.num_learners=2",
            "learner.zero_stage=2",
            "learner.lr=1e-5",
            "learner.micro_batch_tokens=128",
            "learner.kl_coef={solver: 0.0, extractor: 0.0}",
        ],
    )
    g = LearnerGroup(cfg, timeout_s=600)
    yield g
    g.shutdown()
    ray.shutdown()


def table(tok, advantages):
    qs = ["What is 2+2?", "Name a fruit.", "Say hello.", "Count to three.", "Name a colour."]
    turns = []
    for i, (q, adv) in enumerate(zip(qs, advantages)):
        prompt = encode_messages(tok, [{"role": "user", "content": q}])
        resp = tok.encode([" 4.", " Apple.", " Hello!", " 1, 2, 3.", " Red."][i], add_special_tokens=False)
        turns.append(
            Turn(
                f"e{i}",
                0,
                "t",
                "qa",
                "solver" if i % 2 else "extractor",
                prompt,
                resp,
                [-1.0] * len(resp),
                0,
                advantage=adv,
            )
        )
    return turns_to_table(turns)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from cluster.model_store import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("embedded"))


def test_zero2_two_ranks_stay_bitwise_equal(group, tok):
    before = group.digests()
    assert before[0] == before[1]
    metrics = group.train(table(tok, [1.0, -1.0, 0.5, -0.5, 1.0]))  # 5 rows: uneven shards
    after = group.digests()
    assert after[0] == after[1] and after[0] != before[0]
    assert metrics["version"] == 1 and np.isfinite(metrics["grad_norm"])
    assert metrics["tokens"] == sum(len(r) for r in table(tok, [0] * 5).column("response_ids").to_pylist())


def test_broadcast_engine_matches_learner(group, tok):
    import ray

    from actors.engine import VLLMEngine
    from cluster.model_store import resolve_model
    from learner.broadcast import CollectiveBroadcaster, broadcast_object_store

    engine = (
        ray.remote(VLLMEngine)
        .options(num_cpus=1)
        .remote(resolve_model("embedded"), EngineConfig(kv_cache_gib=0.5, dtype="float32"), 0, 512)
    )
    probe = table(tok, [0.0] * 5)
    rows = probe.to_pylist()

    def gaps() -> tuple[float, list[list[float]]]:
        learner_lp = ray.get(group.actors[0].score.remote(probe))
        engine_lp = [ray.get(engine.prompt_logprobs.remote(r["prompt_ids"], r["response_ids"])) for r in rows]
        return max(float(np.max(np.abs(np.subtract(a, b)))) for a, b in zip(learner_lp, engine_lp)), engine_lp

    gap0, base_lp = gaps()  # engine holds the original weights, learner has trained one step (test above)
    assert gap0 > 1e-3, "precondition: the learner's weights differ from the engine's"

    m = broadcast_object_store(group.weights_ref(), 1, [engine])
    assert m["broadcast_targets"] == 1
    gap1, lp1 = gaps()
    assert gap1 < 1e-3, gap1
    assert ray.get(engine.__ray_call__.remote(lambda e: e.version)) == 1

    group.train(table(tok, [-1.0, 1.0, -0.5, 0.5, -1.0]))  # version 2, only on the learners
    assert gaps()[0] > 1e-3
    CollectiveBroadcaster(group.actors[0], [engine]).broadcast(version=2)
    gap2, _ = gaps()
    assert gap2 < 1e-3, gap2
    assert ray.get(engine.__ray_call__.remote(lambda e: e.version)) == 2
    ray.kill(engine)
