"""Group normalisation and the Evolving-RL / GRPO reward assignment on the trainer's grouping."""

import math

import numpy as np
import pytest

from cluster.core.records import EpisodeResult, TaskSpec, Trace
from cluster.rewards import evolving_advantages, group_normalise, grpo_advantages, step_advantages
from skills.candidates import Extraction, SourceGroup
from skills.schema import Skill


def test_group_normalise_population_std_by_default():
    adv = group_normalise([1, 0, 1, 0, 3], ["a", "a", "a", "a", "b"])
    assert adv[:4] == pytest.approx([1.0, -1.0, 1.0, -1.0], rel=1e-5)  # population std of [1,0,1,0] is 0.5
    assert adv[4] == 0.0  # singleton group
    s = math.sqrt(1 / 3)  # sample std (ddof 1)
    assert group_normalise([1, 0, 1, 0], ["a"] * 4, ddof=1)[:2] == pytest.approx(
        [0.5 / s, -0.5 / s], rel=1e-5
    )


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


def _trace(sid, role, turns=1):
    ids = list(range(1, 2 + 2 * turns))
    return Trace(sid, 0, "t", "pick", role, ids, [(1 + 2 * i, 2 + 2 * i) for i in range(turns)], [], 0)


def _ep(eid, task, won, failed=False, turns=2):
    return EpisodeResult(eid, _task(task), won, float(won), turns, traces=[_trace(eid, "solver", turns)],
                         failed=failed, step_rewards=[0.0] * (turns - 1) + [float(won)])  # fmt: skip


def _ext(xid, src, parsed, downstream):
    skill = Skill(name=f"s-{xid}", description="d") if parsed else None
    return Extraction(xid, src, _trace(xid, "extractor"), "text", skill, None if parsed else "no_json",
                      downstream=downstream)  # fmt: skip


def test_evolving_advantages_on_the_grouping():
    s1, s2 = _ep("s1", "src1", False), _ep("s2", "src2", True)
    g1 = SourceGroup(s1, [
        _ext("x1", s1, True, [_ep("d1", "tA", True), _ep("d2", "tB", True)]),  # reward 1.0
        _ext("x2", s1, True, [_ep("d3", "tA", False), _ep("d4", "tB", True)]),  # 0.5
        _ext("x3", s1, False, [_ep("d5", "tA", False), _ep("d6", "tB", False)]),  # malformed: 0 (played raw)
    ])  # fmt: skip
    g2 = SourceGroup(s2, [
        _ext("x4", s2, True, [_ep("d7", "tC", False)]),
        _ext("x5", s2, True, [_ep("d8", "tC", False), _ep("d9", "tC", True, failed=True)]),  # crashed: skipped
    ])  # fmt: skip
    traces, stats = evolving_advantages([g1, g2])
    got = {t.sample_id: t for t in traces}
    assert [got[x].reward for x in ("x1", "x2", "x3")] == [1.0, 0.5, 0.0]
    expected = group_normalise([1.0, 0.5, 0.0], [0] * 3)
    assert [got[x].advantages[0] for x in ("x1", "x2", "x3")] == pytest.approx(expected.tolist())
    assert got["x4"].advantages == [0.0] and got["x5"].advantages == [0.0]  # both 0: no signal
    # downstream: per downstream task within a source group, every span of an episode the same
    exp_a = group_normalise([1.0, 0.0, 0.0], [0] * 3)
    assert [got[d].advantages for d in ("d1", "d3", "d5")] == [[pytest.approx(a)] * 2 for a in exp_a]
    assert got["d1"].group_id == "d:0:tA" and got["x1"].group_id == "x:s1"
    assert got["d2"].advantages[0] == pytest.approx(group_normalise([1, 1, 0], [0] * 3)[0])
    assert "d9" not in got and stats.skipped_failed == 1
    assert stats.unparsed_extractions == 1 and stats.samples == 5 + 8
    assert "s1" not in got  # source episodes are not trained on
    assert stats.zero_variance_groups == 2  # g2's extractions, tC


def test_evolving_per_step_rewards():
    src = _ep("s", "src", False)
    d1 = EpisodeResult(
        "d1", _task("tA"), False, 2.0, 3, traces=[_trace("d1", "solver", 3)], step_rewards=[1.0, 1.0, 0.0]
    )
    d2 = EpisodeResult(
        "d2", _task("tB"), False, 0.0, 1, traces=[_trace("d2", "solver", 1)], step_rewards=[0.0]
    )
    g = SourceGroup(src, [_ext("x1", src, True, [d1]), _ext("x2", src, True, [d2])])
    traces, _ = evolving_advantages([g], per_step=True)
    got = {t.sample_id: t for t in traces}
    assert got["x1"].reward == 2.0 and got["x2"].reward == 0.0  # mean number of right steps
    a = got["d1"].advantages
    assert a[0] > 0 > got["d2"].advantages[0] and a[1] == a[0] and a[2] == -1.0  # step 1: alone, right


def test_per_step_advantages_in_the_window_context():
    """One trace per turn (window context): trace k carries step k's advantage."""
    turns = [Trace("d", k, "t", "pick", "solver", [1, 2, 3], [(2, 3)], [], 0) for k in range(2)]
    d = EpisodeResult("d", _task("tA"), False, 1.0, 2, traces=turns, step_rewards=[1.0, 0.0])
    adv = step_advantages([d, EpisodeResult("e", _task("tB"), False, 0.0, 1, traces=[], step_rewards=[0.0])])
    from cluster.rewards import stamp

    stamp(d.traces, d.reward, adv[0], "g")
    assert d.traces[0].advantages == [adv[0][0]] and d.traces[1].advantages == [adv[0][1]] == [-1.0]


def test_grpo_advantages_per_task_group():
    eps = [_ep(f"g{i}", "t1" if i < 4 else "t2", w) for i, w in enumerate([1, 0, 0, 0, 1, 1])]
    traces, stats = grpo_advantages([eps[:4], eps[4:]])
    adv = {t.sample_id: t.advantages[0] for t in traces}
    ref = group_normalise([1, 0, 0, 0], [0] * 4)
    assert [adv[f"g{i}"] for i in range(4)] == pytest.approx(ref.tolist(), abs=1e-6)
    assert adv["g4"] == adv["g5"] == 0.0
    assert np.isclose(sum(adv[f"g{i}"] for i in range(4)), 0.0, atol=1e-6)
    assert stats.groups == 2 and stats.zero_variance_groups == 1


def test_progress_returns_are_a_signal_where_successes_are_not():
    task = TaskSpec("t", "mind2web", "Travel/Airlines", "book a flight", "f#a")
    partial = EpisodeResult("e", task, False, 0.4, 3, traces=[_trace("e", "solver")])
    won = EpisodeResult("w", task, True, 1.0, 5, traces=[_trace("w", "solver")])
    zero = EpisodeResult("z", task, False, 0.0, 1, traces=[_trace("z", "solver")])
    _, stats = grpo_advantages([[partial, won, zero]])
    assert stats.zero_variance_groups == 0
