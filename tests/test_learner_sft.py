"""Demonstrations -> solver Turns with the rollout prompt builder (tokenizer only, no model)."""

import pytest

from actors.prompts import SolverView, encode_messages, solver_messages
from cluster.config import load_config
from learner.sft import batches, demo_turns

DEMO = {
    "task_id": "t1",
    "task_type": "pick_and_place_simple",
    "task_text": "put a apple in fridge.",
    "steps": [
        {
            "observation": "You are in a kitchen.",
            "admissible_actions": ["go to fridge 1", "look"],
            "action": "go to fridge 1",
        },
        {
            "observation": "The fridge 1 is closed.",
            "admissible_actions": ["open fridge 1", "look"],
            "action": "open fridge 1",
        },
    ],
}


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from cluster.model_store import resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model("embedded"))
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_demo_turns_match_the_solver_prompt(tok):
    cfg = load_config(None)
    turns, skipped = demo_turns([DEMO], tok, cfg)
    assert skipped == 0 and [t.turn for t in turns] == [0, 1]
    view = SolverView(DEMO["task_text"], "The fridge 1 is closed.", ["open fridge 1", "look"],
                      [("go to fridge 1", "The fridge 1 is closed.")], None)  # fmt: skip
    expected = encode_messages(
        tok, solver_messages(view, "alfworld", True, cfg.env.max_observation_chars, tok)
    )
    assert turns[1].prompt_ids == expected
    assert tok.decode(turns[1].response_ids) == "open fridge 1<|im_end|>"
    assert all(t.role == "solver" and t.loss_mask.count(1) == len(t.response_ids) for t in turns)


def test_demo_turns_free_format_and_length_skip(tok):
    cfg = load_config(None, ["env.constrained_actions=false", "model.max_model_len=128", "trainer.mode=grpo"])
    turns, skipped = demo_turns([DEMO], tok, cfg)
    assert skipped == 2 and not turns  # prompts are longer than 128 tokens
    cfg = load_config(None, ["env.constrained_actions=false"])
    turns, _ = demo_turns([DEMO], tok, cfg)
    assert tok.decode(turns[0].response_ids) == "<action>go to fridge 1</action><|im_end|>"


def test_demo_empty_action_is_named():
    bad = {**DEMO, "steps": [{**DEMO["steps"][0], "action": " "}]}
    with pytest.raises(ValueError, match=r"record 0 \(task t1\), steps\[0\]: empty action"):
        demo_turns([bad], _Tok(), load_config(None))


class _Tok:
    """FakeTokenizer: enough of the interface for the validation path."""

    unk_token_id = 0
    eos_token_id = 2
    all_special_tokens: list = []

    def convert_tokens_to_ids(self, t):
        return 2

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(m["content"] for m in messages)

    def encode(self, text, add_special_tokens=False):
        return [ord(c) % 50 for c in text]


def test_batches_cover_each_epoch():
    got = list(batches(list(range(5)), 2, 2, seed=0))
    assert [e for e, _ in got] == [0, 0, 0, 1, 1, 1]
    assert sorted(x for e, b in got if e == 0 for x in b) == list(range(5))


DEMO_B = {
    "task_id": "t2",
    "task_type": "pick_and_place_simple",
    "task_text": "put a mug in cabinet.",
    "steps": [
        {"observation": "You see a table 1.", "admissible_actions": ["go to table 1"], "action": "go to table 1"},
        {"observation": "On the table 1 you see a mug 2.", "admissible_actions": ["take mug 2 from table 1"],
         "action": "take mug 2 from table 1"},
        {"observation": "You pick up the mug 2.", "admissible_actions": ["go to cabinet 1"], "action": "go to cabinet 1"},
        {"observation": "The cabinet 1 is open.", "admissible_actions": ["move mug 2 to cabinet 1"],
         "action": "move mug 2 to cabinet 1"},
    ],
}  # fmt: skip


def test_both_roles_add_extractor_turns_and_skill_cards(tok):
    from skills.parse import parse_skill
    from skills.teacher import planner_skill

    cfg = load_config(None)
    turns, skipped = demo_turns([DEMO, DEMO_B], tok, cfg, skill_cards=1.0, extractor=True)
    ex = [t for t in turns if t.role == "extractor"]
    solver = [t for t in turns if t.role == "solver"]
    assert skipped == 0 and len(ex) == 2 and len(solver) == 6
    # the extractor target is the teacher skill's canonical JSON, parseable by the trainer's parser
    target = planner_skill(DEMO_B["task_type"], DEMO_B["task_text"], [s["action"] for s in DEMO_B["steps"]])
    text = tok.decode(ex[1].response_ids, skip_special_tokens=True)
    assert text == target.to_json() and parse_skill(text).skill == target
    assert "## Trajectory" in tok.decode(ex[1].prompt_ids) and "> take mug 2 from table 1" in tok.decode(
        ex[1].prompt_ids
    )
    # every solver demo is shown with the card of the *other* demo of its type, as downstream episodes are
    demo_a_prompt = tok.decode(next(t for t in solver if t.task_id == "t1").prompt_ids)
    assert "## Reference Skill" in demo_a_prompt and f"### Skill: {target.name}" in demo_a_prompt
    plain, _ = demo_turns([DEMO, DEMO_B], tok, cfg)
    assert all(t.role == "solver" and "Reference Skill" not in tok.decode(t.prompt_ids) for t in plain)
