"""Multi-turn GRPO on ALFWorld episodes: our trainer against TRL's GRPOTrainer, and where the ratio comes from.

    .venv/bin/python benchmarks/trl_multiturn.py [--repeats 3] [--tasks 2] [--group 4] [--max-steps 8] [--dry]

Both sides do the same work per step on configs/bench_alfworld_easy.yaml: `--tasks` training tasks x
`--group` samples (the config's trainer.batch_size x trainer.grpo_samples), every sample one whole
ALFWorld episode played on the real engine (envs.make_env, the config's generated easy games, the
trained task types, the same task sequence: cluster.sampler.TaskSampler with the same seed, so
iteration k of every arm plays the same tasks), `env.context=sequence` (one append-only conversation
per episode, actors.prompts), at most env.max_steps turns of rollout.max_new_tokens tokens each,
reward = env success (0/1), group-normalised advantages, k3 KL to the frozen reference with
coefficient learner.kl_coef.solver (TRL: `beta`), the same lr / AdamW betas / weight decay / gradient
clip / PPO clip (eps_low, eps_high), a per-sample mean loss (TRL: loss_type="grpo"), one optimizer
step per batch, fp32, no gradient checkpointing (ours: "auto" = off at 135M; TRL's default on is
turned off), the embedded SmolLM2-135M.

Actions are free text on both sides (`env.constrained_actions=false`, parsed by
actors.actions.parse_action): our engine would otherwise decode only admissible actions through vLLM
structured output, which TRL has no counterpart for. Every sampled episode is trained on
(`learner.skip_zero_advantage=false`; TRL never skips).

Arms (`--arms`, interleaved with common.interleave after one warm-up step each, load recorded):
- ours: a Trainer from cluster.factory.build_parts (Ray actors: in-process vLLM rollout worker with
  the prefix cache, DeepSpeed learner, weight push), `trainer.mode=grpo`, `learner.share_prompts=true`
  (the default: rows with the same prompt computed as one sequence, learner/batching.py);
- ours_unshared: the same with `learner.share_prompts=false`;
- trl: TRL 1.16 GRPOTrainer in this process. Episodes come from TRL's multi-turn hook `rollout_func`
  (GRPOTrainer(rollout_func=...), returning prompt_ids / completion_ids / logprobs and `env_mask`,
  which TRL turns into its tool_mask: observation tokens out of the loss). In 1.16 rollout_func is
  not tied to vLLM (`use_vllm` only adds a weight sync before it), so no vLLM-in-TRL (CUDA only) is
  needed. Inside it our episode loop (actors.episode.EpisodeRunner: the same prompts, transcript,
  parsing and truncation rules as our rollout worker) plays the envs, and every turn's generation is
  TRL's own path, `GRPOTrainer._generate_single_turn` (transformers `generate` with the trainer's
  GenerationConfig under unwrap_model_for_generation; no vLLM, no prefix cache across turns). The
  alternatives were heavier: `environment_factory`/`tools` need the model to emit tool calls in its
  chat template (another prompt, another transcript), and overriding `_generate` would replace TRL
  code rather than call it. Dataset rows are placeholders ("slot i"): the arm's TaskSampler names
  each step's tasks;
- trl_padfree: the same GRPOTrainer (one trainer serves both TRL arms, alternating step by step) with
  each micro-batch cut to its own real tokens before TRL's loss forward/backward. TRL 1.16 has no
  `padding_free` for GRPO (GRPOConfig has no such field; SFTConfig has one, DPOConfig's is disabled):
  every micro-batch is as wide as the generation batch's longest prompt (left padding) plus longest
  completion (right padding), whatever per_device_train_batch_size is. This arm is a benchmark-side
  emulation of what padding-free would save in the update (not a TRL feature); the reference-model
  forward (in TRL's scoring) stays padded.

TRL runs `trainer.train()` in a thread that a callback parks before each optimizer step; the driver
releases one step per arm call and waits until the thread is parked again, so nothing of TRL runs
while another arm is timed. TRL's micro-batch: `--trl-micro-batch` rows (default 1, with
gradient_accumulation_steps = tasks x group / micro-batch; steps_per_generation follows, so one
generation and one optimizer step per batch); ours: learner.micro_batch_tokens (`--micro-batch-tokens`,
2048 as in iteration_cost.py: two stacks and a TRL trainer share the machine).

Threads, like for like: our rollout worker generates with OMP_NUM_THREADS (1) torch threads and our
learner updates with learner.num_threads (0 = the node's cores: learner.actor.cpu_threads); TRL gets
the same counts, set in its own thread: the rollout's count during rollout_func, the learner's for the
rest of its step (the counts seen inside are recorded). Ray (`num_cpus` = 2 per stack of ours: a
rollout worker and a learner each) serves only our arms; their actors sit idle while TRL runs.

Reported: samples/s per arm (trained episodes / step seconds; ours: Trainer.step's iteration_s), the
ratio ours / TRL, and a decomposition: seconds per sample per stage (generation = episodes played,
env steps included; update = learner step incl. the reference forward; weight sync; other), the
difference TRL - ours split into generation, the update chain TRL -> TRL padding-free -> ours without
prompt sharing -> ours (TRL's padding, framework: TRL's Trainer vs our DeepSpeed learner, our prompt
sharing), weight sync and other, what the ratio would be with either side's generation or update, and
the token counts behind them (prompt tokens prefilled in generation: vLLM's prefix cache vs TRL
re-encoding each turn's whole conversation, left-padded; tokens processed by the update per trained
token). `--dry` builds everything and runs one step per arm with env.max_steps 2 (nothing written).
Writes benchmarks/results/trl_multiturn.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import interleave, machine, median, write

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func's "experimental" warning

CONFIG = "configs/bench_alfworld_easy.yaml"
ARMS = ("ours", "ours_unshared", "trl", "trl_padfree")
ARM_LABELS = {
    "ours": "ours (vLLM rollout + DeepSpeed learner, share_prompts)",
    "ours_unshared": "ours, learner.share_prompts=false",
    "trl": "TRL GRPOTrainer (rollout_func, transformers generate)",
    "trl_padfree": "TRL + padding-free micro-batches (emulated)",
}
OURS = {"ours": ["learner.share_prompts=true"], "ours_unshared": ["learner.share_prompts=false"]}
STAGES = ("generation", "update", "weight_sync", "other")
# the update chain, TRL -> ours: the step into each arm and what it removes
CHAIN = ("trl", "trl_padfree", "ours_unshared", "ours")
CHAIN_STEP = {"trl_padfree": "padding", "ours_unshared": "framework", "ours": "prompt_sharing"}
# per-token tensors of a GRPO micro-batch aligned with the completion (cut with it)
COMPLETION_KEYS = ("completion_ids", "completion_mask", "tool_mask", "old_per_token_logps",
                   "ref_per_token_logps", "sampling_per_token_logps", "importance_sampling_ratio")  # fmt: skip


# ---- ours -----------------------------------------------------------------------------------------
def our_arm(name: str, cfg, run_dir: Path):
    """One Trainer.step per call: our stages from its time/ metrics."""
    from cluster.factory import build_parts
    from cluster.trainer import Trainer

    trainer = Trainer(cfg, build_parts(cfg, run_dir, prefix=f"{name}-"), None)

    def step() -> dict:
        s = trainer.step()
        t = {k[5:]: v for k, v in s.items() if k.startswith("time/")}
        total = s["iteration_s"]
        gen, upd, sync = t.get("rollout", 0.0), t.get("learn", 0.0), t.get("broadcast", 0.0)
        samples = s.get("adv/samples", 0.0)
        engine = {k.split("/engine/", 1)[1]: v for k, v in s.items() if "/engine/" in k}
        return {
            "step_s": total,
            "samples": samples,
            "samples_per_s": samples / total if total > 0 else 0.0,
            "stages": {
                "generation": gen,
                "update": upd,
                "weight_sync": sync,
                "other": max(total - gen - upd - sync, 0.0),
            },
            "times": t,
            "episodes": {
                k: s.get(f"source/{k}")
                for k in ("success", "steps", "failed", "truncated", "unparsable_actions", "invalid_actions")
            },
            "learner": {
                k: s.get(f"learner/{k}")
                for k in (
                    "tokens",
                    "seq_tokens",
                    "processed_per_trained",
                    "padding_frac",
                    "micro_batches",
                    "step_time_s",
                )
            },
            "engine": {
                k: engine.get(k)
                for k in (
                    "prompt_tokens",
                    "prefix_cache_queries",
                    "prefix_cache_hits",
                    "prefix_cache_hit_rate",
                    "generation_tokens",
                )
            },
        }

    return step


# ---- TRL ------------------------------------------------------------------------------------------
def trim_padding(inputs: dict) -> dict:
    """A GRPO micro-batch cut to its own tokens: prompt columns that are padding in every row (left),
    completion columns that are padding in every row (right). With one row per micro-batch: no
    padding at all, the padding-free forward (logprobs unchanged: padding is masked out)."""
    pm, cm = inputs["prompt_mask"], inputs["completion_mask"]
    used_p = pm.bool().any(0).nonzero()
    used_c = cm.bool().any(0).nonzero()
    first = int(used_p[0]) if len(used_p) else 0
    last = int(used_c[-1]) + 1 if len(used_c) else 1
    out = dict(inputs)
    out["prompt_ids"], out["prompt_mask"] = inputs["prompt_ids"][:, first:], pm[:, first:]
    width = cm.size(1)
    for k in COMPLETION_KEYS:
        v = inputs.get(k)
        if v is not None and getattr(v, "dim", lambda: 0)() == 2 and v.size(1) == width:
            out[k] = v[:, :last]
    return out


def episodes_to_trl(results: list, eos_id: int) -> dict[str, list]:
    """EpisodeResults (sequence context: one trace per episode) as rollout_func's output: the prompt
    is everything before the first generated token, the completion the rest, `env_mask` 1 on
    generated tokens. A failed episode (ours drops it) gets a one-token, fully masked completion and
    no reward (TRL: unscorable, advantage 0)."""
    prompt_ids, completion_ids, env_mask, rewards = [], [], [], []
    for r in results:
        tr = r.traces[0] if r.traces else None
        if r.failed or tr is None or not tr.spans:
            prompt_ids.append(
                list(tr.token_ids[: tr.spans[0][0]]) if tr is not None and tr.spans else [eos_id]
            )
            completion_ids.append([eos_id])
            env_mask.append([0])
            rewards.append(None)
            continue
        start, end = tr.spans[0][0], tr.spans[-1][1]  # nothing after the last generated token is trained
        comp = list(tr.token_ids[start:end])
        mask = [0] * len(comp)
        for a, b in tr.spans:
            mask[a - start : b - start] = [1] * (b - a)
        prompt_ids.append(list(tr.token_ids[:start]))
        completion_ids.append(comp)
        env_mask.append(mask)
        rewards.append(float(r.reward))
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None,
            "env_mask": env_mask, "episode_reward": rewards}  # fmt: skip


def env_reward(prompts, completions, episode_reward, **_) -> list:
    """The TRL reward function: the episode's env reward (success 0/1), from rollout_func."""
    return list(episode_reward)


