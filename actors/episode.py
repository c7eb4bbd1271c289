"""Many multi-turn episodes at once, one batched engine call per turn (AReaL-lite style).

Each turn every live episode renders its prompt (actors.prompts), all prompts go to the engine in
one `generate` call, and each response becomes a Turn record carrying the exact prompt tokens,
generated tokens and their behaviour logprobs. An env that raises ends only its own episode
(failed=True, error kept); the step cap and the context budget end episodes with a counted
truncation (EpisodeResult.truncated, info["truncation"]).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

from actors.engine import Engine, GenParams
from actors.prompts import SolverView, encode_messages, solver_messages
from cluster.records import EpisodeResult, Role, TaskSpec, Turn
from envs.alfworld.actions import parse_action
from envs.base import Observation, TextEnv

log = logging.getLogger(__name__)


# The readable transcript of a solver episode (EpisodeResult.text, what the extractor reads). The SFT
# warm start (learner/sft.py) renders planner demonstrations with the same three lines.
def transcript_task(task_text: str) -> str:
    return f"Task: {task_text}"


def transcript_observation(text: str) -> str:
    return f"Observation: {text}"


def transcript_step(action: str, observation: str) -> str:
    return f"> {action}\n{observation}"


@dataclass
class _Live:
    """Mutable state of one running episode."""

    result: EpisodeResult
    env: TextEnv
    skill: str | None
    obs: Observation | None = None
    history: list[tuple[str, str]] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    done: bool = False


def episode_seed(base: int | None, episode_id: str, turn: int) -> int | None:
    """Per-(episode, turn) sampling seed: reproducible however episodes are batched or resubmitted."""
    if base is None:
        return None
    return zlib.crc32(f"{base}/{episode_id}/{turn}".encode()) & 0x7FFFFFFF


def _finish(ep: _Live, *, truncation: str = "", error: str = "") -> None:
    ep.done = True
    r = ep.result
    if truncation:
        r.truncated = True
        r.info["truncation"] = truncation
        for t in r.turns:
            t.truncated = True
    if error:
        r.failed, r.error = True, error
    outcome = (
        "FAILED: " + error
        if error
        else ("WON" if r.won else "lost") + (f" ({truncation})" if truncation else "")
    )
    ep.transcript.append(f"Outcome: {outcome} after {r.steps} steps")
    r.text = "\n".join(ep.transcript)  # envs stay open: they are the caller's reusable slots


def _prompt(engine: Engine, ep: _Live, env_cfg: Any, max_tokens: int, max_model_len: int) -> list[int] | None:
    """Token ids of this turn's prompt, dropping old history to fit the context; None when nothing fits."""
    assert ep.obs is not None
    if len(ep.obs.text) > env_cfg.max_observation_chars:  # capped in the prompt; counted here
        ep.result.info["observation_capped"] = ep.result.info.get("observation_capped", 0) + 1
    window = ep.history[-env_cfg.history_window :] if env_cfg.history_window else []
    constrained = env_cfg.constrained_actions and bool(ep.obs.admissible_actions)
    while True:
        view = SolverView(ep.obs.task_text, ep.obs.text, ep.obs.admissible_actions, window, ep.skill)
        msgs = solver_messages(
            view, env_cfg.name, constrained, env_cfg.max_observation_chars, engine.tokenizer
        )
        ids = encode_messages(engine.tokenizer, msgs)
        if len(ids) + max_tokens <= max_model_len:
            return ids
        if not window:
            return None
        window = window[1:]
        ep.result.info["history_trimmed"] = ep.result.info.get("history_trimmed", 0) + 1


def run_episodes(
    engine: Engine,
    envs: list[TextEnv],
    tasks: list[TaskSpec],
    skills: list[str | None],
    gen: GenParams,
    env_cfg: Any,
    policy_version: int,
    role: Role = "solver",
    max_model_len: int = 2048,
    episode_ids: list[str] | None = None,
    skill_ids: list[str] | None = None,
) -> list[EpisodeResult]:
    """Play tasks[i] in envs[i] with skills[i] in the prompt; returns one EpisodeResult per task, in order."""
    n = len(tasks)
    if not len(envs) == len(skills) == n:
        raise ValueError(f"run_episodes: {len(envs)} envs, {n} tasks, {len(skills)} skills")
    episode_ids = episode_ids or [f"{t.task_id}#{i}" for i, t in enumerate(tasks)]
    skill_ids = skill_ids or [""] * n
    eps = []
    for env, task, skill, eid, sid in zip(envs, tasks, skills, episode_ids, skill_ids):
        res = EpisodeResult(eid, task, role, False, 0.0, 0, skill_id=sid or "", policy_version=policy_version)
        ep = _Live(res, env, skill, transcript=[transcript_task(task.text)])
        try:
            ep.obs = env.reset(task)
            ep.transcript.append(transcript_observation(ep.obs.text))
        except Exception as e:
            _finish(ep, error=f"reset({task.ref}): {type(e).__name__}: {e}")
        eps.append(ep)

    while live := [ep for ep in eps if not ep.done]:
        prompts, params, batch = [], [], []
        for ep in live:
            if ep.result.steps >= env_cfg.max_steps:
                _finish(ep, truncation="max_steps")
                continue
            ids = _prompt(engine, ep, env_cfg, gen.max_tokens, max_model_len)
            if ids is None:
                _finish(ep, truncation="context")
                continue
            admissible = ep.obs.admissible_actions
            choices = list(admissible) if env_cfg.constrained_actions and admissible else None
            seed = episode_seed(gen.seed, ep.result.episode_id, ep.result.steps)
            prompts.append(ids)
            params.append(replace(gen, n=1, seed=seed, choices=choices, json_schema=None))
            batch.append(ep)
        if not batch:
            break
        outs = engine.generate(prompts, params)
        for ep, ids, p, (g, *_) in zip(batch, prompts, params, outs):
            r = ep.result
            r.turns.append(
                Turn(r.episode_id, len(r.turns), r.task.task_id, r.task.task_type, role, ids,
                     g.token_ids, g.logprobs, policy_version, skill_id=r.skill_id)
            )  # fmt: skip
            if p.choices is not None:
                action = g.text.strip()
            else:
                parsed = parse_action(g.text, ep.obs.admissible_actions)
                action = parsed.action
                if action is None:
                    r.unparsable_actions += 1
                    r.info.setdefault("unparsable", []).append(parsed.reason)
                    action = " ".join(g.text.split())[:200]  # still a step: the env judges it invalid
            try:
                step = ep.env.step(action)
            except Exception as e:
                _finish(ep, error=f"step({action!r}) on {r.task.ref}: {type(e).__name__}: {e}")
                continue
            r.steps += 1
            r.invalid_actions += int(step.invalid_action)
            r.reward += step.reward
            ep.history.append((action, step.observation.text))
            ep.transcript.append(transcript_step(action, step.observation.text))
            ep.obs = step.observation
            if step.done:
                r.won = step.won
                _finish(ep, truncation="" if step.won or r.steps < env_cfg.max_steps else "max_steps")
    for ep in eps:
        for t in ep.result.turns:
            t.won = ep.result.won
    return [ep.result for ep in eps]
