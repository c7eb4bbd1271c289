"""The converted embedded model loads in transformers and vLLM and both decode greedily the same."""

import os

import pytest

from cluster.core.model_store import embedded_dir, is_prepared, resolve_model


def test_resolve_embedded_requires_preparation(tmp_path, monkeypatch):
    monkeypatch.setenv("EVORL_MODEL_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="evorl prepare-model"):
        resolve_model("embedded")
    assert resolve_model("org/some-model") == "org/some-model"


@pytest.mark.slow
def test_transformers_and_vllm_greedy_agree():
    assert is_prepared(), f"run `evorl prepare-model` first ({embedded_dir()})"
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    path = resolve_model("embedded")
    tok = AutoTokenizer.from_pretrained(path)
    msgs = [{"role": "user", "content": "Name three colours of the rainbow."}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert "<|im_start|>assistant" in tok.decode(ids)

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)
    hf_tokens = out[0, len(ids) :].tolist()

    llm = LLM(path, dtype="float32", enforce_eager=True, max_model_len=512, seed=0)
    try:
        res = llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(temperature=0, max_tokens=16))
    finally:
        llm.llm_engine.engine_core.shutdown()  # now, not whenever the GC finds it (actors/engine.py close)
    vllm_tokens = list(res[0].outputs[0].token_ids)
    n = min(len(hf_tokens), len(vllm_tokens))
    assert n > 0 and hf_tokens[:n] == vllm_tokens[:n]