def _counters() -> dict[str, float]:
    keys = ("rollout_s", "generate_s", "generate_and_score_s", "generate_calls", "prefill_tokens",
            "prefill_padded_tokens", "generated_tokens", "update_forward_tokens", "ref_forward_tokens",
            "micro_batches", "gen_threads_seen", "update_threads_seen")  # fmt: skip
    return dict.fromkeys(keys, 0.0)


def _bench_trainer_class():
    """GRPOTrainer with stage timers and the padding-free emulation switch; nothing else changed."""
    from trl import GRPOTrainer

    class BenchGRPOTrainer(GRPOTrainer):
        trim = False  # the trl_padfree arm
        bench: dict[str, float] = {}

        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            self.bench["generate_and_score_s"] += time.perf_counter() - t0
            if "ref_per_token_logps" in out:
                self.bench["ref_forward_tokens"] += out["prompt_ids"].numel() + out["completion_ids"].numel()
            return out

        def _prepare_inputs(self, generation_batch):
            inputs = super()._prepare_inputs(generation_batch)
            if self.model.training:
                import torch

                if self.trim:
                    inputs = trim_padding(inputs)
                self.bench["update_forward_tokens"] += (
                    inputs["prompt_ids"].numel() + inputs["completion_ids"].numel()
                )
                self.bench["micro_batches"] += 1
                self.bench["update_threads_seen"] = torch.get_num_threads()
            return inputs

    return BenchGRPOTrainer


