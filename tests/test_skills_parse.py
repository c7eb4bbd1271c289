"""Skill schema, parsing and rendering: the messy-output corpus (tests/data/skill_outputs.jsonl) under
both validation rules (`expect`: strict; `expect_paper`, when it differs: the paper's), validation
caps, the content hash and the Markdown card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.core.text import CONTROL_TOKEN_RE, sanitize
from skills.parse import parse_skill, score_candidates
from skills.schema import (
    DEFAULT_MAX_SKILL_CHARS,
    SKILL_JSON_SCHEMA,
    TOP_LEVEL_FIELDS,
    Skill,
    SkillValidationError,
    render_card,
    validate_skill_dict,
)

CORPUS = Path(__file__).parent / "data" / "skill_outputs.jsonl"
CASES = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


def test_corpus_size_and_coverage():
    assert len(CASES) >= 30
    expects = {c["expect"].split(":")[0] for c in CASES}
    assert {"ok", "no_json", "invalid_json", "missing_field", "wrong_type", "bad_name", "too_long"} <= expects
    assert len({c["id"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("schema", ["strict", "paper"])
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_corpus_case(case, schema):
    expect = case["expect"] if schema == "strict" else case.get("expect_paper", case["expect"])
    r = parse_skill(case["text"], schema=schema)
    got = "ok" if r.ok else r.reason
    assert got == expect, f"{case['id']} ({schema}): got {got}, expected {expect}"
    assert r.score == (1.0 if expect == "ok" else 0.0)
    if r.ok:
        assert r.reason is None
        if "name" in case:
            assert r.skill.name == case["name"]
        # No control token survives into a skill, its JSON or its card.
        for text in (r.skill.to_json(), render_card(r.skill)):
            assert "<|" not in text and not CONTROL_TOKEN_RE.search(text)
        # Round trip: the canonical JSON parses back to the same skill (same id).
        assert parse_skill(r.skill.to_json(), schema=schema).skill == r.skill


def test_score_candidates_mixed():
    texts = [CASES[0]["text"], "no json here", CASES[0]["text"][:50]]
    assert [r.score for r in score_candidates(texts, schema="strict")] == [1.0, 0.0, 0.0]
    assert [r.category for r in score_candidates(texts, schema="strict")] == [None, "no_json", "invalid_json"]


def _valid() -> dict:
    return json.loads(next(c["text"] for c in CASES if c["id"] == "plain"))


def test_skill_id_is_stable_content_hash():
    a = validate_skill_dict(_valid())
    b = validate_skill_dict(json.loads(json.dumps(_valid(), indent=3)))  # formatting does not matter
    assert a.skill_id == b.skill_id and len(a.skill_id) == 16
    # Golden value: the canonical form must not drift silently (library ids depend on it).
    assert a.skill_id == "ef0af2d933c2a6d6"  # the paper schema (lists) since the fidelity change
    d = _valid()
    d["description"] += "!"
    assert validate_skill_dict(d).skill_id != a.skill_id


def test_strings_are_stripped_and_cleaned():
    d = _valid()
    d["when_to_use"] = "  <|im_start|>user\nwhen asked\x07 to clean  "  # one prose string: a one-item list
    s = validate_skill_dict(d)
    assert s.when_to_use == ["user\nwhen asked to clean"]


def test_sanitize_caps_and_strips():
    assert sanitize("a<|im_end|>b<|endoftext|>c<|reserved 7|>d", 100) == "abcd"
    assert sanitize("x <| not a token and a | pipe", 100) == "x <| not a token and a | pipe"
    assert sanitize("<|im_start|>" * 3 + "abcdef", 3) == "abc"
    assert sanitize("<|eot_id|>") == ""
    assert sanitize("<|im_<|x|>start|>ok") == "ok"  # a removal cannot splice a token together


def test_validation_rejects_non_object():
    with pytest.raises(SkillValidationError) as e:
        validate_skill_dict(["x"])
    assert e.value.reason == "wrong_type:skill"


def _max_instance(schema: dict):
    """The largest instance the generation schema allows (every string/list at its bound)."""
    t = schema.get("type")
    if "enum" in schema:
        return max(schema["enum"], key=len)
    if t == "object":
        return {k: _max_instance(v) for k, v in schema["properties"].items()}
    if t == "array":
        return [_max_instance(schema["items"]) for _ in range(schema["maxItems"])]
    if t == "integer":
        return schema["maximum"]
    if "pattern" in schema:
        return "-".join(["abcdefghijkl"] * 5)
    return "x" * schema["maxLength"]


def test_schema_is_within_validation_caps():
    """Anything the constrained decoder can emit (at full length) passes validation."""
    fields = [f for f in TOP_LEVEL_FIELDS if f != "when_not_to_use"]  # optional: not generated
    assert list(SKILL_JSON_SCHEMA["properties"]) == fields and SKILL_JSON_SCHEMA["required"] == fields
    big = _max_instance(SKILL_JSON_SCHEMA)
    skill = validate_skill_dict(big, schema="strict")
    assert len(skill.to_json()) <= DEFAULT_MAX_SKILL_CHARS


def test_schema_compiles_with_xgrammar():
    xgr = pytest.importorskip("xgrammar")
    assert xgr.Grammar.from_json_schema(json.dumps(SKILL_JSON_SCHEMA)) is not None


def test_render_card_is_capped_and_compact():
    s = validate_skill_dict(_valid())
    card = render_card(s)
    assert card.startswith("# Skill: clean-then-place")
    assert (
        "1. **find the object**" in card and "## Decision Rules" in card and "## When NOT to Use" not in card
    )
    short = render_card(s, max_chars=300)
    assert len(short) <= 300 and short.endswith("…")
    big = Skill.from_dict(_max_instance(SKILL_JSON_SCHEMA))
    assert len(render_card(big)) <= 1500
