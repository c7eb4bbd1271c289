"""The three evaluation protocols against fakes (the real episode loop, a scripted engine): what is
played, what is paired, what is cached, what is reported."""

from __future__ import annotations

import pytest

from actors.episode import EpisodeSettings  # noqa: E402
from cluster.core.config import load_config
from cluster.core.records import TaskSpec  # noqa: E402
from cluster.evaluation import Evaluator, mcnemar_p
from skills.library import GateConfig, Provenance, SkillLibrary
from skills.retrieval import Embedder, TaskIndex, skill_key
from skills.schema import validate_skill_dict  # noqa: E402
from tests.test_trainer_step import GOOD_SKILL, TASKS, FakeEngine, FakePool, tokenizer  # noqa: F401

EVAL = [TaskSpec(f"v{i}", "alfworld", "toy" if i < 3 else "heldout", f"win the toy game number {i % 2}", f"r{i}", "eval")
        for i in range(4)]  # fmt: skip


@pytest.fixture
def evaluator(tokenizer, monkeypatch):  # noqa: F811
    monkeypatch.setattr("cluster.evaluation.sample_eval_tasks", lambda cfg, split: list(EVAL))
    cfg = load_config(None, ["env.max_steps=3", "env.eval_splits=[valid]", "skills.n_candidates=8"])
    pool = FakePool(FakeEngine(tokenizer), EpisodeSettings.from_config(cfg))
    index = TaskIndex(TASKS, Embedder("bm25"))
    return Evaluator(cfg, pool, tokenizer, {"toy"}, index), pool


def test_online_protocol_plays_extracts_and_pairs(evaluator):
    ev, pool = evaluator
    stats = ev.run("online")
    sources, with_and_without = pool.played
    # each eval task retrieves one training task; the two retrieved (game 0 and game 1) are played once each
    assert len(sources) == 2 and all(j.skill is None for j in sources)
    assert {j.task.split for j in sources} == {"train"}
    assert len(with_and_without) == 8  # 4 eval tasks, each with and without its skill
    assert [j.skill is None for j in with_and_without] == [True] * 4 + [False] * 4
    # the fake engine's greedy extraction is the GOOD skill: with it every eval task is won, without none
    assert stats["eval/valid/with_skill/success"] == 1.0 and stats["eval/valid/no_skill/success"] == 0.0
    assert (
        stats["eval/valid/with_skill/trained_success"] == 1.0
        and stats["eval/valid/with_skill/heldout_success"] == 1.0
    )
    assert stats["eval/valid/paired/with_skill_only"] == 4 and stats[
        "eval/valid/paired/mcnemar_p"
    ] == pytest.approx(0.125)
    assert stats["eval/valid/skills_parsed"] == 1.0 and stats["eval/valid/sources"] == 2


def test_none_protocol_plays_each_task_once_with_no_skill(evaluator):
    ev, pool = evaluator
    stats = ev.run("none")
    (jobs,) = pool.played
    assert len(jobs) == 4 and all(j.skill is None for j in jobs)
    assert "eval/valid/with_skill/success" not in stats and stats["eval/valid/no_skill/episodes"] == 4


@pytest.mark.parametrize("statuses", [("accepted",), ("accepted", "candidate")])
def test_library_protocol_serves_candidates_only_when_asked(evaluator, statuses, tmp_path):
    """A short run's skills are still candidates, so eval can be asked for them (`--skill-status`)."""
    from cluster.commands import skill_statuses

    ev, pool = evaluator
    emb = Embedder("bm25")
    lib = SkillLibrary(tmp_path, GateConfig(merge_similarity=0.999))
    good = validate_skill_dict(GOOD_SKILL)
    sid = lib.add(good, Provenance("t", 0, 0), emb.embed([skill_key(good)])[0].tolist())
    lib.record_trials(sid, 2, 1, 2, 0)  # too few trials for the gate: stays a candidate
    assert [e.status for e in lib.entries.values()] == ["candidate"]
    assert skill_statuses(",".join(statuses)) == statuses
    ev.library, ev.embedder, ev.statuses = lib, emb, statuses
    stats = ev.run("library")
    (jobs,) = pool.played
    if statuses == ("accepted",):
        assert stats["eval/valid/skills_available"] == 0 and len(jobs) == 4
        assert stats["eval/valid/with_skill/success"] == stats["eval/valid/no_skill/success"]
    else:
        assert stats["eval/valid/skills_available"] == 1 and len(jobs) == 8
        assert all("win-fast" in j.skill.text for j in jobs[4:])
        assert stats["eval/valid/with_skill/success"] == 1.0
    with pytest.raises(Exception, match="accepted and/or candidate"):
        skill_statuses("retired")


def test_mcnemar_exact():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(10, 2) == pytest.approx(0.0386, abs=1e-4)


def test_teacher_protocol_summarises_the_retrieved_tasks_planner_solution(evaluator, tmp_path):
    import json
    from dataclasses import replace

    ev, pool = evaluator
    games = []
    for t in TASKS:
        path = tmp_path / f"{t.task_id}.tw-pddl"
        path.write_text(json.dumps({"walkthrough": ["go to shelf 1", "take toy 1 from shelf 1", "win"]}))
        games.append(replace(t, env="alfworld", ref=str(path)))
    ev.source_index = TaskIndex(games, Embedder("bm25"))
    stats = ev.run("teacher")
    (jobs,) = pool.played  # no source episode, no extraction: the skill is written by rule
    cards = [j.skill.text for j in jobs if j.skill is not None]
    assert len(cards) == 4 and all("take toy from shelf" in c for c in cards)
    assert stats["eval/valid/skills_parsed"] == 1.0 and "eval/valid/with_skill/success" in stats


def test_mind2web_episodes_report_mind2web_metrics(evaluator):
    """Episodes that carry Mind2Web step scores add element accuracy, operation F1, step/task success."""
    from cluster.core.records import EpisodeResult
    from envs.mind2web.metrics import EpisodeScore, StepScore

    ev, _ = evaluator
    right = EpisodeScore("a", 2, [StepScore(0, True, 1.0), StepScore(1, True, 1.0)])
    half = EpisodeScore("b", 2, [StepScore(0, True, 1.0), StepScore(1, False, 0.5)])
    eps = [
        EpisodeResult(s.annotation_id, EVAL[0], s.success, 0.0, 2, info={"episode_score": s})
        for s in (right, half)
    ]
    stats = ev.arm_stats("eval/test_task/no_skill", eps)
    assert (
        stats["eval/test_task/no_skill/element_acc"] == 0.75
        and stats["eval/test_task/no_skill/op_f1"] == 0.875
    )
    assert (
        stats["eval/test_task/no_skill/step_sr"] == 0.75 and stats["eval/test_task/no_skill/task_sr"] == 0.5
    )
    assert stats["eval/test_task/no_skill/macro_step_sr"] == 0.75