class TRLGeneration:
    """actors.episode.EpisodeRunner's engine interface over TRL's own generation path:
    GRPOTrainer._generate_single_turn (transformers generate, the trainer's GenerationConfig)."""

    name = "trl"

    def __init__(self, side: TRLSide) -> None:
        self.side, self.tokenizer, self.version = side, side.tokenizer, 0

    def generate(self, prompts: list[list[int]], params) -> list[list]:
        from cluster.core.generation import Generation

        tr = self.side.trainer
        per = params if isinstance(params, list) else [params] * len(prompts)
        for p in per:
            if p.choices is not None or p.json_schema is not None:
                raise ValueError("TRL has no constrained decoding: run with env.constrained_actions=false")
            if (p.max_tokens, p.temperature, p.top_p, p.n) != (
                tr.max_completion_length,
                tr.temperature,
                tr.top_p,
                1,
            ):
                raise ValueError(f"turn request {p} differs from TRL's generation config")
        if not prompts:
            return []
        b = self.side.bench
        t0 = time.perf_counter()
        completions, _ = tr._generate_single_turn([list(p) for p in prompts], None, {}, 1)
        b["generate_s"] += time.perf_counter() - t0
        b["generate_calls"] += 1
        b["prefill_tokens"] += sum(len(p) for p in prompts)
        b["prefill_padded_tokens"] += len(prompts) * max(len(p) for p in prompts)
        b["generated_tokens"] += sum(len(c) for c in completions)
        eos = set(tr.eos_token_ids)
        return [[Generation(self.tokenizer.decode(c, skip_special_tokens=True), list(c), [],
                            "stop" if c and c[-1] in eos else "length", self.version)] for c in completions]  # fmt: skip


