"""Parsing the solver's output into an ALFWorld command (pure, no engine)."""

from __future__ import annotations

import pytest

from actors.actions import format_action, parse_action

ADMISSIBLE = ["go to countertop 1", "take apple 1 from countertop 1", "look"]


def test_paper_format() -> None:
    out = parse_action(
        "<reasoning>The apple is on the counter.</reasoning><action>go to countertop 1</action>"
    )
    assert out.ok and out.action == "go to countertop 1" and out.reason == ""


def test_last_action_tag_wins_and_whitespace_is_normalised() -> None:
    text = "<action>look</action> hmm, no: <action>\n  take  apple 1 from countertop 1 \n</action>"
    assert parse_action(text).action == "take apple 1 from countertop 1"


def test_admissible_spelling_is_restored() -> None:
    out = parse_action("<action>Go To CounterTop 1.</action>", ADMISSIBLE)
    assert out.action == "go to countertop 1"


def test_non_admissible_action_is_still_an_action() -> None:
    # admissibility is the engine's business ("Nothing happens."), not the parser's
    out = parse_action("<action>fly to the moon</action>", ADMISSIBLE)
    assert out.ok and out.action == "fly to the moon"


@pytest.mark.parametrize(
    "bare", ["go to countertop 1", "  go to countertop 1.\n", "Action: go to countertop 1"]
)
def test_bare_action_line(bare: str) -> None:
    assert parse_action(bare, ADMISSIBLE).action == "go to countertop 1"


def test_unclosed_action_tag_from_a_cut_generation() -> None:
    assert parse_action("<reasoning>go</reasoning><action>look\nand more").action == "look"


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty output"),
        ("   \n ", "empty output"),
        ("<reasoning>thinking</reasoning><action></action>", "empty <action> tag"),
        ("<reasoning>I should go to the counter</reasoning>", "no <action> tag"),
        ("first I look\nthen I go to countertop 1", "no <action> tag"),
        ("<action>" + "x" * 300 + "</action>", "longer than"),
    ],
)
def test_unparsable_outputs_give_a_reason(text: str, reason: str) -> None:
    out = parse_action(text, ADMISSIBLE)
    assert not out.ok and out.action is None
    assert reason in out.reason


def test_format_round_trip() -> None:
    assert parse_action(format_action("look", "nothing to do")).action == "look"
