"""vLLM engine statistics as flat dicts of floats, for the run's metrics.

vLLM (0.32, V1 engine) keeps its statistics in prometheus_client's in-process registry, and
`LLM.get_metrics()` snapshots it (a few ms). The engine records them only when built with
`disable_log_stats=False` (`vllm.LLM` defaults to True); without that, `engine_stats` returns {}.
Counters and histograms are totals since the engine started: `delta` turns two snapshots into one
interval's numbers and `combine` adds up several workers' intervals.
"""

from __future__ import annotations

from typing import Any

COUNTERS = (
    "prompt_tokens",
    "generation_tokens",
    "prefix_cache_queries",  # prompt tokens looked up in the prefix cache
    "prefix_cache_hits",  # ... and found there
    "num_preemptions",
    "request_success",  # finished requests, all finish reasons
)
GAUGES = ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc")
HISTOGRAMS = (  # seconds per request: <name>_sum and <name>_count, and their <name>_mean
    "time_to_first_token_seconds",
    "e2e_request_latency_seconds",
    "request_queue_time_seconds",
    "request_prefill_time_seconds",
    "request_decode_time_seconds",
)
_TOTALS = COUNTERS + tuple(f"{h}_{p}" for h in HISTOGRAMS for p in ("sum", "count"))


def engine_stats(llm: Any) -> dict[str, float]:
    """Totals and current gauges of a `vllm.LLM`, summed over label sets (engines, finish reasons)."""
    engine = getattr(llm, "llm_engine", None)
    if engine is None or not getattr(engine, "log_stats", False):
        return {}  # not vLLM, or built with disable_log_stats=True
    out: dict[str, float] = {}
    for m in llm.get_metrics():
        name = m.name.removeprefix("vllm:")
        if name in COUNTERS or name in GAUGES:
            out[name] = out.get(name, 0.0) + float(m.value)
        elif name in HISTOGRAMS:
            out[f"{name}_sum"] = out.get(f"{name}_sum", 0.0) + float(m.sum)
            out[f"{name}_count"] = out.get(f"{name}_count", 0.0) + float(m.count)
    return _derive(out)


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The interval between two `engine_stats` snapshots of one engine; gauges as of `after`."""
    out = {
        k: v - before.get(k, 0.0) if k in _TOTALS else v for k, v in after.items() if k in _TOTALS + GAUGES
    }
    return _derive(out)


def combine(parts: list[dict[str, float]]) -> dict[str, float]:
    """Several engines' intervals as one: totals and request gauges add up, KV-cache use averages."""
    out: dict[str, float] = {}
    for p in parts:
        for k in _TOTALS + GAUGES:
            if k in p:
                out[k] = out.get(k, 0.0) + p[k]
    if parts and "kv_cache_usage_perc" in out:
        out["kv_cache_usage_perc"] /= sum("kv_cache_usage_perc" in p for p in parts)
    return _derive(out)


def _derive(d: dict[str, float]) -> dict[str, float]:
    if d.get("prefix_cache_queries"):
        d["prefix_cache_hit_rate"] = d.get("prefix_cache_hits", 0.0) / d["prefix_cache_queries"]
    for h in HISTOGRAMS:
        if d.get(f"{h}_count"):
            d[f"{h}_mean"] = d[f"{h}_sum"] / d[f"{h}_count"]
    return d