class TRLSide:
    """One GRPOTrainer, trained in a thread one optimizer step per `step()` call (both TRL arms)."""

    def __init__(self, cfg, group: int, n_steps: int, tasks_per_step: int, micro_batch: int,
                 gen_threads: int, update_threads: int, out_dir: Path) -> None:  # fmt: skip
        import torch
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig

        from actors.episode import EpisodeRunner, EpisodeSettings
        from cluster.core.generation import GenParams
        from cluster.core.model_store import resolve_model
        from envs import make_env

        self.cfg, self.group, self.tasks_per_step = cfg, group, tasks_per_step
        self.gen_threads, self.update_threads = gen_threads, update_threads
        batch = tasks_per_step * group
        if batch % micro_batch:
            raise ValueError(f"--trl-micro-batch {micro_batch} must divide tasks x group = {batch}")
        r, lc = cfg.rollout, cfg.learner
        model_dir = str(resolve_model(cfg.model.path))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.grpo_args = dict(
            per_device_train_batch_size=micro_batch, gradient_accumulation_steps=batch // micro_batch,
            num_generations=group, max_completion_length=r.max_new_tokens, temperature=r.temperature,
            top_p=r.top_p, top_k=0, learning_rate=lc.lr, lr_scheduler_type="constant", warmup_steps=0,
            weight_decay=lc.weight_decay, adam_beta1=lc.adam_betas[0], adam_beta2=lc.adam_betas[1],
            optim="adamw_torch", max_grad_norm=lc.grad_clip, beta=lc.kl_coef["solver"], epsilon=lc.eps_low,
            epsilon_high=lc.eps_high, loss_type="grpo", scale_rewards="group",
            entropy_coef=lc.entropy_coef["solver"], num_iterations=1, gradient_checkpointing=False,
            bf16=False, fp16=False, use_cpu=not torch.cuda.is_available(), max_steps=n_steps,
            shuffle_dataset=False, seed=cfg.trainer.seed, logging_strategy="no", save_strategy="no",
            report_to="none", disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False,
        )  # fmt: skip
        args = GRPOConfig(output_dir=str(out_dir), **self.grpo_args)
        # rows are placeholders: the arm's sampler names the tasks (pending_tasks) before each step
        data = Dataset.from_list([{"prompt": f"slot {i}"} for i in range(tasks_per_step * n_steps)])
        side = self

        class Stepper(TrainerCallback):
            """Parks the training thread before each optimizer step until the driver releases it."""

            def on_train_begin(self, args, state, control, **kw):
                torch.set_num_threads(side.update_threads)

            def on_step_begin(self, args, state, control, **kw):
                side.parked.set()
                side.go.acquire()
                torch.set_num_threads(side.update_threads)
                side.bench = side.trainer.bench = _counters()
                side.episode_stats = {}
                side.t_begin = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                side.last = {"step_s": time.perf_counter() - side.t_begin, **side.bench, **side.episode_stats}

        self.bench: dict[str, float] = _counters()
        self.episode_stats: dict[str, float] = {}
        self.pending_tasks: list = []
        self.last: dict | None = None
        self.t_begin = 0.0
        self.episodes = 0
        self.parked, self.go = threading.Event(), threading.Semaphore(0)
        self.error: BaseException | None = None
        self.trainer = _bench_trainer_class()(
            model=model, reward_funcs=env_reward, args=args, train_dataset=data, processing_class=self.tokenizer,
            callbacks=[Stepper()], rollout_func=self.rollout,
        )  # fmt: skip
        self.trainer.bench = self.bench
        self.runner = EpisodeRunner(TRLGeneration(self), EpisodeSettings.from_config(cfg))
        self.env_cfg = cfg.env
        self._make_env = make_env
        # env slots as a rollout worker holds them: at most rollout.envs_per_worker episodes at once
        self.envs = [make_env(cfg.env) for _ in range(min(max(1, r.envs_per_worker), batch))]
        # our Trainer's solver_gen
        self.gen = GenParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                             logprobs=r.engine_logprobs)  # fmt: skip
        self.thread = threading.Thread(target=self._train, name="trl-train", daemon=True)
        self.thread.start()
        self._wait()  # train() set up (optimizer, dataloader) and parked before step 1
        if self.error is not None:
            raise RuntimeError("TRL GRPOTrainer failed to start") from self.error

    def _train(self) -> None:
        try:
            self.trainer.train()
        except BaseException as e:  # handed to the driver
            self.error = e
        finally:
            self.parked.set()

    def _wait(self) -> None:
        while not self.parked.wait(5.0):
            if not self.thread.is_alive():
                return

    def step(self, trim: bool, tasks: list) -> dict:
        """One TRL optimizer step (generation, scoring, update) on `tasks` x group episodes."""
        self._wait()
        if self.error is not None or not self.thread.is_alive():
            raise RuntimeError("the TRL trainer stopped (more arm calls than max_steps?)") from self.error
        self.trainer.trim, self.pending_tasks, self.last = trim, list(tasks), None
        self.parked.clear()
        self.go.release()
        self._wait()  # parked before the next step, or train() returned after the last one
        if self.error is not None:
            raise RuntimeError("TRL step failed") from self.error
        if self.last is None:
            raise RuntimeError("TRL step did not reach on_step_end")
        return self.last

    def rollout(self, prompts: list, trainer) -> dict[str, Any]:
        """TRL's rollout_func: tasks x group episodes, every turn generated by TRL (TRLGeneration)."""
        import torch

        from cluster.core.records import EpisodeJob

        tasks, n = self.pending_tasks, len(self.pending_tasks) * self.group
        if len(prompts) != n:
            raise ValueError(f"rollout_func got {len(prompts)} prompts, expected {n} (tasks x group)")
        t0 = time.perf_counter()
        torch.set_num_threads(self.gen_threads)
        self.bench["gen_threads_seen"] = torch.get_num_threads()
        try:
            jobs = [EpisodeJob(t) for t in tasks for _ in range(self.group)]  # groups consecutive, as TRL's
            ids = [f"trl-e{self.episodes + k}" for k in range(n)]
            self.episodes += n
            width = len(self.envs)
            results = []
            for s in range(0, n, width):
                chunk = jobs[s : s + width]
                results += self.runner.run(self.envs[: len(chunk)], chunk, self.gen, ids[s : s + width])
                for env in self.runner.hung:  # as RolloutWorker._drop_hung
                    self.envs[next(i for i, e in enumerate(self.envs) if e is env)] = self._make_env(
                        self.env_cfg
                    )
                self.runner.hung.clear()
        finally:
            torch.set_num_threads(self.update_threads)
        out = episodes_to_trl(results, self.tokenizer.eos_token_id)
        kept = [not r.failed and bool(r.traces) for r in results]
        ok = [r for r, k in zip(results, kept) if k]
        m = max(len(ok), 1)
        self.episode_stats = {
            "samples": float(len(ok)),
            "failed": float(len(results) - len(ok)),
            "success": sum(r.won for r in ok) / m,
            "steps": sum(r.steps for r in ok) / m,
            "truncated": float(sum(r.truncated for r in ok)),
            "unparsable_actions": float(sum(r.unparsable_actions for r in ok)),
            "invalid_actions": float(sum(r.invalid_actions for r in ok)),
            "episode_tokens": float(sum(len(r.traces[0].token_ids) for r in ok)),
            "trained_tokens": float(sum(sum(mask) for k, mask in zip(kept, out["env_mask"]) if k)),
        }
        self.bench["rollout_s"] += time.perf_counter() - t0
        return out

    def close(self) -> None:
        self.thread.join(timeout=60)
        for env in self.envs:
            env.close()


