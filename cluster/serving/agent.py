"""AgentCore: the solver behind the HTTP routes, on the rollout path's own code.

The prompt is the rollout solver prompt (actors.prompts: the sequence context rebuilt from the
request's history, or the window context), decoding is constrained to the admissible actions as in
rollouts (actors.episode.turn_params), the action is read with actors.actions.choose_action, and
skills are the top-k accepted cards of a library (skills.retrieval.SkillIndex). No Ray here: tests
and benchmarks use it directly; cluster/serving/app.py puts it behind Ray Serve.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from actors.engine import Engine, make_engine
from actors.episode import turn_params
from actors.prompts import PromptStyle, SolverView, conversation_messages, window_messages
from cluster.core.config import Config
from cluster.core.generation import GenParams
from cluster.core.records import TaskSpec
from cluster.core.text import encode_messages, sanitize
from cluster.serving.api import AgentRequest, RequestError, parse_chat

log = logging.getLogger("evorl.serve")
_CACHE_SIZE = 1024  # task texts whose retrieved skills are kept per replica


def served_version(model_dir: str) -> int:
    """The policy version a model folder holds: its checkpoint's trainer state, 0 for a base model."""
    from cluster.core.storage import CorruptFileError, read_json

    state = Path(model_dir).parent / "trainer_state.json"
    try:
        return int(read_json(state)["policy_version"]) if state.exists() else 0
    except (CorruptFileError, KeyError, TypeError, ValueError):
        return 0


def model_from_checkpoint(path: str) -> str:
    """An HF folder to serve from: "embedded", an HF folder, a checkpoint (iter-N), a checkpoints root
    or a run folder (its newest complete checkpoint)."""
    from cluster.checkpoint import resolve_model_dir
    from cluster.core.model_store import resolve_model

    if path == "embedded":
        return resolve_model(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"--checkpoint {path}: no such folder (hub ids: download to a folder first)")
    return str(resolve_model_dir(path))


