"""The embedded model in a real DeepSpeed engine (ZeRO-2, fp32, CPU, one in-process rank)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from actors.prompts import encode_messages
from cluster.config import load_config
from cluster.records import Turn, turns_to_table

pytestmark = pytest.mark.slow

QUESTIONS = ["What is 2+2?", "Name a fruit.", "Say hello in French.", "What colour is the sky?"]
ANSWERS = [" 4.", " An apple.", " Bonjour!", " Blue."]


@pytest.fixture(scope="module")
def learner():
    from cluster.model_store import resolve_model

    try:
        resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    from learner.actor import Learner

    torch.set_num_threads(1)
    cfg = load_config(None, ["learner.zero_stage=2", "learner.micro_batch_tokens=128", "learner.lr=1e-5"])
    lrn = Learner(cfg)
    lrn.setup()
    yield lrn
    torch.distributed.destroy_process_group()


def batch(lrn, advantage: float = 1.0, behaviour: list[list[float]] | None = None) -> pa.Table:
    tok = lrn.tokenizer
    turns = []
    for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS)):
        prompt = encode_messages(tok, [{"role": "user", "content": q}])
        resp = tok.encode(a, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
        lps = behaviour[i] if behaviour else [0.0] * len(resp)
        role = "solver" if i % 2 == 0 else "extractor"
        turns.append(Turn(f"ep{i}", 0, "t", "qa", role, prompt, resp, lps, 0, advantage=advantage))
    return turns_to_table(turns)


def test_positive_advantages_raise_response_logprobs(learner):
    probe = batch(learner)
    before = learner.score(probe)
    table = batch(learner, advantage=1.0, behaviour=before)
    first = learner.train(table)
    # behaviour logprobs are the learner's own: no gap, ratio 1, nothing clipped yet
    assert first["logprob_gap_mean"] < 1e-4 and first["clip_frac"] == 0.0
    assert np.isfinite(first["grad_norm"]) and first["grad_norm"] > 0
    assert first["tokens"] == sum(len(b) for b in before)
    assert 0.0 <= first["padding_frac"] < 0.5
    second = learner.train(table)
    assert second["version"] == first["version"] + 1
    after = learner.score(probe)
    gains = [np.mean(a) - np.mean(b) for a, b in zip(after, before)]
    assert all(g > 0 for g in gains), gains
    assert second["kl"] > 0  # moved away from the reference


def test_shared_prompts_give_the_same_step(learner):
    """GRPO-style groups (4 responses per prompt): the packed step equals the unpacked one (lr 0, so
    both steps start from the same weights), with fewer tokens computed."""
    tok = learner.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    turns = []
    for i, q in enumerate(QUESTIONS[:2]):
        prompt = encode_messages(tok, [{"role": "user", "content": q}])
        for j, a in enumerate(ANSWERS):
            resp = tok.encode(a, add_special_tokens=False) + [end]
            turns.append(Turn(f"ep{i}-{j}", 0, "t", "qa", "solver", prompt, resp, [-1.0] * len(resp), 0,
                              advantage=(-1.0) ** j))  # fmt: skip
    table = turns_to_table(turns)
    lr = learner.optimizer.param_groups[0]["lr"]
    learner.set_lr(0.0)
    try:
        learner.lcfg.share_prompts = False
        plain = learner.train(table)
        learner.lcfg.share_prompts = True
        shared = learner.train(table)
    finally:
        learner.set_lr(lr)
    for k in ("pg_loss", "kl", "clip_frac", "grad_norm", "tokens"):
        assert shared[k] == pytest.approx(plain[k], rel=1e-3, abs=1e-6), k
    assert shared["seq_tokens"] < 0.6 * plain["seq_tokens"]  # each prompt encoded once, not 4 times


def test_sft_lowers_nll(learner):
    table = batch(learner)
    nll = [learner.sft(table)["nll"] for _ in range(3)]
    assert nll[2] < nll[0], nll


def test_checkpoint_is_hf_loadable_and_resumes(learner, tmp_path):
    from transformers import AutoModelForCausalLM

    path = learner.save_checkpoint(str(tmp_path))
    saved = learner.get_weights()
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    hf_state = dict(hf.named_parameters())
    assert set(saved) == set(hf_state)
    for name, arr in saved.items():
        np.testing.assert_array_equal(hf_state[name].detach().numpy(), arr, err_msg=name)
    version = learner.version
    learner.train(batch(learner, advantage=-1.0))  # move away
    assert any(not np.array_equal(learner.get_weights()[n], saved[n]) for n in list(saved)[:3])
    assert learner.load_checkpoint(str(tmp_path)) == version
    for name, arr in learner.get_weights().items():
        np.testing.assert_array_equal(arr, saved[name], err_msg=name)
