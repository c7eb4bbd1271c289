"""Demonstrations -> traces with the rollout prompt builders (tokenizer only, no model): an SFT trace is
token for token the trace the episode loop writes when the solver plays the demo's actions."""

import pytest

from actors.episode import EpisodeRunner, EpisodeSettings
from cluster.core.config import load_config
from cluster.core.generation import Generation, GenParams
from cluster.core.records import EpisodeJob, TaskSpec
from cluster.sft import batches, demo_traces
from envs.base import Observation, StepResult

DEMO = {
    "task_id": "t1",
    "task_type": "pick_and_place_simple",
    "task_text": "put a apple in fridge.",
    "steps": [
        {"observation": "You are in a kitchen.", "admissible_actions": ["go to fridge 1", "look"], "action": "go to fridge 1"},
        {"observation": "The fridge 1 is closed.", "admissible_actions": ["open fridge 1", "look"], "action": "open fridge 1"},
    ],
}  # fmt: skip
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


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from cluster.core.model_store import resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model("embedded"))
    except FileNotFoundError as e:
        pytest.skip(str(e))


class ReplayEnv:
    """ReplayEnv (a fake): shows the demo's observations in order."""

    max_steps = 50

    def __init__(self, demo):
        self.demo, self.k = demo, 0

    def _obs(self):
        s = self.demo["steps"][min(self.k, len(self.demo["steps"]) - 1)]
        return Observation(
            s["observation"], s["admissible_actions"], self.demo["task_text"], self.demo["task_type"]
        )

    def reset(self, task):
        self.k = 0
        return self._obs()

    def step(self, action):
        self.k += 1
        done = self.k >= len(self.demo["steps"])
        return StepResult(self._obs(), float(done), done, done)

    def close(self):
        pass


class ReplayEngine:
    """ReplayEngine (a fake): answers each turn with the demo's next action, as SFT encodes it."""

    name = "replay"

    def __init__(self, tok, demo, constrained):
        self.tokenizer, self.version, self.demo, self.k, self.constrained = tok, 0, demo, 0, constrained

    def generate(self, prompts, params):
        a = self.demo["steps"][self.k]["action"]
        self.k += 1
        text = a if self.constrained else f"<action>{a}</action>"
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return [[Generation(text, ids, [], "stop")] for _ in prompts]


@pytest.mark.parametrize("context", ["sequence", "window"])
@pytest.mark.parametrize("constrained", [True, False])
def test_demo_traces_equal_the_rollout_traces(tok, context, constrained):
    cfg = load_config(None, [f"env.context={context}", f"env.constrained_actions={str(constrained).lower()}",
                             "env.history_window=1"])  # fmt: skip
    traces, skipped = demo_traces([DEMO_B], tok, cfg)
    runner = EpisodeRunner(ReplayEngine(tok, DEMO_B, constrained), EpisodeSettings.from_config(cfg))
    task = TaskSpec("t2", "alfworld", DEMO_B["task_type"], DEMO_B["task_text"], "ref")
    (ep,) = runner.run([ReplayEnv(DEMO_B)], [EpisodeJob(task)], GenParams(), ["x"])
    assert ep.won and skipped == 0
    assert [t.token_ids for t in traces] == [t.token_ids for t in ep.traces]
    assert [t.spans for t in traces] == [t.spans for t in ep.traces]
    assert len(traces) == (1 if context == "sequence" else 4)
    assert all(t.role == "solver" and t.won for t in traces)


def test_demo_free_format_and_length_skip(tok):
    cfg = load_config(None, ["env.constrained_actions=false", "model.max_model_len=128", "trainer.mode=grpo"])
    traces, skipped = demo_traces([DEMO], tok, cfg)
    assert skipped == 1 and not traces  # one sequence, longer than 128 tokens
    cfg = load_config(None, ["env.constrained_actions=false"])
    (t,) = demo_traces([DEMO], tok, cfg)[0]
    assert tok.decode(t.span_tokens(0)) == "<action>go to fridge 1</action><|im_end|>"


def test_demo_empty_action_is_named(tok):
    bad = {**DEMO, "steps": [{**DEMO["steps"][0], "action": " "}]}
    with pytest.raises(ValueError, match=r"record 0 \(task t1\), steps\[0\]: empty action"):
        demo_traces([bad], tok, load_config(None))


def test_batches_cover_each_epoch():
    got = list(batches(list(range(5)), 2, 2, seed=0))
    assert [e for e, _ in got] == [0, 0, 0, 1, 1, 1]
    assert sorted(x for e, b in got if e == 0 for x in b) == list(range(5))


def test_both_roles_add_extractor_traces_and_skill_cards(tok):
    from skills.parse import parse_skill
    from skills.schema import render_card
    from skills.teacher import planner_skill

    cfg = load_config(None)
    traces, skipped = demo_traces([DEMO, DEMO_B], tok, cfg, skill_cards=1.0, extractor=True)
    ex = [t for t in traces if t.role == "extractor"]
    solver = [t for t in traces if t.role == "solver"]
    assert skipped == 0 and len(ex) == 2 and len(solver) == 2
    # the extractor target is the teacher skill's canonical JSON, parseable by the trainer's parser
    target = planner_skill(DEMO_B["task_type"], DEMO_B["task_text"], [s["action"] for s in DEMO_B["steps"]])
    text = tok.decode(ex[1].span_tokens(0), skip_special_tokens=True)
    assert text == target.to_json() and parse_skill(text).skill == target
    prompt = tok.decode(ex[1].token_ids[: ex[1].spans[0][0]])
    assert "<<<BEGIN_TRAJECTORY>>>" in prompt and "> take mug 2 from table 1" in prompt
    # every solver demo is shown with the card of the *other* demo of its type, as downstream episodes are
    demo_a = tok.decode(next(t for t in solver if t.task_id == "t1").token_ids)
    assert "Reference Skill:" in demo_a and render_card(target).splitlines()[0] in demo_a
    plain, _ = demo_traces([DEMO, DEMO_B], tok, cfg)
    assert all(t.role == "solver" and "Reference Skill" not in tok.decode(t.token_ids) for t in plain)


@pytest.mark.parametrize("context", ["sequence", "window"])
def test_demo_traces_are_valid_learner_rows(tok, context):
    """What `evorl sft` sends the learner passes the learner's own table validation."""
    from cluster.core.records import traces_to_table
    from learner.batching import rows_from_table

    cfg = load_config(None, [f"env.context={context}"])
    traces, _ = demo_traces([DEMO, DEMO_B], tok, cfg, skill_cards=0.5, extractor=True)
    rows = rows_from_table(traces_to_table(traces), where="sft batch")
    assert len(rows) == len(traces) and {r.role for r in rows} == {"solver", "extractor"}
