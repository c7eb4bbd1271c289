"""Run a policy over every task of a split and report Mind2Web's metrics (see metrics.py).

`policy` is "oracle" (replays the gold action: 1.0 everywhere on any well-formed data),
"random" (a uniformly random admissible action), or a callable Observation -> action string (the
lead wires the model's rollout workers in through this).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from envs.base import Observation
from envs.mind2web.env import MODES, Mind2WebEnv
from envs.mind2web.metrics import EpisodeScore, aggregate, aggregate_by, normalise
from envs.mind2web.tasks import SAMPLE_DIR, list_tasks

Policy = Callable[[Observation], str]
POLICIES: tuple[str, ...] = ("oracle", "random")


def evaluate(
    data_dir: str | Path | None = None,
    split: str = "test_task",
    policy: str | Policy = "oracle",
    mode: str = "teacher_forced",
    seed: int = 0,
    max_candidates: int = 20,
    max_steps: int = 50,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
) -> dict:
    """Metrics of `policy` on `split` of `data_dir` (default: the bundled sample)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    if isinstance(policy, str) and policy not in POLICIES:
        raise ValueError(f"policy {policy!r}: expected one of {POLICIES} or a callable")
    data_dir = Path(data_dir) if data_dir is not None else SAMPLE_DIR
    tasks = list_tasks(data_dir, split, cache_dir)
    if limit is not None:
        tasks = tasks[:limit]
    env = Mind2WebEnv(max_steps=max_steps, mode=mode, max_candidates=max_candidates, seed=seed)  # type: ignore[arg-type]
    rng = random.Random(seed)
    episodes: list[EpisodeScore] = []
    steps = gold_listed = no_positive = invalid = 0
    for task in tasks:
        obs = env.reset(task)
        done = False
        while not done:
            gold = env.gold_action()
            steps += 1
            admissible = {normalise(a) for a in obs.admissible_actions}
            gold_listed += gold is not None and normalise(gold) in admissible
            if policy == "oracle":
                action = gold if gold is not None else "CLICK [0]"
            elif policy == "random":
                action = rng.choice(obs.admissible_actions)
            else:
                action = policy(obs)  # type: ignore[operator]
            res = env.step(action)
            no_positive += res.info["no_positive"]
            invalid += res.invalid_action
            obs, done = res.observation, res.done
        assert env.episode_score is not None
        episodes.append(env.episode_score)
    env.close()
    return {
        "data_dir": str(data_dir),
        "split": split,
        "mode": mode,
        "seed": seed,
        "max_candidates": max_candidates,
        "policy": policy if isinstance(policy, str) else getattr(policy, "__name__", "callable"),
        **aggregate(episodes),
        "gold_in_admissible": gold_listed / steps if steps else 0.0,
        "steps_without_positive": no_positive,
        "invalid_actions": invalid,
        "per_domain": aggregate_by(episodes, "domain"),
        "per_website": aggregate_by(episodes, "website"),
    }
