"""What every benchmark shares: the process environment, the machine record, A/B interleaving, results.

Every figure is a ratio against a baseline doing the same work in the same run: arms run A, B, A, B,
... (`interleave`) so that load drift on the shared machine hits both, the load average is recorded
around each repeat, and medians are reported with every repeat kept.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
for k, v in {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "EVORL_CACHE": str(ROOT / ".cache"),
    "TORCH_EXTENSIONS_DIR": str(ROOT / ".cache" / "torch_extensions"),
    "ALFWORLD_DATA": str(ROOT / ".cache" / "alfworld"),
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(k, v)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def speed_probe(threads: int = 0, seconds: float = 2.0) -> float:
    """fp32 matmul GFLOP/s on `threads` torch threads (0 = every core), measured now. The host is
    shared: the same workload ran 30% slower an hour apart here with no load inside the machine, so an
    absolute figure (the quickstart's wall time) is recorded with the speed it ran at."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    a = torch.randn(1024, 1024)
    try:
        torch.mm(a, a)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            torch.mm(a, a)
            n += 1
        return round(n * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9, 1)
    finally:
        torch.set_num_threads(prev)


# The ISA extensions that decide CPU matmul speed (fast bf16 needs one of the last two).
ISA = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model and the ISA extensions in ISA: hosts behind the same "2 cores" differ (an AVX2-only
    host ran the SFT start 3.5x slower than an AVX512-BF16 one), so a wall time names its host. `isa` is
    None when cpuinfo cannot be read: unknown, not "none of them"."""
    try:
        info = cpuinfo.read_text()
    except OSError:
        return {"model": platform.processor() or "unknown", "isa": None}
    fields = {
        k.strip(): v.strip() for k, v in (line.split(":", 1) for line in info.splitlines() if ":" in line)
    }
    flags = set(fields.get("flags", "").lower().split())
    return {"model": fields.get("model name", "unknown"), "isa": [f for f in ISA if f in flags]}


def machine() -> dict:
    import torch

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": cpu(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "load_average_1m": load(),
        "matmul_gflops": speed_probe(),
    }


def interleave(arms: dict[str, Callable[[], dict]], repeats: int, warmup: int = 1) -> dict[str, list[dict]]:
    """Run every arm `warmup` times (discarded), then `repeats` rounds of every arm in turn; each call
    returns a dict of measures, kept with the load average before it."""
    for _ in range(warmup):
        for fn in arms.values():
            fn()
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for r in range(repeats):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]  # A B, B A, A B: no arm always first
        for name in order:
            before = load()
            t0 = time.perf_counter()
            out = arms[name]()
            runs[name].append({"repeat": r, "load_before": before, "wall_s": time.perf_counter() - t0, **out})
    return runs


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def write(name: str, payload: dict, markdown: str) -> Path:
    """benchmarks/results/<name>.json and .md, atomically."""
    from cluster.core.storage import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(payload, indent=1, sort_keys=True) + "\n")
    atomic_write_text(RESULTS / f"{name}.md", markdown.rstrip() + "\n")
    print(markdown)
    return RESULTS / f"{name}.json"


def verdict(value: float, target: str, ok: bool) -> str:
    return f"{value:.2f} (target {target}: {'met' if ok else 'MISSED'})"
