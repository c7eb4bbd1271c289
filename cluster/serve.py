"""The trained agent behind HTTP: a Ray Serve application of the solver with skill retrieval.

Routes (one ingress deployment, `serve.num_replicas` replicas, CPU or GPU per `serve.*`):
    POST /act                  {task, observation | page, admissible_actions, history, ...} -> {action, skills_used, raw_text, ...}
    POST /v1/chat/completions  OpenAI-compatible chat on the same model (no skills, no constraints)
    GET  /v1/models, GET /health
One replica = one engine (actors.engine.make_engine) + the accepted skills of a library indexed by
embedding (skills.retrieval.SkillIndex). A request's prompt is the rollout solver prompt
(actors.prompts) with the top-k skill cards as its "Reference Skill", so the served agent sees exactly
what it was trained on; with admissible actions, decoding is constrained to them.

Concurrent /act requests are folded into one engine call (`serve.batch`); all engine work runs on one
worker thread of the replica so the event loop keeps answering (and rejecting) requests meanwhile.
Bad input never reaches the engine: 400 unreadable JSON, 413 oversized body, 422 wrong/missing fields,
each with a message naming the field. `AgentCore` holds the logic without Ray, for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from actors.engine import Engine, GenParams, make_engine
from actors.prompts import SolverView, encode_messages, sanitize, solver_messages
from cluster.config import Config
from cluster.records import TaskSpec

log = logging.getLogger("evorl.serve")

ENVS = ("alfworld", "mind2web")
ACT_FIELDS = ("env", "task", "task_type", "observation", "page", "admissible_actions", "history", "seed")
MAX_ACTIONS = 2000  # admissible actions per request
MAX_CHAT_TOKENS = 1024
_CACHE_SIZE = 1024  # task texts whose retrieved skills are kept per replica


class RequestError(ValueError):
    """A bad request: `status` is the HTTP code answered, the message says which field and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class AgentRequest:
    """One validated /act request."""

    env: str
    task: str
    observation: str
    admissible_actions: list[str]
    history: list[tuple[str, str]] = field(default_factory=list)
    task_type: str = ""
    seed: int | None = None


def _text(body: dict, key: str, required: bool) -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise RequestError(422, f"field {key!r} is required (a string)")
        return ""
    if not isinstance(value, str):
        raise RequestError(422, f"field {key!r}: expected a string, got {type(value).__name__}")
    return value


