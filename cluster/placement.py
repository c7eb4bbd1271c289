"""Ray start-up and placement: local or cluster, dashboard and metrics bound to loopback by default."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cluster.core.config import Config

log = logging.getLogger("evorl.placement")

# Environment every actor needs: in-process vLLM on CPU, caches in known folders, the hubs offline
# when every model is local (a hub id is downloaded by the node that loads it).
ACTOR_ENV_KEYS = (
    "EVORL_CACHE",
    "EVORL_MODEL_DIR",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "VLLM_ENABLE_V1_MULTIPROCESSING",
    "VLLM_CPU_KVCACHE_SPACE",
    "TORCH_EXTENSIONS_DIR",
    "ALFWORLD_DATA",
)
OFFLINE_KEYS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def is_local_model(path: str) -> bool:
    """model.path names files, not a hub id: "embedded", an existing folder, or a path spelled as one
    (absolute, ./, ../, ~: a shared mount the driver may not see)."""
    from cluster.core.model_store import EMBEDDED

    return (
        path == EMBEDDED
        or path.startswith(("/", "./", "../", "~"))
        or os.path.isdir(os.path.expanduser(path))
    )


def make_paths_absolute(cfg: Config) -> None:
    """Relative paths in the config become absolute against this process's working folder, before
    any actor starts: a Ray job's actors run in per-node working folders where a relative path
    names something else (or nothing)."""

    def absolute(p: str) -> str:
        return str(Path(p).expanduser().absolute()) if p else p

    cfg.trainer.run_dir = absolute(cfg.trainer.run_dir)
    cfg.env.data_dir = absolute(cfg.env.data_dir)
    if cfg.serve.token_file:
        cfg.serve.token_file = absolute(cfg.serve.token_file)
    from cluster.core.model_store import EMBEDDED

    if cfg.model.path != EMBEDDED and is_local_model(cfg.model.path):
        cfg.model.path = absolute(cfg.model.path)


def _job_env_vars() -> dict[str, str]:
    """env_vars of the Ray job this driver runs in (`ray job submit --runtime-env`), else {}."""
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        env = (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}


def actor_env(cfg: Config) -> dict[str, str]:
    """The env_vars every actor gets. HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE: as this process has them
    if set, else "1" only when model.path is local (a hub id downloads). Keys the Ray job's own
    runtime env sets are left to it: Ray refuses a driver runtime env that repeats one of them, and
    the actors inherit the job's values anyway."""
    from cluster.core.model_store import project_cache

    cache = str(project_cache())
    env = {
        "EVORL_CACHE": cache,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": str(max(1, int(cfg.engine.kv_cache_gib))),
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", f"{cache}/torch_extensions"),
        "ALFWORLD_DATA": os.environ.get("ALFWORLD_DATA", f"{cache}/alfworld"),
    }
    # Actors log warnings and errors (they reach the console and `ray job logs`); INFO with -v.
    level = "INFO" if os.environ.get("EVORL_VERBOSE") == "1" else "WARNING"
    env.update(EVORL_LOG_LEVEL=level, VLLM_LOGGING_LEVEL=os.environ.get("VLLM_LOGGING_LEVEL", level))
    if is_local_model(cfg.model.path):
        env.update({k: "1" for k in OFFLINE_KEYS})
    for k in ACTOR_ENV_KEYS:
        if k in os.environ:
            env[k] = os.environ[k] if k in OFFLINE_KEYS else env.get(k, os.environ[k])
    job = _job_env_vars()
    for k in set(env) & set(job):
        if env[k] != job[k]:
            log.warning(
                "%s: the Ray job's runtime env sets %r; actors use it instead of %r", k, job[k], env[k]
            )
        del env[k]
    return env


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def local_node_on_loopback() -> None:
    """Make a local (single-node) Ray advertise 127.0.0.1 instead of the machine's address.

    On Linux Ray resolves its node IP to a reachable interface even when told 127.0.0.1, and its
    Prometheus metrics endpoint then listens on every interface (0.0.0.0). Ray's own switch for
    single-machine mode (the one it uses on macOS and Windows) keeps every Ray service, the metrics
    endpoint included, on loopback. Only for a Ray this process starts; `cluster.address` runs and a
    non-loopback `cluster.dashboard_host` are left alone.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by Ray at import and by its children
    import ray._private.ray_constants as rc

    rc.ENABLE_RAY_CLUSTER = False  # in case ray was imported before this call


def metrics_port(port: int) -> int:
    """`port` if it is free on this host, else a free one (logged): a second local run (a test, a
    benchmark next to a training job) must not fail to start because the first holds Ray's 8080.
    0 always picks a free port."""
    import socket

    for candidate in (port, 0) if port else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # as the metrics server binds: connections of a run that just ended (TIME_WAIT) do not
            # make the port taken, a listening socket does
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", candidate))
                s.listen()
            except OSError:
                continue
            free = s.getsockname()[1]
        if candidate != port:
            log.warning(
                "cluster.metrics_export_port %d is in use; Ray metrics on port %d instead", port, free
            )
        return free
    raise OSError("no free TCP port on 127.0.0.1")  # unreachable on a working host


def init_ray(cfg: Config) -> None:
    """Join cluster.address (or start a local Ray) and print where the dashboard is."""
    import ray

    if ray.is_initialized():
        return
    c = cfg.cluster
    kwargs: dict = {"runtime_env": {"env_vars": actor_env(cfg)}, "log_to_driver": True}
    if c.address:
        ray.init(address=c.address, **kwargs)
    elif os.environ.get("RAY_ADDRESS"):  # a `ray job submit` driver: join the job's cluster as it is
        ray.init(**kwargs)
    else:
        if c.dashboard_host in LOOPBACK:
            local_node_on_loopback()
        ray.init(
            include_dashboard=c.include_dashboard,
            dashboard_host=c.dashboard_host,
            dashboard_port=c.dashboard_port,
            _metrics_export_port=metrics_port(c.metrics_export_port),
            **kwargs,
        )
    ctx = ray.get_runtime_context()
    url = getattr(ray, "_private", None) and ray._private.worker.global_worker.node.address_info.get(
        "webui_url"
    )
    log.info("Ray %s: dashboard %s (token auth: see README)", ctx.gcs_address, url or "n/a")
    print(f"[evorl] Ray dashboard: http://{url}" if url else "[evorl] Ray dashboard disabled")
