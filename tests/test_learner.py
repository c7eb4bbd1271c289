"""The embedded model in a real DeepSpeed engine (fp32, CPU, one in-process rank: ZeRO stage 0)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from cluster.core.config import load_config
from cluster.core.records import Trace, traces_to_table
from cluster.core.text import encode_messages

pytestmark = pytest.mark.slow

QUESTIONS = ["What is 2+2?", "Name a fruit.", "Say hello in French.", "What colour is the sky?"]
ANSWERS = [" 4.", " An apple.", " Bonjour!", " Blue."]


@pytest.fixture(scope="module")
def learner():
    from cluster.core.model_store import resolve_model

    try:
        resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    from learner.actor import Learner

    torch.set_num_threads(1)
    cfg = load_config(None, ["learner.micro_batch_tokens=128", "learner.lr=1e-5"])
    lrn = Learner(cfg)
    lrn.setup()
    yield lrn
    torch.distributed.destroy_process_group()


def trace(sid, prompt, resp, role, adv, lps=None) -> Trace:
    return Trace(sid, 0, "t", "qa", role, prompt + resp, [(len(prompt), len(prompt) + len(resp))], lps or [], 0,
                 advantages=[adv])  # fmt: skip


def batch(lrn, advantage: float = 1.0, behaviour: list[list[float]] | None = None) -> pa.Table:
    """Four one-turn samples; `behaviour`: engine logprobs to send (default: none, recomputed)."""
    tok = lrn.tokenizer
    traces = []
    for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS)):
        prompt = encode_messages(tok, [{"role": "user", "content": q}])
        resp = tok.encode(a, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
        role = "solver" if i % 2 == 0 else "extractor"
        traces.append(trace(f"ep{i}", prompt, resp, role, advantage, behaviour[i] if behaviour else None))
    return traces_to_table(traces)


def test_positive_advantages_raise_response_logprobs(learner):
    assert learner.zero == 0 and learner.ref is not None and not learner.checkpointing  # the lean rules
    probe = batch(learner)
    before = learner.score(probe)
    table = batch(learner, advantage=1.0, behaviour=before)
    first = learner.train(table)
    # engine logprobs equal to the learner's own: no gap, ratio 1, nothing clipped yet
    assert first["logprob_gap_mean"] < 1e-4 and first["clip_frac"] == 0.0
    assert np.isfinite(first["grad_norm"]) and first["grad_norm"] > 0
    assert first["tokens"] == sum(len(b) for b in before)
    assert 0.0 <= first["padding_frac"] < 0.5
    second = learner.train(batch(learner, advantage=1.0))  # no engine logprobs: recomputed, ratio 1
    assert second["steps"] == first["steps"] + 1 and second["clip_frac"] == 0.0
    assert "logprob_gap_mean" not in second
    after = learner.score(probe)
    gains = [np.mean(a) - np.mean(b) for a, b in zip(after, before)]
    assert all(g > 0 for g in gains), gains
    assert second["kl"] > 0  # moved away from the reference


def test_shared_prompts_give_the_same_step(learner):
    """GRPO-style groups (4 responses per prompt): the packed step equals the unpacked one (lr 0, so
    both steps start from the same weights), with fewer tokens computed."""
    tok = learner.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    traces = []
    for i, q in enumerate(QUESTIONS[:2]):
        prompt = encode_messages(tok, [{"role": "user", "content": q}])
        for j, a in enumerate(ANSWERS):
            resp = tok.encode(a, add_special_tokens=False) + [end]
            traces.append(trace(f"ep{i}-{j}", prompt, resp, "solver", (-1.0) ** j, [-1.0] * len(resp)))
    table = traces_to_table(traces)
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

    path = learner.save_checkpoint(str(tmp_path / "ckpt"))
    saved = learner.get_weights()
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    hf_state = dict(hf.named_parameters())
    assert set(saved) == set(hf_state)
    for name, arr in saved.items():
        np.testing.assert_array_equal(hf_state[name].detach().numpy(), arr, err_msg=name)
    steps = learner.steps
    learner.train(batch(learner, advantage=-1.0))  # move away
    assert any(not np.array_equal(learner.get_weights()[n], saved[n]) for n in list(saved)[:3])
    assert learner.load_checkpoint(path) == steps
    for name, arr in learner.get_weights().items():
        np.testing.assert_array_equal(arr, saved[name], err_msg=name)
