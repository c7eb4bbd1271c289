"""Many multi-turn episodes at once, one batched engine call per turn (AReaL-lite style).

Each turn every live episode renders its prompt (actors.prompts), all prompts go to the engine in
one `generate` call, and each response is appended to the episode's trace: in the sequence context
one growing conversation (one trace per episode, observations mask 0), in the window context one
fresh prompt per turn (one trace per turn). An env that raises ends only its own episode
(failed=True, error kept), and so does an env call that outlives `rollout.step_timeout_s` (the
others in the batch go on); the step cap and the context budget end episodes with a counted
truncation (EpisodeResult.truncated, info["truncation"]).
"""

from __future__ import annotations

import logging
import threading
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

from actors.actions import choose_action
from actors.prompts import (
    ChatFormat,
    Conversation,
    PromptStyle,
    SolverView,
    first_user,
    next_user,
    system_prompt,
    window_messages,
)
from cluster.core.generation import GenParams
from cluster.core.records import EpisodeJob, EpisodeResult, Trace
from cluster.core.text import encode_messages
from envs.base import Observation, TextEnv

log = logging.getLogger(__name__)


# The readable transcript of a solver episode (EpisodeResult.text, what the extractor reads). The SFT
# warm start (cluster/sft.py) renders planner demonstrations with the same three lines.
def transcript_task(task_text: str) -> str:
    return f"Task: {task_text}"


def transcript_observation(text: str) -> str:
    return f"Observation: {text}"


def transcript_step(action: str, observation: str) -> str:
    return f"> {action}\n{observation}"


@dataclass(frozen=True)
class EpisodeSettings:
    """What the episode loop needs from the config (env section, model context, prompt style)."""

    style: PromptStyle
    context: str = "sequence"
    history_window: int = 4
    max_steps: int = 50
    max_model_len: int = 2048
    step_timeout_s: float | None = None  # an env reset/step that takes longer ends its episode (failed)

    @classmethod
    def from_config(cls, cfg: Any) -> EpisodeSettings:
        e = cfg.env
        return cls(PromptStyle.from_config(cfg), e.context, e.history_window, e.max_steps, cfg.model.max_model_len,
                   cfg.rollout.step_timeout_s)  # fmt: skip


class StepTimeout(RuntimeError):
    pass