def _history(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(422, f"field 'history': expected a list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            pair = (item.get("action"), item.get("observation"))
        elif isinstance(item, list | tuple) and len(item) == 2:
            pair = (item[0], item[1])
        else:
            raise RequestError(
                422, f"history[{i}]: expected [action, observation] or {{action, observation}}"
            )
        if not all(isinstance(x, str) for x in pair):
            raise RequestError(422, f"history[{i}]: action and observation must be strings")
        out.append((pair[0], pair[1]))
    return out


def parse_request(body: Any, default_env: str = "alfworld") -> AgentRequest:
    """Validate a decoded /act body. ALFWorld needs `admissible_actions`; Mind2Web needs the page
    snapshot (`page`, or `observation`) and may give admissible actions for constrained decoding."""
    if not isinstance(body, dict):
        raise RequestError(422, f"request body: expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(ACT_FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown}; expected some of {list(ACT_FIELDS)}")
    env = body.get("env", default_env)
    if env not in ENVS:
        raise RequestError(422, f"field 'env': expected one of {list(ENVS)}, got {env!r}")
    task = _text(body, "task", required=True)
    if not task.strip():
        raise RequestError(422, "field 'task' is empty")
    page = _text(body, "page", required=False)
    observation = _text(body, "observation", required=not (env == "mind2web" and page))
    if page and observation and page != observation:
        raise RequestError(422, "give the page snapshot as 'page' or 'observation', not both")
    actions = body.get("admissible_actions")
    if actions is None:
        if env == "alfworld":
            raise RequestError(422, "field 'admissible_actions' is required for env 'alfworld' (a list)")
        actions = []
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise RequestError(422, "field 'admissible_actions': expected a list of strings")
    actions = list(dict.fromkeys(a.strip() for a in actions if a.strip()))
    if env == "alfworld" and not actions:
        raise RequestError(422, "field 'admissible_actions' is empty")
    if len(actions) > MAX_ACTIONS:
        raise RequestError(413, f"field 'admissible_actions': {len(actions)} > {MAX_ACTIONS} actions")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(422, f"field 'seed': expected an integer, got {seed!r}")
    return AgentRequest(
        env=env,
        task=task,
        observation=page or observation,
        admissible_actions=actions,
        history=_history(body.get("history")),
        task_type=_text(body, "task_type", required=False),
        seed=seed,
    )


def decode_body(raw: bytes, max_chars: int) -> Any:
    if len(raw) > max_chars:
        raise RequestError(
            413, f"request body of {len(raw)} bytes exceeds serve.max_request_chars={max_chars}"
        )
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"request body is not valid JSON: {e}") from None


def model_from_checkpoint(path: str) -> str:
    """An HF folder to serve from: "embedded", an HF folder, a learner checkpoint root
    (step-*, `latest`), a trainer checkpoint (iter-N with model/) or a run folder (checkpoints/)."""
    from cluster.model_store import resolve_model

    if path == "embedded":
        return resolve_model(path)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--checkpoint {path}: no such folder (hub ids: download to a folder first)")
    if (p / "config.json").exists():
        return str(p)
    from learner.checkpoint import resolve_checkpoint

    for root in (p / "model", p, *sorted(p.glob("checkpoints/iter-*/model"), reverse=True)):
        try:
            found = resolve_checkpoint(root)
        except FileNotFoundError:
            continue
        if (found / "config.json").exists():
            return str(found)
    raise FileNotFoundError(
        f"--checkpoint {path}: no HF model folder (config.json) here, in model/, step-* or checkpoints/"
    )


class AgentCore:
    """Engine + skill index + prompt building; `act_batch` answers many requests with one engine call."""

    def __init__(
        self,
        cfg: Config,
        model_path: str,
        skills_dir: str | None = None,
        engine: Engine | None = None,
        seed: int = 0,
    ) -> None:
        self.cfg = cfg
        self.model_path = model_path
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
        """(token ids, history pairs kept): the newest history that fits the context, as in rollouts."""
        env_cfg = self.cfg.env
        window = req.history[-env_cfg.history_window :] if env_cfg.history_window else []
        constrained = env_cfg.constrained_actions and bool(req.admissible_actions)
        while True:
            view = SolverView(req.task, req.observation, req.admissible_actions, window, skill_text)
            msgs = solver_messages(
                view, req.env, constrained, env_cfg.max_observation_chars, self.engine.tokenizer
            )
            ids = encode_messages(self.engine.tokenizer, msgs)
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
        """(text, generated tokens, finish reason) per prompt. On vLLM this skips Engine.generate's
        behaviour logprobs: those re-score every constrained sample with an extra prefill for the
        learner, which inference does not need (~2-3x the latency of a constrained request here)."""
        llm = getattr(self.engine, "llm", None)
        if llm is None:
            return [
                (g.text, len(g.token_ids), g.finish_reason) for g, *_ in self.engine.generate(prompts, params)
            ]
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        sps = [
            SamplingParams(
                n=1, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=p.seed, stop=p.stop,
                structured_outputs=StructuredOutputsParams(choice=list(p.choices)) if p.choices else None,
            )
            for p in params
        ]  # fmt: skip
        outs = llm.generate(
            [{"prompt_token_ids": list(x)} for x in prompts], sampling_params=sps, use_tqdm=False
        )
        return [
            (o.outputs[0].text, len(o.outputs[0].token_ids), str(o.outputs[0].finish_reason)) for o in outs
        ]

    # ------------------------------------------------------------------------------------------ act
    def act_batch(self, reqs: list[AgentRequest]) -> list[dict | RequestError]:
        """One engine call for all requests that fit; per-request errors are returned, not raised."""
        from envs.alfworld.actions import parse_action
        from skills.schema import render_card

        out: list[dict | RequestError] = [RequestError(500, "not processed")] * len(reqs)
        prompts, params, meta = [], [], []
        for i, req in enumerate(reqs):
            try:
                entries = self.retrieve(req)
                skill_text = "\n\n".join(render_card(e.skill) for e in entries) or None
                choices = (
                    req.admissible_actions
                    if self.cfg.env.constrained_actions and req.admissible_actions
                    else None
                )
                max_tokens = self._max_tokens(choices)
                ids, kept = self.prompt(req, skill_text, max_tokens)
            except RequestError as e:
                out[i] = e
                continue
            prompts.append(ids)
            params.append(
                GenParams(
                    temperature=self.cfg.rollout.eval_temperature,
                    top_p=1.0,
                    max_tokens=max_tokens,
                    seed=req.seed,
                    choices=choices,
                )
            )
            meta.append((i, req, entries, kept, len(ids)))
        if not prompts:
            return out
        gens = self.generate(prompts, params)
        for (i, req, entries, kept, n_prompt), p, (text, n_gen, _) in zip(meta, params, gens):
            if p.choices is not None and text.strip() in p.choices:
                action, parsed = text.strip(), True
            else:
                pa = parse_action(text, req.admissible_actions)
                parsed = pa.action is not None
                action = pa.action if parsed else " ".join(text.split())[:200]
            out[i] = {
                "action": action,
                "skills_used": [{"name": e.skill.name, "skill_id": e.skill_id} for e in entries],
                "raw_text": text,
                "parsed": parsed,
                "constrained": p.choices is not None,
                "history_used": kept,
                "prompt_tokens": n_prompt,
                "completion_tokens": n_gen,
                "policy_version": self.engine.version,
            }
        return out

    # ----------------------------------------------------------------------------------------- chat
    def chat(self, body: Any) -> dict:
        """OpenAI chat.completions on the bare model (messages sanitised of control tokens)."""
        if not isinstance(body, dict):
            raise RequestError(422, "request body: expected a JSON object")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise RequestError(422, "field 'messages': expected a non-empty list")
        clean = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise RequestError(422, f"messages[{i}]: expected {{role: system|user|assistant, content}}")
            if not isinstance(m.get("content"), str):
                raise RequestError(422, f"messages[{i}].content: expected a string")
            clean.append({"role": m["role"], "content": sanitize(m["content"], self.engine.tokenizer)})
        n = body.get("n", 1)
        if n != 1:
            raise RequestError(422, "field 'n': only n=1 is supported")
        try:
            max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 128)
            temperature = float(body.get("temperature", 0.0))
            top_p = float(body.get("top_p", 1.0))
        except (TypeError, ValueError) as e:
            raise RequestError(422, f"max_tokens / temperature / top_p: {e}") from None
        if not 1 <= max_tokens <= MAX_CHAT_TOKENS or temperature < 0 or not 0 < top_p <= 1:
            raise RequestError(
                422, f"expected 1 <= max_tokens <= {MAX_CHAT_TOKENS}, temperature >= 0, 0 < top_p <= 1"
            )
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise RequestError(422, "field 'stop': expected a string or a list of strings")
        ids = encode_messages(self.engine.tokenizer, clean)
        if len(ids) + max_tokens > self.max_model_len:
            raise RequestError(422, f"prompt of {len(ids)} tokens + max_tokens exceeds {self.max_model_len}")
        seed = body.get("seed")
        params = GenParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop,
                           seed=seed if isinstance(seed, int) else None)  # fmt: skip
        text, n_gen, finish = self.generate([ids], [params])[0]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or "evorl",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length" if finish == "length" else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": n_gen,
                "total_tokens": len(ids) + n_gen,
            },
        }