def trl_arm(side: TRLSide, trim: bool, sampler, tasks_per_step: int):
    def step() -> dict:
        b = side.step(trim, sampler.next(tasks_per_step))
        total, gen, score = b["step_s"], b["rollout_s"], b["generate_and_score_s"]
        samples = b["samples"]
        return {
            "step_s": total,
            "samples": samples,
            "samples_per_s": samples / total if total > 0 else 0.0,
            "stages": {"generation": gen, "update": total - gen, "weight_sync": 0.0, "other": 0.0},
            "trl_stages": {
                "transformers_generate": b["generate_s"],
                "episode_loop_and_env": gen - b["generate_s"],
                "reference_and_scoring": score - gen,
                "loss_backward_optimizer": total - score,
            },
            "episodes": {
                k: b[k]
                for k in ("success", "steps", "failed", "truncated", "unparsable_actions", "invalid_actions")
            },
            "tokens": {
                k: b[k]
                for k in (
                    "episode_tokens",
                    "trained_tokens",
                    "update_forward_tokens",
                    "ref_forward_tokens",
                    "prefill_tokens",
                    "prefill_padded_tokens",
                    "generated_tokens",
                    "generate_calls",
                    "micro_batches",
                )
            },
            "threads": {"generation": b["gen_threads_seen"], "update": b["update_threads_seen"]},
        }

    return step


# ---- the report ---------------------------------------------------------------------------------
def _med(values) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def per_sample(runs: list[dict]) -> dict[str, float]:
    """Median seconds per trained sample of each stage; `total` is their sum (the decomposition adds up)."""
    out = {s: statistics.median(r["stages"][s] / max(r["samples"], 1.0) for r in runs) for s in STAGES}
    out["total"] = sum(out[s] for s in STAGES)
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def decompose(runs: dict[str, list[dict]]) -> dict:
    """TRL - ours in seconds per sample, stage by stage; the update difference along CHAIN."""
    S = {a: per_sample(r) for a, r in runs.items()}
    o, t = S["ours"], S["trl"]
    diff = t["total"] - o["total"]
    parts = {"generation": t["generation"] - o["generation"]}
    seq = [a for a in CHAIN if a in S]
    for prev, cur in zip(seq, seq[1:]):
        removed = [CHAIN_STEP[x] for x in CHAIN[CHAIN.index(prev) + 1 : CHAIN.index(cur) + 1]]
        parts["update_" + "+".join(removed)] = S[prev]["update"] - S[cur]["update"]
    parts["weight_sync"] = t["weight_sync"] - o["weight_sync"]
    parts["other"] = t["other"] - o["other"]
    trl_sub = {k: statistics.median(r["trl_stages"][k] / max(r["samples"], 1.0) for r in runs["trl"])
               for k in runs["trl"][0]["trl_stages"]}  # fmt: skip
    return {
        "method": "medians over repeats of each stage's seconds per trained sample; totals are sums of the stage "
        "medians, so the parts add up to the difference exactly (the headline ratio uses median samples/s)",
        "s_per_sample": S,
        "trl_s_per_sample_detail": trl_sub,
        "difference_s_per_sample": parts | {"total": diff},
        "share_of_difference": {k: v / diff for k, v in parts.items()} if diff else {},
        "ratio_from_stage_medians": _ratio(t["total"], o["total"]),
        "generation_ratio_trl_over_ours": _ratio(t["generation"], o["generation"]),
        "update_ratio_trl_over_ours": _ratio(t["update"], o["update"]),
        "ratio_if_trl_had_our_generation": _ratio(t["total"] - t["generation"] + o["generation"], o["total"]),
        "ratio_if_trl_had_our_update": _ratio(t["total"] - t["update"] + o["update"], o["total"]),
    }


