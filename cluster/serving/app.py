"""The trained agent behind HTTP: a Ray Serve application of the solver with skill retrieval.

Routes (one ingress deployment, `serve.num_replicas` replicas, CPU or GPU per `serve.*`):
    POST /act                  {task, observation | page, admissible_actions, history, ...} -> {action, skills_used, raw_text, ...}
    POST /v1/chat/completions  OpenAI-compatible chat on the same model (no skills, no constraints)
    GET  /v1/models, GET /health
One replica = one AgentCore (cluster/serving/agent.py). Concurrent /act requests are folded into one
engine call (`serve.batch`); all engine work runs on one worker thread of the replica so the event
loop keeps answering (and rejecting) requests meanwhile. Bad input never reaches the engine: 400
unreadable JSON, 413 oversized body, 422 wrong/missing fields, each with a message naming the field.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from cluster.core.config import Config
from cluster.serving.agent import AgentCore
from cluster.serving.api import AgentRequest, RequestError, decode_body, parse_request

log = logging.getLogger("evorl.serve")

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
