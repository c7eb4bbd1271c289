"""Test-wide environment: offline hubs, in-process vLLM, caches in the project's .cache."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EVORL_CACHE", ROOT / ".cache"))
os.environ.setdefault("EVORL_CACHE", str(CACHE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(CACHE / "torch_extensions"))
os.environ.setdefault("ALFWORLD_DATA", str(CACHE / "alfworld"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.chdir(ROOT)


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _no_ray_across_modules():
    """A module that leaves Ray running would hand the next module's `init_ray` a session started
    with other settings (its metrics port, its runtime env): every module starts and ends without one."""
    import sys

    def stop() -> None:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()

    stop()
    yield
    stop()
