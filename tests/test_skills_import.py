"""Skills in the authors' schema (written here from the field list of their src/*/prompts.py), told
apart by content, imported as zero-trial candidates; malformed ones refused with a named reason."""

from __future__ import annotations

import json

import pytest

from skills.importer import read_skills
from skills.library import SkillLibrary

ALFWORLD_SKILL = {  # the ALFWorld variant: error_handling, no when_not_to_use
    "name": "heat-and-place",
    "description": "Heat an object with the microwave and put it in a receptacle; use when the goal says hot.",
    "metadata": {"source_task_type": "pick_heat_then_place_in_recep", "success_signal": "success",
                 "abstraction_level": "medium", "skill_category": "object transformation"},
    "skill_overview": ["Find the object", "Heat it in the microwave", "Put it in the target"],
    "when_to_use": ["The task asks for a hot or heated object"],
    "inputs_to_identify": ["target object", "target receptacle"],
    "workflow": [{"step": 1, "goal": "find", "action": "search countertops", "tools_or_strategy": "look",
                  "completion_condition": "object seen"},
                 {"step": 2, "goal": "heat", "action": "heat X with microwave 1", "tools_or_strategy": "microwave",
                  "completion_condition": "object is hot"}],
    "decision_rules": ["Open closed receptacles before searching them"],
    "error_handling": [{"error": "Nothing happens", "cause": "not holding the object", "response": "take it first"}],
    "output_requirements": ["One admissible action per turn"],
}  # fmt: skip
WEB_SKILL = {  # the web variant: when_not_to_use, no error_handling
    "name": "search-then-filter",
    "description": "Search a site and narrow results with filters.",
    "metadata": {"source_task_type": "Travel/Airlines", "success_signal": "failure", "abstraction_level": "high",
                 "skill_category": "search"},
    "skill_overview": ["Type the query", "Apply filters"],
    "when_to_use": ["A search box is on the page"],
    "when_not_to_use": ["The item is already listed"],
    "inputs_to_identify": ["query", "filters"],
    "workflow": [{"step": 1, "goal": "search", "action": "TYPE the query", "tools_or_strategy": "search box",
                  "completion_condition": "results shown"}],
    "decision_rules": ["Prefer the site's own filters"],
    "output_requirements": ["One JSON action"],
}  # fmt: skip


@pytest.fixture
def files(tmp_path):
    def write(name: str, content) -> str:
        p = tmp_path / name
        p.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(p)

    return write


def test_paper_schema_files_of_every_kind_parse(files):
    minimal = {"name": "Minimal Skill", "description": "Only the two required fields.", "workflow": [],
               "decision_rules": []}  # fmt: skip
    raw = (
        "Analysis: the agent heated the egg first.\n\n```json\n"
        + json.dumps(ALFWORLD_SKILL, indent=2)
        + "\n```\n"
    )
    record = {"skill_id": "x", "status": "accepted", "skill": WEB_SKILL,
              "stats": {"trials": 40, "wins": 40, "baseline_trials": 40, "baseline_wins": 0}}  # fmt: skip
    paths = [
        files("alfworld.json", ALFWORLD_SKILL),
        files("web.skill", WEB_SKILL),  # the extension does not matter
        files("minimal.json", minimal),
        files("response.txt", raw),
        files("export.jsonl", json.dumps(record) + "\n" + json.dumps(ALFWORLD_SKILL) + "\n"),
        files("list.json", [ALFWORLD_SKILL, WEB_SKILL]),
    ]
    got = [r for p in paths for r in read_skills(p)]
    assert [r.reason for r in got] == [None] * 8
    by_name = {r.skill.name: r.skill for r in got}
    assert by_name["heat-and-place"].error_handling[0].response == "take it first"
    assert by_name["search-then-filter"].when_not_to_use == ["The item is already listed"]
    assert by_name["minimal-skill"].workflow == [] and by_name["minimal-skill"].metadata.skill_category == ""
    assert "minimal-skill" in by_name  # a name that is not kebab-case is normalised under the paper's rules
    # the strict rules (constrained decoding of small models) refuse what the paper allows
    assert read_skills(paths[2], schema="strict")[0].reason.startswith("bad_name")


@pytest.mark.parametrize(
    "content, reason",
    [
        ({"name": "x"}, "missing_field:description"),
        ({"description": "no name"}, "missing_field:name"),
        ({**ALFWORLD_SKILL, "workflow": "do it"}, "wrong_type:workflow"),
        ({**ALFWORLD_SKILL, "decision_rules": "one rule"}, "wrong_type:decision_rules"),
        ({**ALFWORLD_SKILL, "workflow": [{"step": "one", "goal": "g"}]}, "wrong_type:workflow[0].step"),
        ({**ALFWORLD_SKILL, "error_handling": ["oops"]}, "wrong_type:error_handling[0]"),
        ({**ALFWORLD_SKILL, "skill_overview": [1, 2]}, "wrong_type:skill_overview[0]"),
        ({**ALFWORLD_SKILL, "description": "x" * 5000}, "too_long:description"),
        ({"some": "object"}, "not_a_skill_record"),
        ([1, 2], "not_a_skill_record"),
        ('Here is my skill: {"name": "cut-off", "description": "trunc', "invalid_json"),
        ("I could not think of a skill.", "no_json"),
        ("[" * 5000 + "]" * 5000, "too_deep"),
        ("", "empty"),
    ],
)
def test_malformed_files_are_refused_with_a_reason(files, content, reason):
    got = read_skills(files("bad.json", content))
    assert got and all(r.skill is None and r.reason.startswith(reason) for r in got), got


def test_import_cli_starts_every_skill_as_a_zero_trial_candidate(files, tmp_path, capsys):
    from cluster.cli import main

    record = {"status": "accepted", "skill": WEB_SKILL, "stats": {"trials": 99, "wins": 99}}
    good = files("export.jsonl", json.dumps(record) + "\n")
    bad = files("bad.txt", "no skill at all")
    lib_dir = tmp_path / "lib"
    with pytest.raises(SystemExit) as e:
        main(["skills", "import", "--library", str(lib_dir), good, bad])
    assert e.value.code == 1  # one file refused
    err = capsys.readouterr().err
    assert f"refused {bad}: no_json" in err
    (entry,) = list(SkillLibrary.open(lib_dir))
    assert entry.status == "candidate" and entry.stats.trials == 0 and entry.stats.wins == 0
    with pytest.raises(SystemExit) as e:
        main(["skills", "import", "--library", str(lib_dir), files("a.json", ALFWORLD_SKILL)])
    assert e.value.code == 0 and len(SkillLibrary.open(lib_dir)) == 2
