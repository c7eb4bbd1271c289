"""Supervised warm start: planner demonstrations -> solver Turns rendered with the rollout prompt builder.

Each demo step becomes one Turn whose prompt is exactly what the solver would see at that step
(task, history window, observation, admissible actions, no skill) and whose response is the
expert action as the engine would emit it (action tokens + end-of-turn token in the constrained
format; `<action>...</action>` in the free format). The checkpoint format is the RL one.
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
    demos: Iterable[dict[str, Any]], tokenizer: Any, cfg: Config, where: str = "demos"
) -> tuple[list[Turn], int]:
    """(turns, skipped): a step whose prompt + response exceeds model.max_model_len is skipped and counted."""
    from actors.prompts import SolverView, encode_messages, solver_messages

    env = cfg.env
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if eos is None or eos == tokenizer.unk_token_id:
        eos = tokenizer.eos_token_id
    turns: list[Turn] = []
    skipped = 0
    for n, rec in enumerate(demos):
        steps = rec["steps"]
        history: list[tuple[str, str]] = []
        for k, step in enumerate(steps):
            admissible = list(step["admissible_actions"])
            constrained = env.constrained_actions and bool(admissible)
            window = history[-env.history_window :] if env.history_window else []
            view = SolverView(rec["task_text"], step["observation"], admissible, window, None)
            prompt = encode_messages(
                tokenizer, solver_messages(view, env.name, constrained, env.max_observation_chars, tokenizer)
            )
            action = str(step["action"]).strip()
            if not action:
                raise ValueError(f"{where}: record {n} (task {rec['task_id']}), steps[{k}]: empty action")
            text = action if constrained else f"<action>{action}</action>"
            response = list(tokenizer.encode(text, add_special_tokens=False)) + [eos]
            if len(prompt) + len(response) > cfg.model.max_model_len:
                skipped += 1
            else:
                turns.append(
                    Turn(f"demo-{rec['task_id']}", k, str(rec["task_id"]), str(rec["task_type"]), "solver",
                         prompt, response, [0.0] * len(response), policy_version=0, won=True)
                )  # fmt: skip
            next_obs = steps[k + 1]["observation"] if k + 1 < len(steps) else ""
            history.append((action, next_obs))
    if skipped:
        log.warning("%s: %d demo steps longer than model.max_model_len skipped", where, skipped)
    return turns, skipped


def batches(turns: list[Turn], batch_turns: int, epochs: int, seed: int) -> Iterable[tuple[int, list[Turn]]]:
    """(epoch, batch) pairs; a fresh seeded shuffle each epoch."""
    rng = random.Random(seed)
    for epoch in range(epochs):
        order = list(turns)
        rng.shuffle(order)
        for s in range(0, len(order), batch_turns):
            yield epoch, order[s : s + batch_turns]
