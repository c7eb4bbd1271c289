"""The teacher's skills (SFT targets for the extractor role) must be producible under the generation schema."""

import jsonschema
import pytest

from skills.schema import SKILL_JSON_SCHEMA, validate_skill_dict
from skills.teacher import phases, planner_skill

CLEAN = ["go to countertop 2", "take cup 1 from countertop 2", "go to sinkbasin 1", "clean cup 1 with sinkbasin 1",
         "go to fridge 1", "open fridge 1", "move cup 1 to fridge 1"]  # fmt: skip
TWO = ["go to toilet 1", "take soapbar 2 from toilet 1", "go to sinkbasin 1", "move soapbar 2 to sinkbasin 1",
       "go to countertop 1", "take soapbar 1 from countertop 1", "go to sinkbasin 1", "move soapbar 1 to sinkbasin 1"]  # fmt: skip


def test_phases_cut_at_key_verbs_and_cap_at_three():
    assert [p[-1] for p in phases(CLEAN)] == ["take cup 1 from countertop 2", "clean cup 1 with sinkbasin 1",
                                              "move cup 1 to fridge 1"]  # fmt: skip
    assert len(phases(TWO)) == 3 and phases(TWO)[-1][-1] == "move soapbar 1 to sinkbasin 1"
    assert phases(["go to desk 1", "look"]) == [["go to desk 1", "look"]]


@pytest.mark.parametrize(
    ("task_type", "text", "actions"),
    [
        ("pick_clean_then_place_in_recep", "put a clean cup in fridge.", CLEAN),
        ("pick_two_obj_and_place", "put two soapbar in sinkbasin.", TWO),
        (
            "look_at_obj_in_light",
            "examine the book with the desklamp.",
            ["go to desk 1", "take book 1 from desk 1", "use desklamp 1"],
        ),  # fmt: skip
        ("x" * 300, "y" * 500, ["z" * 300]),  # absurd lengths are cut to the bounds
    ],
)
def test_teacher_skill_fits_the_generation_schema(task_type, text, actions):
    skill = planner_skill(task_type, text, actions)
    data = skill.to_dict()
    jsonschema.validate(data, SKILL_JSON_SCHEMA)  # constrained decoding can emit exactly this
    assert validate_skill_dict(data) == skill
    assert not any(
        ch.isdigit() for ch in " ".join(s.action for s in skill.workflow)
    )  # instance numbers dropped


def test_clean_skill_names_the_transformation_in_order():
    skill = planner_skill("pick_clean_then_place_in_recep", "put a clean cup in fridge.", CLEAN)
    assert skill.name == "clean-cup-to-fridge"
    assert [s.action for s in skill.workflow] == ["take cup from countertop", "clean cup with sinkbasin",
                                                  "move cup to fridge"]  # fmt: skip
    assert "open it" in skill.workflow[2].tools_or_strategy


def test_no_actions_is_an_error():
    with pytest.raises(ValueError, match="no actions"):
        planner_skill("t", "task", [" "])
