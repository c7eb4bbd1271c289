"""Group normalisation and the Evolving-RL / GRPO reward assignment."""

import math

import numpy as np
import pytest

from cluster.records import EpisodeResult, TaskSpec, Turn
from learner.advantages import assign_evolving, assign_grpo, group_normalise


def test_group_normalise_hand_computed():
    adv = group_normalise([1, 0, 1, 0, 3], ["a", "a", "a", "a", "b"])
    s = math.sqrt(1 / 3)  # unbiased std of [1, 0, 1, 0]
    assert adv[:4] == pytest.approx([0.5 / s, -0.5 / s, 0.5 / s, -0.5 / s], rel=1e-5)
    assert adv[4] == 0.0  # singleton group


def test_zero_variance_groups_contribute_nothing():
    adv = group_normalise([1, 1, 1, 0, 0, 0.2, 0.8], [0, 0, 0, 1, 1, 2, 2])
    assert adv[:5].tolist() == [0.0] * 5
    assert adv[5] < 0 < adv[6]


def test_group_normalise_bad_input():
    with pytest.raises(ValueError, match="2 rewards but 3"):
        group_normalise([1, 2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="not finite"):
        group_normalise([1, float("nan")], ["a", "a"])


def _task(tid):
    return TaskSpec(task_id=tid, env="alfworld", task_type="pick", text=f"do {tid}", ref=tid)


def _turn(eid, role, n_turns=1):
    return [Turn(eid, i, "t", "pick", role, [1, 2], [3], [-0.1], policy_version=0) for i in range(n_turns)]


def _ext(eid, src, skill):
    return EpisodeResult(
        eid,
        _task(src),
        "extractor",
        won=False,
        reward=0.0,
        steps=1,
        turns=_turn(eid, "extractor"),
        skill_id=skill,
        info={"source_episode_id": src},
    )


def _down(eid, task, skill, won, failed=False):
    return EpisodeResult(
        eid,
        _task(task),
        "solver",
        won=won,
        reward=float(won),
        steps=3,
        turns=_turn(eid, "solver", 2),
        skill_id=skill,
        failed=failed,
    )


def test_assign_evolving():
    ext = [
        _ext("e1", "s1", "k1"),
        _ext("e2", "s1", "k2"),
        _ext("e3", "s1", ""),  # e3 failed to parse
        _ext("e4", "s2", "k4"),
        _ext("e5", "s2", "k5"),
    ]
    down = [
        _down("d1", "tA", "k1", True),
        _down("d2", "tB", "k1", True),  # k1: 1.0
        _down("d3", "tA", "k2", False),
        _down("d4", "tB", "k2", True),  # k2: 0.5
        _down("d5", "tC", "k4", False),
        _down("d6", "tC", "k5", False),  # k4, k5: 0 -> zero variance
        _down("d7", "tC", "k5", True, failed=True),  # crashed: skipped
    ]
    turns, stats = assign_evolving(ext, down)
    by_ep = {}
    for t in turns:
        by_ep.setdefault(t.episode_id, set()).add((t.reward, round(t.advantage, 5), t.group_id))
    assert all(len(v) == 1 for v in by_ep.values())  # every turn of an episode carries the same values
    got = {k: next(iter(v)) for k, v in by_ep.items()}
    expected_s1 = group_normalise([1.0, 0.5, 0.0], ["s1"] * 3)  # [1, 0, -1]
    assert [got[e][1] for e in ("e1", "e2", "e3")] == pytest.approx(expected_s1.round(5).tolist())
    assert got["e1"][0] == 1.0 and got["e2"][0] == 0.5 and got["e3"][0] == 0.0
    assert got["e4"][1] == 0.0 and got["e5"][1] == 0.0
    # downstream: per task across skills
    exp_a = group_normalise([1.0, 0.0], ["tA", "tA"])
    assert got["d1"][1] == pytest.approx(exp_a[0], abs=1e-5) and got["d3"][1] == pytest.approx(
        exp_a[1], abs=1e-5
    )
    assert got["d2"][1] == 0.0 and got["d4"][1] == 0.0  # tB: both won
    assert got["d1"][2] == "tA" and got["e1"][2] == "s1"
    assert "d7" not in got and stats.skipped_failed == 1
    assert stats.unparsed_extractions == 1 and stats.samples == 11
    assert len([t for t in turns if t.role == "solver"]) == 12  # 6 episodes x 2 turns
    assert stats.zero_variance_groups == 3  # s2, tB, tC


def test_assign_evolving_needs_a_source_group():
    e = _ext("e1", "s1", "k1")
    e.info = {}
    with pytest.raises(ValueError, match="e1: no source trajectory"):
        assign_evolving([e], [])


def test_assign_grpo_uses_same_normaliser():
    eps = [_down(f"g{i}", "t1" if i < 4 else "t2", "", w) for i, w in enumerate([1, 0, 0, 0, 1, 1])]
    turns, stats = assign_grpo(eps)
    adv = {t.episode_id: t.advantage for t in turns}
    ref = group_normalise([1, 0, 0, 0, 1, 1], ["t1"] * 4 + ["t2"] * 2)
    assert [adv[f"g{i}"] for i in range(6)] == pytest.approx(ref.tolist(), abs=1e-6)
    assert adv["g4"] == adv["g5"] == 0.0
    assert np.isclose(sum(adv[f"g{i}"] for i in range(4)), 0.0, atol=1e-6)
    assert stats.groups == 2 and stats.zero_variance_groups == 1


def test_episode_reward_is_success_unless_progress_is_configured():
    """The trainer overwrites an episode's env return with the paper's success reward, except under
    env.reward=progress (Mind2Web), where the return (fraction of steps right) is the reward."""
    from cluster.config import load_config
    from cluster.trainer import episode_reward

    task = TaskSpec("t", "mind2web", "Travel/Airlines", "book a flight", "f#a")
    partial = EpisodeResult("e", task, "solver", False, 0.4, 3)
    won = EpisodeResult("w", task, "solver", True, 1.0, 5)
    success = load_config("configs/quickstart_mind2web.yaml")
    progress = load_config("configs/quickstart_mind2web.yaml", ["env.reward=progress"])
    assert [episode_reward(success, e) for e in (partial, won)] == [0.0, 1.0]
    assert [episode_reward(progress, e) for e in (partial, won)] == [0.4, 1.0]
    turns, stats = assign_grpo([partial, won, EpisodeResult("z", task, "solver", False, 0.0, 1)])
    assert stats.zero_variance_groups == 0  # partial returns are a signal where successes are not
