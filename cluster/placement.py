"""Ray start-up and placement: local or cluster, dashboard and metrics bound to loopback by default."""

from __future__ import annotations

import logging
import os

from cluster.core.config import Config

log = logging.getLogger("evorl.placement")

# Environment every actor needs: offline hubs, in-process vLLM on CPU, caches in known folders.
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


def actor_env(cfg: Config) -> dict[str, str]:
    from cluster.core.model_store import project_cache

    cache = str(project_cache())
    env = {
        "EVORL_CACHE": cache,
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1"),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": str(max(1, int(cfg.engine.kv_cache_gib))),
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", f"{cache}/torch_extensions"),
        "ALFWORLD_DATA": os.environ.get("ALFWORLD_DATA", f"{cache}/alfworld"),
    }
    for k in ACTOR_ENV_KEYS:
        if k in os.environ:
            env.setdefault(k, os.environ[k])
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
            try:
                s.bind(("127.0.0.1", candidate))
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