def _per_sample_median(runs: list[dict], section: str, key: str) -> float | None:
    vals = [r[section].get(key) for r in runs]
    return _med(v / max(r["samples"], 1.0) if v is not None else None for v, r in zip(vals, runs))


def tokens_per_sample(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """What each arm's generation and update processed, per trained sample (medians)."""
    out: dict[str, dict] = {}
    for a, rs in runs.items():
        if a.startswith("ours"):
            prompt = _per_sample_median(rs, "engine", "prompt_tokens")
            hits = _per_sample_median(rs, "engine", "prefix_cache_hits")
            out[a] = {
                "generation_prompt_tokens": prompt,
                "generation_prefix_cache_hits": hits,
                "generation_prefilled_tokens": prompt - hits
                if prompt is not None and hits is not None
                else None,
                "generated_tokens": _per_sample_median(rs, "engine", "generation_tokens"),
                "update_processed_tokens": _per_sample_median(rs, "learner", "seq_tokens"),
                "trained_tokens": _per_sample_median(rs, "learner", "tokens"),
                "update_padding_frac": _med(r["learner"].get("padding_frac") for r in rs),
            }
        else:
            out[a] = {
                "generation_prompt_tokens": _per_sample_median(rs, "tokens", "prefill_tokens"),
                "generation_prefilled_tokens": _per_sample_median(rs, "tokens", "prefill_padded_tokens"),
                "generated_tokens": _per_sample_median(rs, "tokens", "generated_tokens"),
                "episode_tokens": _per_sample_median(rs, "tokens", "episode_tokens"),
                "update_processed_tokens": _per_sample_median(rs, "tokens", "update_forward_tokens"),
                "reference_forward_tokens": _per_sample_median(rs, "tokens", "ref_forward_tokens"),
                "trained_tokens": _per_sample_median(rs, "tokens", "trained_tokens"),
            }
    return out


def packing(S: dict, tok: dict) -> dict:
    out: dict[str, Any] = {}
    if "ours_unshared" in S:
        out["ours_share_prompts"] = {
            "update_s_per_sample": {
                "share_prompts": S["ours"]["update"],
                "unshared": S["ours_unshared"]["update"],
            },
            "update_speedup": _ratio(S["ours_unshared"]["update"], S["ours"]["update"]),
            "update_tokens_per_sample": {
                "share_prompts": tok["ours"]["update_processed_tokens"],
                "unshared": tok["ours_unshared"]["update_processed_tokens"],
            },
        }
    trl = tok["trl"]
    out["trl_padding_free"] = {
        "supported_by_trl_grpo": False,
        "why": "TRL 1.16 GRPOConfig has no padding_free (SFTConfig has one; DPOConfig's is disabled); every GRPO "
        "micro-batch is padded to the generation batch's longest prompt + longest completion",
        "trl_update_tokens_over_episode_tokens": _ratio(
            trl["update_processed_tokens"], trl["episode_tokens"]
        ),
        "trl_reference_tokens_over_episode_tokens": _ratio(
            trl["reference_forward_tokens"], trl["episode_tokens"]
        ),
    }
    if "trl_padfree" in S:
        out["trl_padding_free"] |= {
            "emulated": "arm trl_padfree: each micro-batch cut to its own tokens before the loss forward/backward "
            "(the reference forward in TRL's scoring stays padded)",
            "update_s_per_sample": {"padded": S["trl"]["update"], "padding_free": S["trl_padfree"]["update"]},
            "update_speedup": _ratio(S["trl"]["update"], S["trl_padfree"]["update"]),
            "update_tokens_per_sample": {
                "padded": trl["update_processed_tokens"],
                "padding_free": tok["trl_padfree"]["update_processed_tokens"],
            },
        }
    return out


def _f(v, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


PART_TEXT = {
    "generation": "generation (vLLM with prefix cache vs transformers generate re-encoding each turn)",
    "update_padding": "update: TRL's padding (TRL vs its padding-free emulation)",
    "update_framework": "update: framework (TRL's Trainer vs our DeepSpeed learner, no prompt sharing on either)",
    "update_prompt_sharing": "update: our prompt sharing (share_prompts false -> true)",
    "weight_sync": "weight sync (ours only: learner -> engine)",
    "other": "other (advantages, bookkeeping; TRL: inside its stages)",
}


def markdown(p: dict) -> str:
    info, c, d, tok = p["machine"], p["config"], p["decomposition"], p["tokens_per_sample"]
    S, runs = d["s_per_sample"], p["runs"]
    lines = [
        "# Multi-turn GRPO on ALFWorld: ours vs TRL GRPOTrainer",
        "",
        f"{info['date']}, {info['cpus']} CPU cores, load {info['load_average_1m']}; TRL {p['versions']['trl']}, "
        f"transformers {p['versions']['transformers']}. {c['tasks']} tasks x {c['group']} episodes per step on "
        f"{c['path']} (env.context=sequence, env.max_steps {c['max_steps']}, {c['max_new_tokens']} new tokens per "
        f"turn, free-text actions on both sides), one optimizer step per batch, lr {c['lr']}, KL coef (TRL beta) "
        f"{c['beta']}; {p['repeats']} repeats per arm after {p['warmup']} warm-up, interleaved.",
        "",
        "| arm | samples/s (median) | s/sample | generation | update | weight sync | other | repeats (samples/s; load before) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in p["arms"]:
        s = S[a]
        reps = ", ".join(f"{r['samples_per_s']:.3f} ({r['load_before']})" for r in runs[a])
        lines.append(f"| {ARM_LABELS[a]} | {p['samples_per_s'][a]:.3f} | {s['total']:.2f} | {s['generation']:.2f} | "
                     f"{s['update']:.2f} | {s['weight_sync']:.2f} | {s['other']:.2f} | {reps} |")  # fmt: skip
    diff = d["difference_s_per_sample"]
    lines += [
        "",
        f"**ratio ours / TRL = {p['ratio']:.2f}x** (median samples/s; from the stage medians "
        f"{_f(d['ratio_from_stage_medians'])}x).",
        "",
        f"Where it comes from: TRL minus ours = {diff['total']:+.2f} s per sample (stage medians), made of",
    ]
    share = d["share_of_difference"]
    for k, v in diff.items():
        if k == "total":
            continue
        text = PART_TEXT.get(k, "update: " + k.removeprefix("update_").replace("+", " + ").replace("_", " "))
        lines.append(f"- {text}: {v:+.2f} s ({_f(share.get(k), '{:.0%}')})")
    t_o, t_t = tok["ours"], tok["trl"]
    lines += [
        "",
        f"Generation is {_f(d['generation_ratio_trl_over_ours'])}x slower in TRL and the update "
        f"{_f(d['update_ratio_trl_over_ours'])}x; with our generation TRL's ratio would be "
        f"{_f(d['ratio_if_trl_had_our_generation'])}x, with our update {_f(d['ratio_if_trl_had_our_update'])}x.",
        f"Prompt tokens encoded in generation per sample: ours {_f(t_o['generation_prefilled_tokens'], '{:.0f}')} "
        f"prefilled of {_f(t_o['generation_prompt_tokens'], '{:.0f}')} requested (vLLM prefix cache), TRL "
        f"{_f(t_t['generation_prefilled_tokens'], '{:.0f}')} with left padding "
        f"({_f(t_t['generation_prompt_tokens'], '{:.0f}')} real): each turn re-encodes the whole conversation. "
        f"TRL's split per sample: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in d["trl_s_per_sample_detail"].items())
        + ".",
        "",
        "Packing: "
        + (
            f"our prompt sharing: update {_f(p['packing']['ours_share_prompts']['update_speedup'])}x faster "
            f"({_f(tok['ours_unshared']['update_processed_tokens'], '{:.0f}')} -> "
            f"{_f(t_o['update_processed_tokens'], '{:.0f}')} tokens per sample); "
            if "ours_share_prompts" in p["packing"]
            else ""
        )
        + "TRL's GRPOTrainer has no padding_free in 1.16: its update forward covers "
        f"{_f(p['packing']['trl_padding_free']['trl_update_tokens_over_episode_tokens'])}x the episode tokens"
        + (
            f"; cutting each micro-batch to its tokens (emulated) makes its update "
            f"{_f(p['packing']['trl_padding_free']['update_speedup'])}x faster."
            if "update_speedup" in p["packing"]["trl_padding_free"]
            else "."
        ),
        "",
        f"Threads: ours generates with {c['threads']['ours_rollout']} and updates with {c['threads']['ours_learner']} "
        f"(learner.num_threads); TRL the same, set in its own thread (seen: generation "
        f"{_med(r['threads']['generation'] for r in runs['trl'])}, update {_med(r['threads']['update'] for r in runs['trl'])}). "
        f"TRL: per_device_train_batch_size {c['trl']['per_device_train_batch_size']}, gradient_accumulation_steps "
        f"{c['trl']['gradient_accumulation_steps']}; ours: learner.micro_batch_tokens {c['micro_batch_tokens']}. "
        "TRL's episodes come from rollout_func running our episode loop with TRL's own generation "
        "(GRPOTrainer._generate_single_turn); observation tokens are masked through env_mask.",
    ]
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=CONFIG)
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per arm after one warm-up")
    ap.add_argument("--tasks", type=int, default=None, help="tasks per step (default: trainer.batch_size)")
    ap.add_argument(
        "--group", type=int, default=None, help="samples per task (default: trainer.grpo_samples)"
    )
    ap.add_argument("--max-steps", type=int, default=None, help="turns per episode (default: env.max_steps)")
    ap.add_argument(
        "--max-new-tokens", type=int, default=None, help="tokens per turn (default: rollout.max_new_tokens)"
    )
    ap.add_argument(
        "--arms",
        default=",".join(ARMS),
        help=f"comma-separated, from {','.join(ARMS)} (ours and trl required)",
    )
    ap.add_argument("--trl-micro-batch", type=int, default=1, help="TRL per_device_train_batch_size")
    ap.add_argument("--micro-batch-tokens", type=int, default=2048, help="our learner.micro_batch_tokens")
    ap.add_argument(
        "--dry", action="store_true", help="build everything, one step per arm, env.max_steps 2, no files"
    )
    args = ap.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not {"ours", "trl"} <= set(arms) or set(arms) - set(ARMS):
        ap.error(f"--arms: expected a subset of {ARMS} with ours and trl")
    arms = [a for a in ARMS if a in arms]
    if args.repeats < 1:
        ap.error("--repeats: expected >= 1")

    import ray
    import transformers
    import trl

    from cluster.core.config import load_config
    from cluster.data import ensure_data
    from cluster.factory import training_tasks
    from cluster.sampler import TaskSampler
    from learner.actor import cpu_threads

    base = load_config(args.config)
    tasks = args.tasks or base.trainer.batch_size
    group = args.group or base.trainer.grpo_samples
    max_steps = 2 if args.dry else (args.max_steps or base.env.max_steps)
    repeats, warmup = (1, 0) if args.dry else (args.repeats, 1)
    over = ["trainer.mode=grpo", "env.context=sequence", "env.constrained_actions=false", "trainer.overlap=false",
            "learner.skip_zero_advantage=false", "trainer.eval_tasks=1", "env.eval_splits=[]",
            f"learner.micro_batch_tokens={args.micro_batch_tokens}", f"trainer.batch_size={tasks}",
            f"trainer.grpo_samples={group}", f"env.max_steps={max_steps}"]  # fmt: skip
    if args.max_new_tokens:
        over.append(f"rollout.max_new_tokens={args.max_new_tokens}")
    cfgs = {a: load_config(args.config, over + OURS[a]) for a in arms if a in OURS}
    cfg = cfgs["ours"]  # the TRL side reads the same sections (share_prompts is ours only)
    ensure_data(cfg)
    _, train_tasks = training_tasks(cfg)
    gen_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))  # what our rollout worker uses
    update_threads = cpu_threads(cfg.learner.num_threads, cfg.learner.num_learners)  # what our learner uses
    trl_arms = [a for a in arms if a.startswith("trl")]
    info = machine()
    ray.init(num_cpus=2 * len(cfgs), include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fns = {a: our_arm(a, c, Path(tmp) / a) for a, c in cfgs.items()}
            side = TRLSide(cfg, group, len(trl_arms) * (warmup + repeats), tasks, args.trl_micro_batch,
                           gen_threads, update_threads, Path(tmp) / "trl")  # fmt: skip
            for a in trl_arms:
                fns[a] = trl_arm(side, a == "trl_padfree", TaskSampler(train_tasks, cfg.trainer.seed), tasks)
            runs = interleave({a: fns[a] for a in arms}, repeats, warmup)
            side.close()
    finally:
        ray.shutdown()

    sps = {a: median(runs[a], "samples_per_s") for a in arms}
    dec = decompose(runs)
    tok = tokens_per_sample(runs)
    lc = cfg.learner
    payload = {
        "machine": info,
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "ray": ray.__version__,
        },
        "config": {
            "path": args.config,
            "overrides": {"common": over, **{a: OURS[a] for a in cfgs}},
            "tasks": tasks,
            "group": group,
            "max_steps": max_steps,
            "max_new_tokens": cfg.rollout.max_new_tokens,
            "lr": lc.lr,
            "beta": lc.kl_coef["solver"],
            "micro_batch_tokens": lc.micro_batch_tokens,
            "trl": side.grpo_args,
            "trl_api": "GRPOTrainer(rollout_func=...) + env_mask; per turn "
            "GRPOTrainer._generate_single_turn (transformers generate)",
            "threads": {
                "ours_rollout": gen_threads,
                "ours_learner": update_threads,
                "trl_generation": gen_threads,
                "trl_update": update_threads,
            },
        },
        "arms": arms,
        "repeats": repeats,
        "warmup": warmup,
        "runs": runs,
        "samples_per_s": sps,
        "ours_samples_per_s": sps["ours"],
        "trl_samples_per_s": sps["trl"],
        "ratio": sps["ours"] / sps["trl"] if sps["trl"] else float("nan"),
        "decomposition": dec,
        "tokens_per_sample": tok,
        "packing": packing(dec["s_per_sample"], tok),
    }
    md = markdown(payload)
    if args.dry:
        import json

        print(md)
        print(
            json.dumps(
                {k: payload[k] for k in ("samples_per_s", "ratio", "decomposition")}, indent=1, default=str
            )
        )
        print("--dry: nothing written")
        return 0
    write("trl_multiturn", payload, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