def bounded(fn, timeout_s: float | None, *args):
    """fn(*args) on a daemon thread, waited for at most `timeout_s` (None: called directly). A call
    that does not return raises StepTimeout; its thread is abandoned (Python cannot stop it), and the
    caller must not use the env again."""
    if timeout_s is None:
        return fn(*args)
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=run, daemon=True, name="env-step")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise StepTimeout(f"no answer within rollout.step_timeout_s={timeout_s:g} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


@dataclass
class _Live:
    """Mutable state of one running episode."""

    result: EpisodeResult
    env: TextEnv
    job: EpisodeJob
    obs: Observation | None = None
    conv: Conversation | None = None  # sequence context
    logprobs: list[float] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    done: bool = False


def episode_seed(base: int | None, episode_id: str, turn: int) -> int | None:
    """Per-(episode, turn) sampling seed: reproducible however episodes are batched or resubmitted."""
    if base is None:
        return None
    return zlib.crc32(f"{base}/{episode_id}/{turn}".encode()) & 0x7FFFFFFF


def turn_params(
    gen: GenParams, admissible: list[str], constrained: bool, seed: int | None = None
) -> GenParams:
    """One solver turn's request: decoding constrained to the admissible actions when configured."""
    choices = list(admissible) if constrained and admissible else None
    return replace(gen, n=1, seed=seed, choices=choices, json_schema=None)


class EpisodeRunner:
    """Plays batches of episodes with one engine; `settings` fixed per run."""

    def __init__(self, engine: Any, settings: EpisodeSettings) -> None:
        self.engine, self.s = engine, settings
        self._fmt = ChatFormat(engine.tokenizer) if settings.context == "sequence" else None
        self.hung: list[Any] = []  # envs whose reset/step never returned: the owner must replace them

    # ---- per-episode state ------------------------------------------------------------------
    def _finish(self, ep: _Live, *, truncation: str = "", error: str = "") -> None:
        ep.done = True
        r = ep.result
        if truncation:
            r.truncated = True
            r.info["truncation"] = truncation
        if error:
            r.failed, r.error = True, error
        if ep.conv is not None and ep.conv.spans:
            end = ep.conv.spans[-1][1]  # the last observation is not needed: no token after it is trained
            r.traces.append(self._trace(r, ep.conv.ids[:end], list(ep.conv.spans), 0, ep.logprobs))
        for t in r.traces:
            t.truncated, t.won = r.truncated, r.won
        outcome = (
            "FAILED: " + error
            if error
            else ("WON" if r.won else "lost") + (f" ({truncation})" if truncation else "")
        )
        ep.transcript.append(f"Outcome: {outcome} after {r.steps} steps")
        r.text = "\n".join(ep.transcript)  # envs stay open: they are the caller's reusable slots

    def _trace(self, r: EpisodeResult, ids: list[int], spans, first_turn: int, lps: list[float]) -> Trace:
        return Trace(r.episode_id, first_turn, r.task.task_id, r.task.task_type, "solver", list(ids), spans,
                     list(lps), r.policy_version, skill_id=r.skill_id)  # fmt: skip

    def _prompt(self, ep: _Live, max_tokens: int) -> list[int] | None:
        """This turn's prompt ids; None when nothing fits the context."""
        assert ep.obs is not None
        s = self.s
        if len(ep.obs.text) > s.style.max_observation_chars:  # capped in the prompt; counted here
            ep.result.info["observation_capped"] = ep.result.info.get("observation_capped", 0) + 1
        skill = ep.job.skill.text if ep.job.skill else None
        tok = self.engine.tokenizer
        if ep.conv is not None:
            return list(ep.conv.ids) if len(ep.conv.ids) + max_tokens <= s.max_model_len else None
        window = ep.history[-s.history_window :] if s.history_window else []
        while True:
            view = SolverView(ep.obs.task_text, ep.obs.text, ep.obs.admissible_actions, window, skill)
            ids = encode_messages(tok, window_messages(s.style, view, tok))
            if len(ids) + max_tokens <= s.max_model_len:
                return ids
            if not window:
                return None
            window = window[1:]
            ep.result.info["history_trimmed"] = ep.result.info.get("history_trimmed", 0) + 1

    def _start(self, ep: _Live) -> None:
        ep.obs = self._env(ep, ep.env.reset, ep.job.task)
        ep.transcript.append(transcript_observation(ep.obs.text))
        if self._fmt is not None:
            skill = ep.job.skill.text if ep.job.skill else None
            tok, st = self.engine.tokenizer, self.s.style
            constrained = st.constrained and bool(ep.obs.admissible_actions)
            ep.conv = Conversation.start(
                tok,
                system_prompt(st, skill, constrained, tok),
                first_user(st, ep.obs.task_text, ep.obs.text, ep.obs.admissible_actions, skill, tok),
            )

    def _env(self, ep: _Live, fn, *args):
        try:
            return bounded(fn, self.s.step_timeout_s, *args)
        except StepTimeout:
            self.hung.append(ep.env)
            raise

    # ---- the loop ---------------------------------------------------------------------------
    def run(
        self, envs: list[TextEnv], jobs: list[EpisodeJob], gen: GenParams, episode_ids: list[str]
    ) -> list[EpisodeResult]:
        """Play jobs[i] in envs[i]; one EpisodeResult per job, in order."""
        if not len(envs) == len(jobs) == len(episode_ids):
            raise ValueError(f"run_episodes: {len(envs)} envs, {len(jobs)} jobs, {len(episode_ids)} ids")
        version = self.engine.version
        eps = []
        for env, job, eid in zip(envs, jobs, episode_ids):
            sid = job.skill.skill_id if job.skill else ""
            res = EpisodeResult(eid, job.task, False, 0.0, 0, skill_id=sid, policy_version=version)
            ep = _Live(res, env, job, transcript=[transcript_task(job.task.text)])
            try:
                self._start(ep)
            except Exception as e:
                self._finish(ep, error=f"reset({job.task.ref}): {type(e).__name__}: {e}")
            eps.append(ep)
        while live := [ep for ep in eps if not ep.done]:
            self._turn(live, gen)
        return [ep.result for ep in eps]

    def _turn(self, live: list[_Live], gen: GenParams) -> None:
        prompts, params, batch = [], [], []
        for ep in live:
            if ep.result.steps >= self.s.max_steps:
                self._finish(ep, truncation="max_steps")
                continue
            ids = self._prompt(ep, gen.max_tokens)
            if ids is None:
                self._finish(ep, truncation="context")
                continue
            seed = episode_seed(gen.seed, ep.result.episode_id, ep.result.steps)
            prompts.append(ids)
            params.append(turn_params(gen, ep.obs.admissible_actions, self.s.style.constrained, seed))
            batch.append(ep)
        if not batch:
            return
        outs = self.engine.generate(prompts, params)
        for ep, ids, p, (g, *_) in zip(batch, prompts, params, outs):
            self._advance(ep, ids, p, g)

    def _advance(self, ep: _Live, ids: list[int], p: GenParams, g: Any) -> None:
        r = ep.result
        if not g.token_ids:
            self._finish(ep, error="the engine returned an empty generation")
            return
        if ep.conv is not None:
            ep.conv.add_response(g.token_ids)
            ep.logprobs += g.logprobs
        else:
            r.traces.append(self._trace(r, ids + list(g.token_ids), [(len(ids), len(ids) + len(g.token_ids))],
                                        r.steps, g.logprobs))  # fmt: skip
        parsed = choose_action(g.text, p.choices, ep.obs.admissible_actions)
        action = parsed.action
        if action is None:
            r.unparsable_actions += 1
            r.info.setdefault("unparsable", []).append(parsed.reason)
            action = " ".join(g.text.split())[:200]  # still a step: the env judges it invalid
        try:
            step = self._env(ep, ep.env.step, action)
        except Exception as e:
            self._finish(ep, error=f"step({action!r}) on {r.task.ref}: {type(e).__name__}: {e}")
            return
        r.steps += 1
        r.invalid_actions += int(step.invalid_action)
        r.reward += step.reward
        r.step_rewards.append(float(step.reward))
        ep.history.append((action, step.observation.text))
        ep.transcript.append(transcript_step(action, step.observation.text))
        ep.obs = step.observation
        if step.done:
            r.won = step.won
            if "episode_score" in step.info:  # Mind2Web's per-step scores, for its metrics
                r.info["episode_score"] = step.info["episode_score"]
            self._finish(ep, truncation="" if step.won or r.steps < self.s.max_steps else "max_steps")
        elif ep.conv is not None:
            tok = self.engine.tokenizer
            ep.conv.add_user(self._fmt, next_user(self.s.style, ep.obs.text, ep.obs.admissible_actions, tok))
