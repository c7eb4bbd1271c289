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
import hmac
import logging
import os
import time
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


def _error(e: RequestError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": str(e), "code": e.status}}, status_code=e.status, headers=headers
    )


def read_token(path: str) -> str:
    """The bearer token of `serve.token_file` (whitespace stripped); a clear error if unusable."""
    token = Path(path).read_text().strip() if path else ""
    if path and len(token) < 16:
        raise ValueError(f"serve.token_file {path}: expected a token of at least 16 characters")
    return token


@serve.deployment(name="EvorlAgent")
@serve.ingress(app)
class AgentServer:
    """One replica: AgentCore on a single worker thread, /act requests batched through serve.batch.

    Every route but /health needs `Authorization: Bearer <token>` when serve.token_file is set (it must
    be beyond loopback); more than serve.max_queue requests in flight answer 503, a request not answered
    within serve.request_timeout_s answers 504; a body is read chunk by chunk and refused (413) as soon
    as it passes serve.max_request_chars."""

    def __init__(self, cfg: Config, model_path: str, skills_dir: str | None) -> None:
        logging.basicConfig(level=os.environ.get("EVORL_LOG_LEVEL", "INFO"))
        self.cfg = cfg
        self.token = read_token(cfg.serve.token_file)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="evorl-engine")  # the engine is not thread-safe
        self.core = self._pool.submit(AgentCore, cfg, model_path, skills_dir).result()
        self._pool.submit(self.core.warmup).result()
        self._act.set_max_batch_size(cfg.serve.max_batch_size)
        self._act.set_batch_wait_timeout_s(cfg.serve.batch_wait_timeout_s)
        self.model_name = Path(model_path).name
        self.in_flight = 0

    async def _run(self, fn, *args, deadline: float | None = None):
        """`fn` on the engine thread. Work still queued at its `deadline` (monotonic) is skipped: its
        client has had its 504, and running it would only hold up the requests queued after it."""

        def call():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("expired while queued for the engine")
            return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _act(self, reqs: list[AgentRequest]) -> list[dict | RequestError]:
        return await self._run(self.core.act_batch, reqs)

    async def _body(self, request: Request) -> Any:
        limit = self.cfg.serve.max_request_chars
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise RequestError(413, f"request body of {length} bytes exceeds serve.max_request_chars={limit}")
        chunks, size = [], 0
        async for chunk in request.stream():  # chunked bodies too: never more than the limit in memory
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"request body exceeds serve.max_request_chars={limit}")
            chunks.append(chunk)
        return decode_body(b"".join(chunks), limit)

    def _authorized(self, request: Request) -> bool:
        if not self.token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    async def _guarded(self, request: Request, handle) -> JSONResponse:
        """Auth, the queue bound and the deadline around one request; errors as JSON."""
        if not self._authorized(request):
            return _error(RequestError(401, "missing or wrong bearer token"), {"WWW-Authenticate": "Bearer"})
        if self.in_flight >= self.cfg.serve.max_queue:
            return _error(
                RequestError(503, f"overloaded: {self.in_flight} requests in flight"), {"Retry-After": "1"}
            )
        self.in_flight += 1
        try:
            return JSONResponse(await asyncio.wait_for(handle(), self.cfg.serve.request_timeout_s))
        except RequestError as e:
            return _error(e)
        except TimeoutError:
            return _error(
                RequestError(
                    504, f"no answer within serve.request_timeout_s={self.cfg.serve.request_timeout_s:g}"
                )
            )
        except Exception as e:  # an engine failure answers 500; the replica stays up
            log.exception("request failed")
            return _error(RequestError(500, f"{type(e).__name__}: {e}"))
        finally:
            self.in_flight -= 1

    @app.post("/act")
    async def act(self, request: Request) -> JSONResponse:
        async def handle():
            result = await self._act(parse_request(await self._body(request), self.cfg.env.name))
            if isinstance(result, RequestError):
                raise result
            return result

        return await self._guarded(request, handle)

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> JSONResponse:
        deadline = time.monotonic() + self.cfg.serve.request_timeout_s

        async def handle():
            return await self._run(self.core.chat, await self._body(request), deadline=deadline)

        return await self._guarded(request, handle)

    @app.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        async def handle():
            return {
                "object": "list",
                "data": [{"id": self.model_name, "object": "model", "owned_by": "evorl"}],
            }

        return await self._guarded(request, handle)

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok", "model": self.model_name, "skills": self.core.n_skills,
                "policy_version": self.core.policy_version, "in_flight": self.in_flight}  # fmt: skip


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

    from cluster.placement import init_ray, make_paths_absolute

    make_paths_absolute(cfg)
    if not ray.is_initialized():
        init_ray(cfg)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(build_app(cfg, model_path, skills_dir), name=name, route_prefix="/")
    return f"http://{cfg.serve.host}:{cfg.serve.port}"
