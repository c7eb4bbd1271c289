"""End to end with the real vLLM engine and the real episode loop: a source episode, two extractor
candidates decoded under the skill JSON schema, 2 skills x 2 downstream tasks = 4 episodes (plus the
no-skill baseline), and the library's stats and persistence on top.

The environment is a scripted FakeDrawerEnv: this test is about the skill pipeline, not ALFWorld.
"""

from __future__ import annotations

import pytest

from cluster.core.config import EngineConfig, SkillsConfig
from cluster.core.records import TaskSpec
from envs.base import Observation, StepResult
from skills.extractor import extractor_gen_params, extractor_prompt
from skills.library import GateConfig, Provenance, SkillLibrary
from skills.parse import score_candidates
from skills.schema import render_card

pytestmark = pytest.mark.slow
ACTIONS = ["look", "open drawer 1", "go to shelf 2"]


class FakeDrawerEnv:
    """Win by choosing "open drawer 1"; the episode ends after max_steps otherwise."""

    def __init__(self, max_steps: int = 3) -> None:
        self.max_steps, self.steps, self.task = max_steps, 0, ""

    def reset(self, task: TaskSpec) -> Observation:
        self.steps, self.task = 0, task.text
        return Observation(
            "You are in a room. You see a drawer 1 and a shelf 2.", ACTIONS, task.text, task.task_type
        )

    def step(self, action: str) -> StepResult:
        self.steps += 1
        won = action == "open drawer 1"
        obs = Observation("You open the drawer 1." if won else "Nothing happens.", ACTIONS, self.task, "fake")
        return StepResult(obs, float(won), won or self.steps >= self.max_steps, won, action not in ACTIONS)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def engine():
    from actors.engine import VLLMEngine
    from cluster.core.model_store import resolve_model

    try:
        path = resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    e = VLLMEngine(path, EngineConfig(kv_cache_gib=0.5), seed=0, max_model_len=2048)
    yield e
    e.close()


def test_two_skills_two_tasks_four_episodes_and_the_library(engine, tmp_path):
    from actors.episode import EpisodeRunner, EpisodeSettings
    from actors.prompts import PromptStyle
    from cluster.core.generation import GenParams
    from cluster.core.records import EpisodeJob, SkillRef

    runner = EpisodeRunner(engine, EpisodeSettings(PromptStyle("fake"), "sequence", 2, 3, 2048))
    solver = GenParams(temperature=1.0, max_tokens=16, seed=5)
    src_task = TaskSpec("src", "fake", "open_drawer", "open the drawer", "ref-src")
    (src,) = runner.run([FakeDrawerEnv()], [EpisodeJob(src_task)], solver, ["src"])
    assert not src.failed and src.text.startswith("Task: open the drawer")

    # Extractor: N=4 candidates of one trajectory under the JSON schema; the first two valid ones are
    # the 2 candidate skills (768 tokens: above the schema's worst case even with free whitespace).
    cfg = SkillsConfig(n_candidates=4, extractor_max_tokens=768, constrained_json=True, schema="strict")
    prompt, _ = extractor_prompt(engine.tokenizer, src, cfg.extractor_max_tokens, 2048)
    (gens,) = engine.generate([prompt], extractor_gen_params(cfg, seed=11))
    assert len(gens) == 4 and all(g.logprobs == [] for g in gens)  # the learner recomputes them
    parsed = score_candidates([g.text for g in gens], cfg.max_skill_chars, schema="strict")
    skills = list({p.skill.skill_id: p.skill for p in parsed if p.ok}.values())[:2]
    assert len(skills) == 2, [(p.reason, g.finish_reason, g.text[-200:]) for p, g in zip(parsed, gens)]

    # Downstream: 2 skills x 2 tasks = 4 episodes, plus one no-skill baseline episode per task.
    down = [TaskSpec(f"d{i}", "fake", "open_drawer", f"open the drawer ({i})", f"ref-d{i}") for i in range(2)]
    jobs = [EpisodeJob(t, SkillRef(s.skill_id, render_card(s))) for s in skills for t in down]
    jobs += [EpisodeJob(t) for t in down]
    eps = runner.run([FakeDrawerEnv() for _ in jobs], jobs, solver, [f"e{i}" for i in range(len(jobs))])
    with_skill = [e for e in eps if e.skill_id]
    assert len(with_skill) == 4 and not any(e.failed for e in eps)
    for e in with_skill:
        assert "Reference Skill:" in engine.tokenizer.decode(e.traces[0].token_ids)
        assert all(t.skill_id == e.skill_id for t in e.traces)

    # Library: provenance, stats against the baseline on the same tasks, persistence.
    base = [e for e in eps if not e.skill_id]
    lib = SkillLibrary(tmp_path, GateConfig(min_trials=2, merge_similarity=1.0))
    for s in skills:
        mine = [e for e in with_skill if e.skill_id == s.skill_id]
        sid = lib.add(s, Provenance(src.task.task_id, 0, engine.version, src.task.task_type))
        lib.record_trials(sid, len(mine), sum(e.won for e in mine), len(base), sum(e.won for e in base))
    lib.save()
    again = SkillLibrary.open(tmp_path)
    assert {k: e.stats for k, e in again.entries.items()} == {k: e.stats for k, e in lib.entries.items()}
    assert all(e.stats.trials == 2 and e.stats.baseline_trials == 2 for e in again)
