"""Mind2Web metrics on hand-computed cases."""

import pytest

from envs.mind2web.metrics import EpisodeScore, StepScore, aggregate, aggregate_by, op_string, token_f1


def test_op_string_drops_click_value():
    assert op_string("CLICK", "ignored") == "CLICK"
    assert op_string("TYPE", "New York") == "TYPE New York"
    assert op_string("select", "2 adults") == "SELECT 2 adults"


@pytest.mark.parametrize(
    "pred,gold,f1",
    [
        ("TYPE new  york", "TYPE New York", 1.0),  # lower-cased, whitespace-insensitive
        ("TYPE boston", "TYPE New York", 0.4),  # tp=1, P=1/2, R=1/3 -> 2*(1/6)/(5/6)
        ("CLICK", "CLICK", 1.0),
        ("", "", 1.0),
        ("", "CLICK", 0.0),
        ("SELECT 2", "TYPE 3", 0.0),
        ("TYPE a a b", "TYPE a b", 1.0),  # token sets, as MindAct's calculate_f1
        ("SELECT 2 adults", "SELECT 3 adults", 2 / 3),  # P=R=2/3
    ],
)
def test_token_f1(pred, gold, f1):
    assert token_f1(pred, gold) == pytest.approx(f1)


def _episodes():
    a = EpisodeScore(
        "A", 3, [StepScore(0, True, 1.0), StepScore(1, True, 0.4), StepScore(2, False, 1.0)], "w1", "Travel"
    )
    b = EpisodeScore("B", 1, [StepScore(0, True, 1.0)], "w1", "Travel")
    c = EpisodeScore("C", 4, [StepScore(0, True, 1.0), StepScore(1, False, 0.0)], "w2", "Shopping")  # stopped
    return [a, b, c]


def test_aggregate_hand_computed():
    m = aggregate(_episodes())
    assert (m["tasks"], m["gold_steps"], m["scored_steps"]) == (3, 8, 6)
    assert m["element_acc"] == pytest.approx(4 / 6)
    assert m["op_f1"] == pytest.approx(4.4 / 6)
    assert m["step_sr"] == pytest.approx(3 / 6)
    assert m["macro_element_acc"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert m["macro_op_f1"] == pytest.approx((2.4 / 3 + 1 + 0.5) / 3)
    assert m["macro_step_sr"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    assert m["task_sr"] == pytest.approx(1 / 3)  # only B did every step right
    assert m["action_acc"] == pytest.approx(3 / 8)  # leading right steps 1 + 1 + 1 over 8 gold steps


def test_step_success_needs_element_and_full_f1():
    assert StepScore(0, True, 1.0).success
    assert not StepScore(0, True, 0.99).success
    assert not StepScore(0, False, 1.0).success


def test_unscored_steps_fail_the_task():
    e = EpisodeScore("T", 3, [StepScore(0, True, 1.0), StepScore(1, True, 1.0)])  # cut after 2 of 3
    assert not e.success and e.prefix == 2
    assert aggregate([e])["task_sr"] == 0.0 and aggregate([e])["step_sr"] == 1.0


def test_aggregate_by_domain_and_empty():
    by = aggregate_by(_episodes(), "domain")
    assert set(by) == {"Travel", "Shopping"}
    assert by["Travel"]["task_sr"] == pytest.approx(0.5)
    assert by["Shopping"]["element_acc"] == pytest.approx(0.5)
    empty = aggregate([])
    assert empty["tasks"] == 0 and empty["step_sr"] == 0.0
