"""End to end with the real vLLM engine and the real episode loop: a source episode, two extractor
candidates decoded under the skill JSON schema, 2 skills x 2 downstream tasks = 4 episodes (plus the
no-skill baseline), 2 aggregates, and the library's gate and persistence on top.

The environment is a scripted FakeDrawerEnv: this test is about the skill pipeline, not ALFWorld.
"""

from __future__ import annotations

import pytest

from cluster.config import EngineConfig, EnvConfig, SkillsConfig
from cluster.records import TaskSpec
from envs.base import Observation, StepResult
from skills.extractor import extractor_gen_params, extractor_messages, format_scores
from skills.library import GateConfig, Provenance, SkillLibrary
from skills.schema import render_card
from skills.stats import aggregate

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
    from cluster.model_store import resolve_model

    try:
        path = resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return VLLMEngine(path, EngineConfig(kv_cache_gib=0.5), seed=0, max_model_len=2048)


def test_two_skills_two_tasks_four_episodes_two_aggregates(engine, tmp_path):
    from actors.engine import GenParams
    from actors.episode import run_episodes
    from actors.prompts import encode_messages

    env_cfg = EnvConfig(max_steps=3, history_window=2, constrained_actions=True)
    solver = GenParams(temperature=1.0, max_tokens=16, seed=5)
    src_task = TaskSpec("src", "fake", "open_drawer", "open the drawer", "ref-src")
    (src,) = run_episodes(engine, [FakeDrawerEnv()], [src_task], [None], solver, env_cfg, policy_version=0)
    assert not src.failed and src.text.startswith("Task: open the drawer")

    # Extractor: N=4 candidates of one trajectory under the JSON schema; the first two valid ones are
    # the 2 candidate skills (768 tokens: above the schema's worst case even with free whitespace).
    cfg = SkillsConfig(n_candidates=4, extractor_max_tokens=768, constrained_json=True)
    prompt = encode_messages(engine.tokenizer, extractor_messages(src, max_chars=2000))
    (gens,) = engine.generate([prompt], extractor_gen_params(cfg, seed=11))
    assert len(gens) == 4 and all(len(g.token_ids) == len(g.logprobs) for g in gens)
    parsed = format_scores([g.text for g in gens], cfg.max_skill_chars)
    skills = list({p.skill.skill_id: p.skill for p in parsed if p.ok}.values())[:2]
    assert len(skills) == 2, [(p.reason, g.finish_reason, g.text[-200:]) for p, g in zip(parsed, gens)]

    # Downstream: 2 skills x 2 tasks = 4 episodes, plus one no-skill baseline episode per task.
    down = [TaskSpec(f"d{i}", "fake", "open_drawer", f"open the drawer ({i})", f"ref-d{i}") for i in range(2)]
    tasks = [t for _ in skills for t in down] + down
    cards = [render_card(s) for s in skills for _ in down] + [None, None]
    sids = [s.skill_id for s in skills for _ in down] + ["", ""]
    eids = [f"{sid or 'base'}/{t.task_id}" for sid, t in zip(sids, tasks)]
    eps = run_episodes(
        engine, [FakeDrawerEnv() for _ in tasks], tasks, cards, solver, env_cfg, 0,
        episode_ids=eids, skill_ids=sids,
    )  # fmt: skip
    with_skill = [e for e in eps if e.skill_id]
    assert len(with_skill) == 4 and not any(e.failed for e in eps)
    for e in with_skill:
        assert "Reference Skill" in engine.tokenizer.decode(e.turns[0].prompt_ids)
        assert all(t.skill_id == e.skill_id for t in e.turns)

    stats = aggregate([s.skill_id for s in skills], eps)
    assert set(stats) == {s.skill_id for s in skills}
    for s in skills:
        st = stats[s.skill_id]
        mine = [e for e in with_skill if e.skill_id == s.skill_id]
        assert st.trials == 2 and st.wins == sum(e.won for e in mine)
        assert st.baseline_trials == 2 and st.baseline_wins == sum(e.won for e in eps if not e.skill_id)

    # Library: provenance, stats, persistence.
    lib = SkillLibrary(tmp_path, GateConfig(min_trials=2, merge_similarity=1.0))
    for s in skills:
        sid = lib.add(s, Provenance(src.task.task_id, 0, engine.version, src.task.task_type))
        st = stats[s.skill_id]
        lib.record_trials(sid, st.trials, st.wins, st.baseline_trials, st.baseline_wins)
    lib.save()
    again = SkillLibrary.open(tmp_path)
    assert {k: e.stats for k, e in again.entries.items()} == {s.skill_id: stats[s.skill_id] for s in skills}