class AgentCore:
    """Engine + skill index + prompt building; `act_batch` answers many requests with one engine call."""

    def __init__(
        self,
        cfg: Config,
        model_path: str,
        skills_dir: str | None = None,
        engine: Engine | None = None,
        seed: int = 0,
        policy_version: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.model_path = model_path
        self.policy_version = policy_version if policy_version is not None else served_version(model_path)
        self.engine = engine or make_engine(model_path, cfg.engine, seed, cfg.model.max_model_len)
        self.max_model_len = cfg.model.max_model_len
        self.index = None
        self.n_skills = 0
        if skills_dir and cfg.serve.skills_top_k > 0:
            from skills.library import SkillLibrary
            from skills.retrieval import Embedder, SkillIndex

            if not Path(skills_dir).is_dir():
                raise FileNotFoundError(f"--skills {skills_dir}: no such library folder")
            library = SkillLibrary.open(skills_dir)
            for p, why in library.load_report.skipped:
                log.warning("skill library: skipped %s: %s", p, why)
            self.index = SkillIndex.from_library(library, Embedder(cfg.skills.embedding))
            self.n_skills = len(self.index.entries)
            log.info(
                "serving %d accepted skill(s) of %s (%d in total)", self.n_skills, skills_dir, len(library)
            )
        self._retrieved: OrderedDict[str, list] = OrderedDict()

    def warmup(self) -> None:
        """Load the lazy parts (embedding model, engine's first-call setup) before taking traffic."""
        if self.index is not None and self.n_skills:
            self.index.embedder.embed(["warm up"])
        self.generate([self.engine.tokenizer.encode("Hi")], [GenParams(temperature=0.0, max_tokens=1)])

    # --------------------------------------------------------------------------------------- skills
    def retrieve(self, req: AgentRequest) -> list:
        if self.index is None or not self.n_skills:
            return []
        key = f"{req.env}\x00{req.task_type}\x00{req.task}"
        if key not in self._retrieved:
            query: TaskSpec | str = req.task
            if req.task_type:
                query = TaskSpec("request", req.env, req.task_type, req.task, "")
            self._retrieved[key] = self.index.top_k(query, self.cfg.serve.skills_top_k)
            if len(self._retrieved) > _CACHE_SIZE:
                self._retrieved.popitem(last=False)
        self._retrieved.move_to_end(key)
        return self._retrieved[key]

    # --------------------------------------------------------------------------------------- prompt
    def _max_tokens(self, choices: list[str] | None) -> int:
        base = self.cfg.rollout.max_new_tokens
        if not choices:
            return base
        tok = self.engine.tokenizer
        return max(base, max(len(tok.encode(c, add_special_tokens=False)) for c in choices) + 2)

    def prompt(self, req: AgentRequest, skill_text: str | None, max_tokens: int) -> tuple[list[int], int]:
        """(token ids, history steps kept): the rollout prompt of this run's context, dropping the
        oldest history until it fits the model context."""
        env_cfg, tok = self.cfg.env, self.engine.tokenizer
        style = PromptStyle.from_config(self.cfg)
        style = PromptStyle(req.env, style.constrained, style.max_observation_chars, style.max_skill_chars,
                            style.skill_placement)  # fmt: skip
        if env_cfg.context == "sequence":  # o_0, a_0, ..., a_n-1, o_n: the request's episode so far
            past = req.steps or [("", [], a) for a, _ in req.history]  # history alone: no past observations
            observations = [o for o, _, _ in past] + [req.observation]
            if not req.steps:
                observations = ([""] + [o for _, o in req.history[:-1]] if req.history else []) + [
                    req.observation
                ]
            lists = [acts for _, acts, _ in past] + [req.admissible_actions]
            window = [(a, "") for _, _, a in past]
        else:
            window = req.history[-env_cfg.history_window :] if env_cfg.history_window else []
        while True:
            if env_cfg.context == "sequence":
                k = len(observations) - 1 - len(window)  # oldest steps dropped to fit
                msgs = conversation_messages(style, req.task, observations[k:], lists[k:], [a for a, _ in window],
                                             skill_text, tok)  # fmt: skip
            else:
                view = SolverView(req.task, req.observation, req.admissible_actions, window, skill_text)
                msgs = window_messages(style, view, tok)
            ids = encode_messages(tok, msgs)
            if len(ids) + max_tokens <= self.max_model_len:
                return ids, len(window)
            if not window:
                raise RequestError(
                    422,
                    f"prompt of {len(ids)} tokens + {max_tokens} to generate exceeds the model context "
                    f"({self.max_model_len}); shorten the observation or admissible actions",
                )
            window = window[1:]

    # ------------------------------------------------------------------------------------- generate
    def generate(self, prompts: list[list[int]], params: list[GenParams]) -> list[tuple[str, int, str]]:
        """(text, generated tokens, finish reason) per prompt (no behaviour logprobs: nobody learns)."""
        return [
            (g.text, len(g.token_ids), g.finish_reason) for g, *_ in self.engine.generate(prompts, params)
        ]

    # ------------------------------------------------------------------------------------------ act
    def act_batch(self, reqs: list[AgentRequest]) -> list[dict | RequestError]:
        """One engine call for all requests that fit; per-request errors are returned, not raised."""
        from actors.actions import choose_action
        from skills.schema import render_card

        out: list[dict | RequestError] = [RequestError(500, "not processed")] * len(reqs)
        prompts, params, meta = [], [], []
        gen = GenParams(temperature=self.cfg.rollout.eval_temperature, top_p=1.0)
        for i, req in enumerate(reqs):
            try:
                entries = self.retrieve(req)
                skill_text = (
                    "\n\n".join(render_card(e.skill, self.cfg.skills.max_skill_chars) for e in entries)
                    or None
                )
                p = turn_params(gen, req.admissible_actions, self.cfg.env.constrained_actions, req.seed)
                p.max_tokens = self._max_tokens(p.choices)
                ids, kept = self.prompt(req, skill_text, p.max_tokens)
            except RequestError as e:
                out[i] = e
                continue
            prompts.append(ids)
            params.append(p)
            meta.append((i, req, entries, kept, len(ids)))
        if not prompts:
            return out
        gens = self.generate(prompts, params)
        for (i, req, entries, kept, n_prompt), p, (text, n_gen, _) in zip(meta, params, gens):
            parsed = choose_action(text, p.choices, req.admissible_actions)
            out[i] = {
                "action": parsed.action if parsed.ok else " ".join(text.split())[:200],
                "skills_used": [{"name": e.skill.name, "skill_id": e.skill_id} for e in entries],
                "raw_text": text,
                "parsed": parsed.ok,
                "constrained": p.choices is not None,
                "history_used": kept,
                "prompt_tokens": n_prompt,
                "completion_tokens": n_gen,
                "policy_version": self.policy_version,
            }
        return out

    # ----------------------------------------------------------------------------------------- chat
    def chat(self, body: Any) -> dict:
        """OpenAI chat.completions on the bare model (messages sanitised of control tokens)."""
        req = parse_chat(body)
        tok = self.engine.tokenizer
        clean = [{"role": m["role"], "content": sanitize(m["content"], tokenizer=tok)} for m in req.messages]
        ids = encode_messages(tok, clean)
        if len(ids) + req.max_tokens > self.max_model_len:
            raise RequestError(422, f"prompt of {len(ids)} tokens + max_tokens exceeds {self.max_model_len}")
        params = GenParams(temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_tokens, stop=req.stop,
                           seed=req.seed)  # fmt: skip
        text, n_gen, finish = self.generate([ids], [params])[0]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length" if finish == "length" else "stop",
                }
            ],  # fmt: skip
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": n_gen,
                "total_tokens": len(ids) + n_gen,
            },
        }
