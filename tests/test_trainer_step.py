"""A whole evolving iteration and a grpo iteration of `Trainer.step` against fakes, in seconds.

No Ray, vLLM or DeepSpeed: the real episode loop (actors.episode) drives a FakeEngine (the embedded
model's tokenizer, scripted choices) in FakeEnvs, the pools are FakePools, the learner a
FakeLearners that keeps what it was given. Checked: which episodes are played, which traces reach the
learner with which advantages and masks, what the skill library records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pytest

from actors.episode import EpisodeRunner, EpisodeSettings
from cluster.core.config import load_config
from cluster.core.generation import Generation
from cluster.core.records import EpisodeJob, TaskSpec, table_to_traces
from cluster.trainer import Trainer, TrainerParts
from envs.base import Observation, StepResult
from skills.library import SkillLibrary
from skills.retrieval import Embedder, TaskIndex

GOOD_SKILL = {
    "name": "win-fast",
    "description": "GOOD: choose win as soon as it is admissible.",
    "metadata": {"source_task_type": "toy", "success_signal": "won", "abstraction_level": "low",
                 "skill_category": "toy"},
    "skill_overview": ["pick win"], "when_to_use": ["toy tasks"], "inputs_to_identify": ["the win action"],
    "workflow": [{"step": 1, "goal": "win", "action": "win", "tools_or_strategy": "none",
                  "completion_condition": "won"}],
    "decision_rules": ["prefer win"], "error_handling": [{"error": "e", "cause": "c", "response": "r"}],
    "output_requirements": ["one action"],
}  # fmt: skip
BAD_TEXT = "I think the skill is to look around a lot."


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from cluster.core.model_store import resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model("embedded"))
    except FileNotFoundError as e:
        pytest.skip(str(e))


class FakeEnv:
    """FakeEnv: `win` wins at once; anything else is a step that changes nothing (max 3 steps)."""

    max_steps = 3

    def reset(self, task: TaskSpec) -> Observation:
        self.task, self.n = task, 0
        return Observation(f"You are in room {task.task_id}.", ["look", "win"], task.text, task.task_type)

    def step(self, action: str) -> StepResult:
        self.n += 1
        won = action == "win"
        obs = Observation(
            "You won." if won else "Nothing happens.", ["look", "win"], self.task.text, self.task.task_type
        )
        return StepResult(obs, float(won), won or self.n >= self.max_steps, won)

    def close(self) -> None:
        pass


class FakeEngine:
    """FakeEngine: picks `win` when the prompt carries a GOOD skill, else `look`; extractor prompts get
    alternately a valid skill and unparsable prose."""

    name = "fake"

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.version, self.calls = tokenizer, 0, 0

    def generate(self, prompts, params):
        out = []
        for ids, p in zip(prompts, params if isinstance(params, list) else [params] * len(prompts)):
            text = self.tokenizer.decode(ids)
            if p.choices is not None:
                texts = ["win" if "GOOD" in text else "look"]
            else:
                texts = [json.dumps(GOOD_SKILL) if j % 2 == 0 else BAD_TEXT for j in range(p.n)]
            gens = []
            for t in texts:
                tok = self.tokenizer.encode(t, add_special_tokens=False) + [self.tokenizer.eos_token_id]
                gens.append(Generation(t, tok, [], "stop", self.version))
            out.append(gens)
        return out


@dataclass
class FakePool:
    """FakePool: the RolloutPool interface over one FakeEngine and the real episode loop."""

    engine: FakeEngine
    settings: EpisodeSettings
    prefix: str = "rollout"
    restarts: int = 0

    def __post_init__(self) -> None:
        self.played: list[list[EpisodeJob]] = []
        self.runner = EpisodeRunner(self.engine, self.settings)
        self.workers = [object()]

    def play(self, jobs, gen, progress=None):
        self.played.append(list(jobs))
        if progress is not None:
            progress(len(jobs), len(jobs))
        return self.runner.run(
            [FakeEnv() for _ in jobs], list(jobs), gen, [f"e{len(self.played)}-{i}" for i in range(len(jobs))]
        )

    def generate(self, prompts, gen, progress=None):
        if progress is not None:
            progress(len(prompts), len(prompts))
        return self.engine.generate(prompts, gen)

    def engine_stats(self) -> dict:
        return {"prompt_tokens": 1.0}


class FakeLearners:
    def __init__(self) -> None:
        self.tables: list[pa.Table] = []

    def train(self, table: pa.Table) -> dict:
        self.tables.append(table)
        return {"loss": 0.0}


class FakeWeightSync:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.pushed = engine, []

    def push(self, version: int) -> dict:
        self.pushed.append(version)
        self.engine.version = version
        return {"weight_sync/push_s": 0.0}


TASKS = [TaskSpec(f"t{i}", "alfworld", "toy", f"win the toy game number {i}", f"ref{i}") for i in range(6)]


def make_trainer(tokenizer, tmp_path, *overrides):
    cfg = load_config(None, ["env.max_steps=3", "env.context=sequence", "skills.n_candidates=2",
                             "skills.k_neighbours=2", "skills.schema=paper", "trainer.batch_size=2",
                             "trainer.grpo_samples=2", "learner.skip_zero_advantage=false", *overrides])  # fmt: skip
    engine = FakeEngine(tokenizer)
    pool = FakePool(engine, EpisodeSettings.from_config(cfg))
    learners = FakeLearners()
    bm25 = Embedder("bm25")
    parts = TrainerParts(pool, pool, learners, FakeWeightSync(engine), TaskIndex(TASKS, bm25),
                         SkillLibrary.open(tmp_path / "skills"), bm25, tokenizer, TASKS)  # fmt: skip
    return Trainer(cfg, parts, tmp_path), pool, learners


def test_evolving_iteration_end_to_end(tokenizer, tmp_path):
    trainer, pool, learners = make_trainer(tokenizer, tmp_path)
    stats = trainer.step()
    # 1. two source episodes, no skill; 2. downstream: per source 2 neighbours x (baseline + 2 skills,
    # the malformed one played with its raw text, as the paper does)
    source, downstream = pool.played
    assert len(source) == 2 and all(j.skill is None for j in source)
    assert len(downstream) == 2 * 2 * 3
    raw = [j for j in downstream if j.skill is not None and j.skill.raw]
    assert len(raw) == 4 and all(j.skill.text == BAD_TEXT for j in raw)
    # the source task may be one of its own neighbours (include_source, the paper's top-K)
    assert any(j.task.task_id == s.task.task_id for s in source for j in downstream)

    traces = table_to_traces(learners.tables[0])
    ext = [t for t in traces if t.role == "extractor"]
    sol = [t for t in traces if t.role == "solver"]
    assert len(ext) == 4 and len(sol) == 8  # baselines and source episodes are not trained on
    good = [t for t in ext if t.skill_id]  # parsed
    bad = [t for t in ext if not t.skill_id]
    assert len(good) == len(bad) == 2
    assert all(
        t.reward == 1.0 and t.advantages[0] > 0 for t in good
    )  # its skill won every downstream episode
    assert all(t.reward == 0.0 and t.advantages[0] < 0 for t in bad)  # malformed: reward 0
    # the extractor trace trains on exactly the generated text
    assert tokenizer.decode(good[0].span_tokens(0), skip_special_tokens=True) == json.dumps(GOOD_SKILL)
    # downstream: each episode is one sequence; a GOOD-skill episode wins at once, a raw one never
    won = [t for t in sol if t.won]
    lost = [t for t in sol if not t.won]
    assert len(won) == len(lost) == 4
    assert all(len(t.spans) == 1 and t.advantages[0] > 0 for t in won)
    assert all(len(t.spans) == 3 and all(a < 0 for a in t.advantages) for t in lost)
    for t in lost:  # mask 1 only on the generated actions; observations in between are mask 0
        assert [tokenizer.decode(t.span_tokens(i), skip_special_tokens=True) for i in range(3)] == [
            "look"
        ] * 3
        assert "Nothing happens." in tokenizer.decode(t.token_ids[t.spans[0][1] : t.spans[1][0]])
    # grouping: solver advantages are normalised per downstream task within a source group
    assert {t.group_id.split(":")[0] for t in sol} == {"d"} and {t.group_id.split(":")[0] for t in ext} == {
        "x"
    }

    assert trainer.parts.weight_sync.pushed == [1] and stats["policy_version"] == 1 and trainer.iteration == 1
    lib = trainer.parts.library
    (entry,) = list(lib)
    assert entry.skill.name == "win-fast" and entry.stats.trials == 4 and entry.stats.wins == 4
    assert entry.stats.baseline_trials == 4 and entry.stats.baseline_wins == 0
    assert stats["skills/parse_failure_rate"] == 0.5 and stats["downstream/success"] == 0.5
    assert (tmp_path / "trajectories" / "iter-00000.parquet").exists()
    assert stats["rollout/engine/prompt_tokens"] == 1.0


def test_grpo_iteration_groups_per_task(tokenizer, tmp_path):
    trainer, pool, learners = make_trainer(tokenizer, tmp_path, "trainer.mode=grpo")
    stats = trainer.step()
    (jobs,) = pool.played
    assert [j.task.task_id for j in jobs][::2] == [j.task.task_id for j in jobs][1::2]  # 2 samples per task
    traces = table_to_traces(learners.tables[0])
    assert len(traces) == 4 and all(t.role == "solver" for t in traces)
    # no skill, the fake always looks: every group ties, advantage 0 (kept: skip_zero_advantage off)
    assert all(a == 0.0 for t in traces for a in t.advantages)
    assert stats["adv/zero_variance_groups"] == 2


def test_stale_traces_are_dropped_and_counted(tokenizer, tmp_path):
    trainer, pool, learners = make_trainer(tokenizer, tmp_path, "trainer.mode=grpo")
    trainer.policy_version = 3  # the engine still serves version 0: a worker that missed a push
    stats = trainer.step()
    assert stats["learner/stale_traces_dropped"] == 4 and not learners.tables


def test_step_reward_per_step_advantages(tokenizer, tmp_path):
    """env.reward=step (the paper's Mind2Web): each step's reward, normalised per step index."""
    from cluster.core.records import EpisodeResult
    from cluster.rewards import step_advantages

    def ep(rewards):
        return EpisodeResult("e", TASKS[0], False, sum(rewards), len(rewards), step_rewards=rewards)

    adv = step_advantages([ep([1.0, 1.0, 0.0]), ep([1.0, 0.0]), ep([0.0])])
    # index 0: [1, 1, 0] -> +,+,-; index 1: [1, 0] -> +,-; index 2: alone and wrong -> -1
    assert adv[0][0] > 0 and adv[1][0] > 0 and adv[2][0] < 0
    assert adv[0][1] > 0 > adv[1][1] and adv[0][2] == -1.0
    alone_right = step_advantages([ep([1.0, 1.0]), ep([0.0])])
    assert alone_right[0][1] == alone_right[0][0]  # alone and right: the episode's previous step's value


def test_console_reports_every_stage_and_one_line_per_iteration(tokenizer, tmp_path):
    import io

    from cluster.progress import Progress

    trainer, _, _ = make_trainer(tokenizer, tmp_path)
    out = io.StringIO()
    trainer.progress = Progress(out)
    stats = trainer.step()
    line = trainer.progress.summary(1, 3, stats)
    text = out.getvalue()
    for stage in ("source", "extract", "downstream"):
        assert f"[1] {stage}:" in text  # plain lines: not a terminal
    assert line.startswith("iteration 1/3: source 0") and "loss" in line and "learn" not in line.split("(")[0]


def test_overlap_trains_one_version_stale_batches_and_resumes_without_losing_tasks(tokenizer, tmp_path):
    """trainer.overlap: batch t+1 is collected before the push of t; a resume redraws it."""
    from cluster.core.config import ConfigError

    with pytest.raises(ConfigError, match="engine_logprobs"):
        load_config(None, ["trainer.overlap=true"])
    over = ["trainer.mode=grpo", "trainer.overlap=true", "rollout.engine_logprobs=true"]
    trainer, pool, learners = make_trainer(tokenizer, tmp_path, *over)
    trainer.step()
    assert len(pool.played) == 2  # this iteration's batch and the next one's, both by version 0
    state = trainer.state()
    trainer.step()
    trainer.prefetch = False  # the last iteration: nothing collected ahead
    trainer.step()
    assert len(pool.played) == 3 and trainer.parts.weight_sync.pushed == [1, 2, 3]
    versions = [sorted({t.policy_version for t in table_to_traces(tb)}) for tb in learners.tables]
    assert versions == [[0], [0], [1]]  # every batch after the first is one version stale, none dropped
    drawn = [[j.task.task_id for j in jobs] for jobs in pool.played]

    fresh, pool2, _ = make_trainer(tokenizer, tmp_path / "resumed", *over)
    fresh.restore(state)  # the checkpoint after iteration 1: its collected-ahead batch is not in it
    fresh.prefetch = False
    fresh.step()
    assert [j.task.task_id for j in pool2.played[0]] == drawn[1]
    trainer.close()


def test_overlap_close_stops_a_collection_in_flight(tokenizer, tmp_path):
    """An error (or Ctrl-C) in the main thread while the next batch is being collected: `close()`
    stops that collection at its next chunk instead of waiting for the whole of it."""
    import threading
    import time

    over = ["trainer.mode=grpo", "trainer.overlap=true", "rollout.engine_logprobs=true"]
    trainer, pool, learners = make_trainer(tokenizer, tmp_path, *over)
    trainer.step()
    started, chunks = threading.Event(), []

    def slow_play(jobs, gen, progress=None):  # 100 chunks of 50 ms: 5 s uninterrupted
        started.set()
        for k in range(100):
            time.sleep(0.05)
            chunks.append(k)
            if progress is not None:
                progress(k + 1, 100)
        return FakePool.play(pool, jobs, gen)

    def failing_train(table):
        started.wait(5)
        raise RuntimeError("learner died")

    pool.play, learners.train = slow_play, failing_train
    with pytest.raises(RuntimeError, match="learner died"):
        trainer.step()
    t0 = time.perf_counter()
    trainer.close()
    assert time.perf_counter() - t0 < 2.0 and len(chunks) < 100
    assert trainer._next is None