# ------------------------------------------------------------------------------------------ Ray Serve

app = FastAPI(title="evorl agent", docs_url=None, redoc_url=None)


def _error(e: RequestError) -> JSONResponse:
    return JSONResponse({"error": {"message": str(e), "code": e.status}}, status_code=e.status)


@serve.deployment(name="EvorlAgent")
@serve.ingress(app)
class AgentServer:
    """One replica: AgentCore on a single worker thread, /act requests batched through serve.batch."""

    def __init__(self, cfg: Config, model_path: str, skills_dir: str | None) -> None:
        logging.basicConfig(level=logging.INFO)
        self.cfg = cfg
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="evorl-engine")  # the engine is not thread-safe
        self.core = self._pool.submit(AgentCore, cfg, model_path, skills_dir).result()
        self._pool.submit(self.core.warmup).result()
        self._act.set_max_batch_size(cfg.serve.max_batch_size)
        self._act.set_batch_wait_timeout_s(cfg.serve.batch_wait_timeout_s)
        self.model_name = Path(model_path).name

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _act(self, reqs: list[AgentRequest]) -> list[dict | RequestError]:
        return await self._run(self.core.act_batch, reqs)

    async def _body(self, request: Request) -> Any:
        limit = self.cfg.serve.max_request_chars
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise RequestError(413, f"request body of {length} bytes exceeds serve.max_request_chars={limit}")
        return decode_body(await request.body(), limit)

    @app.post("/act")
    async def act(self, request: Request) -> JSONResponse:
        try:
            req = parse_request(await self._body(request), self.cfg.env.name)
            result = await self._act(req)
        except RequestError as e:
            return _error(e)
        except Exception as e:  # an engine failure answers 500; the replica stays up
            log.exception("act failed")
            return _error(RequestError(500, f"{type(e).__name__}: {e}"))
        if isinstance(result, RequestError):
            return _error(result)
        return JSONResponse(result)

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> JSONResponse:
        try:
            return JSONResponse(await self._run(self.core.chat, await self._body(request)))
        except RequestError as e:
            return _error(e)
        except Exception as e:
            log.exception("chat failed")
            return _error(RequestError(500, f"{type(e).__name__}: {e}"))

    @app.get("/v1/models")
    async def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "evorl"}]}

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok", "model": self.model_name, "skills": self.core.n_skills,
                "policy_version": self.core.engine.version}  # fmt: skip


def build_app(cfg: Config, model_path: str, skills_dir: str | None):
    """The Serve application (bind it with serve.run); resources per replica from `cfg.serve`."""
    from cluster.placement import actor_env

    s = cfg.serve
    return AgentServer.options(
        num_replicas=s.num_replicas,
        max_ongoing_requests=max(16, 2 * s.max_batch_size),
        ray_actor_options={
            "num_cpus": s.num_cpus_per_replica,
            "num_gpus": s.num_gpus_per_replica,
            "runtime_env": {"env_vars": actor_env(cfg)},
        },
    ).bind(cfg, model_path, skills_dir)


def start(cfg: Config, model_path: str, skills_dir: str | None, name: str = "evorl") -> str:
    """Start Serve on cfg.serve.host:port (Ray started or joined per cfg.cluster); returns the base URL."""
    import ray

    from cluster.placement import init_ray

    if not ray.is_initialized():
        init_ray(cfg)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(build_app(cfg, model_path, skills_dir), name=name, route_prefix="/")
    return f"http://{cfg.serve.host}:{cfg.serve.port}"
