"""Supervised warm start: planner demonstrations -> Turns rendered with the rollout prompt builders.

Each demo step becomes one solver Turn whose prompt is exactly what the solver would see at that step
(task, history window, observation, admissible actions) and whose response is the expert action as
the engine would emit it (action tokens + end-of-turn token in the constrained format;
`<action>...</action>` in the free format). The checkpoint format is the RL one.

Both roles (optional): with `skill_cards` > 0 that fraction of demos is shown with a teacher skill
(skills.teacher) of another demo of the same type in the prompt, as downstream episodes are; with
`extractor` each demo also yields one extractor Turn: the extractor prompt over the demo's
transcript -> the teacher skill's JSON. Without them the start model has never seen a skill card
and writes placeholder skills, so evolving gets no signal (docs/results.md).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from typing import Any

from cluster.config import Config
from cluster.records import Turn

log = logging.getLogger(__name__)


def demo_turns(
    demos: Iterable[dict[str, Any]],
    tokenizer: Any,
    cfg: Config,
    where: str = "demos",
    skill_cards: float = 0.0,
    extractor: bool = False,
    seed: int = 0,
) -> tuple[list[Turn], int]:
    """(turns, skipped): a step whose prompt + response exceeds model.max_model_len is skipped and counted."""
    from actors.prompts import SolverView, encode_messages, solver_messages
    from skills.schema import render_card

    env = cfg.env
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if eos is None or eos == tokenizer.unk_token_id:
        eos = tokenizer.eos_token_id
    demos = list(demos)
    teacher = _teacher_skills(demos, where) if (skill_cards > 0 or extractor) else []
    rng = random.Random(seed)
    turns: list[Turn] = []
    skipped = 0

    def add(turn: Turn) -> None:
        nonlocal skipped
        if len(turn.prompt_ids) + len(turn.response_ids) > cfg.model.max_model_len:
            skipped += 1
        else:
            turns.append(turn)

    for n, rec in enumerate(demos):
        steps = rec["steps"]
        card = None
        if skill_cards > 0 and rng.random() < skill_cards:
            same = [k for k, r in enumerate(demos) if r["task_type"] == rec["task_type"] and k != n]
            card = render_card(teacher[rng.choice(same) if same else n])
        if extractor:
            add(_extractor_turn(rec, teacher[n], tokenizer, eos, cfg))
        history: list[tuple[str, str]] = []
        for k, step in enumerate(steps):
            admissible = list(step["admissible_actions"])
            constrained = env.constrained_actions and bool(admissible)
            window = history[-env.history_window :] if env.history_window else []
            view = SolverView(rec["task_text"], step["observation"], admissible, window, card)
            prompt = encode_messages(
                tokenizer, solver_messages(view, env.name, constrained, env.max_observation_chars, tokenizer)
            )
            action = str(step["action"]).strip()
            if not action:
                raise ValueError(f"{where}: record {n} (task {rec['task_id']}), steps[{k}]: empty action")
            text = action if constrained else f"<action>{action}</action>"
            response = list(tokenizer.encode(text, add_special_tokens=False)) + [eos]
            add(Turn(f"demo-{rec['task_id']}", k, str(rec["task_id"]), str(rec["task_type"]), "solver",
                     prompt, response, [0.0] * len(response), policy_version=0, won=True))  # fmt: skip
            next_obs = steps[k + 1]["observation"] if k + 1 < len(steps) else ""
            history.append((action, next_obs))
    if skipped:
        log.warning("%s: %d demo steps longer than model.max_model_len skipped", where, skipped)
    return turns, skipped


def _teacher_skills(demos: list[dict[str, Any]], where: str) -> list:
    from skills.teacher import planner_skill

    out = []
    for n, rec in enumerate(demos):
        try:
            out.append(planner_skill(rec["task_type"], rec["task_text"], [s["action"] for s in rec["steps"]]))
        except ValueError as e:  # SkillValidationError included: a demo the teacher cannot summarise
            raise ValueError(f"{where}: record {n} (task {rec['task_id']}): teacher skill: {e}") from e
    return out


def _extractor_turn(rec: dict[str, Any], skill: Any, tokenizer: Any, eos: int, cfg: Config) -> Turn:
    """The extractor prompt over the demo's transcript (as actors.episode writes it) -> the skill JSON."""
    from actors.episode import transcript_observation, transcript_step, transcript_task
    from actors.prompts import encode_messages
    from cluster.records import EpisodeResult, TaskSpec
    from skills.extractor import extractor_messages

    steps = rec["steps"]
    lines = [
        transcript_task(rec["task_text"]),
        transcript_observation(steps[0]["observation"] if steps else ""),
    ]
    for k, step in enumerate(steps):
        nxt = steps[k + 1]["observation"] if k + 1 < len(steps) else ""
        lines.append(transcript_step(str(step["action"]).strip(), nxt))
    task = TaskSpec(str(rec["task_id"]), cfg.env.name, str(rec["task_type"]), str(rec["task_text"]), "")
    episode = EpisodeResult(f"demo-{rec['task_id']}", task, "solver", won=True, reward=1.0, steps=len(steps),
                            text="\n".join(lines))  # fmt: skip
    prompt = encode_messages(tokenizer, extractor_messages(episode))
    response = list(tokenizer.encode(skill.to_json(), add_special_tokens=False)) + [eos]
    return Turn(f"demo-x-{rec['task_id']}", 0, str(rec["task_id"]), str(rec["task_type"]), "extractor",
                prompt, response, [0.0] * len(response), policy_version=0, won=True)  # fmt: skip


def batches(turns: list[Turn], batch_turns: int, epochs: int, seed: int) -> Iterable[tuple[int, list[Turn]]]:
    """(epoch, batch) pairs; a fresh seeded shuffle each epoch."""
    rng = random.Random(seed)
    for epoch in range(epochs):
        order = list(turns)
        rng.shuffle(order)
        for s in range(0, len(order), batch_turns):
            yield epoch, order[s : s + batch_turns]
