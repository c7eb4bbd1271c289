"""ALFWorld env benchmark: reset/step latency and the success rate of a uniform-random policy per task type and preset (the curriculum's starting point).

It measures the real ALFWorld engine (envs.alfworld.env.AlfWorldEnv) in this process, as a rollout
worker steps it in-process (there are no separate env actors).

    .venv/bin/python benchmarks/alfworld_env.py [--per-type 4] [--episodes 2]

Writes benchmarks/results/alfworld_env.{json,md}; absolute numbers depend on the machine and its load
(recorded with the results).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ALFWORLD_DATA", str(ROOT / ".cache" / "alfworld"))

from cluster.core.storage import atomic_write_text  # noqa: E402
from envs.alfworld.generator import generate  # noqa: E402
from envs.alfworld.tasks import TASK_TYPES, list_tasks  # noqa: E402

PRESETS = ("easy", "standard")
PARTS = ("latency", "random")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def latency(tasks: list, steps_per_game: int, seed: int) -> dict:
    """First reset of a game (load + reset), repeated reset of the same game, and random steps."""
    from envs.alfworld.env import AlfWorldEnv

    rng = random.Random(seed)
    env = AlfWorldEnv(max_steps=10_000)
    first, again, steps, admissible = [], [], [], []
    for task in tasks:
        t0 = time.perf_counter()
        obs = env.reset(task)
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        obs = env.reset(task)
        again.append(time.perf_counter() - t0)
        for _ in range(steps_per_game):
            admissible.append(len(obs.admissible_actions))
            action = rng.choice(obs.admissible_actions)
            t0 = time.perf_counter()
            res = env.step(action)
            steps.append(time.perf_counter() - t0)
            obs = res.observation
            if res.done:
                obs = env.reset(task)
    env.close()
    ms = 1000.0
    return {
        "games": len(tasks),
        "reset_new_game_ms": {"mean": statistics.mean(first) * ms, "p95": pct(first, 0.95) * ms},
        "reset_same_game_ms": {"mean": statistics.mean(again) * ms, "p95": pct(again, 0.95) * ms},
        "step_ms": {
            "mean": statistics.mean(steps) * ms,
            "p50": pct(steps, 0.5) * ms,
            "p95": pct(steps, 0.95) * ms,
        },
        "steps": len(steps),
        "admissible_per_step": statistics.mean(admissible),
    }


_ENV = None


def random_episode(args: tuple) -> tuple[str, str, bool, int]:
    """One uniform-random episode over the admissible actions; (preset, task type, won, steps)."""
    global _ENV
    preset, task, seed, max_steps = args
    from envs.alfworld.env import AlfWorldEnv

    if _ENV is None:
        _ENV = AlfWorldEnv(max_steps=max_steps)
    rng = random.Random(f"{seed}/{task.task_id}")
    obs = _ENV.reset(task)
    while True:
        res = _ENV.step(rng.choice(obs.admissible_actions))
        obs = res.observation
        if res.done:
            return preset, task.task_type, res.won, res.info["steps"]


def random_policy(tasks_by_preset: dict, episodes: int, max_steps: int, workers: int) -> dict:
    jobs = [
        (p, t, s, max_steps) for p, tasks in tasks_by_preset.items() for t in tasks for s in range(episodes)
    ]
    with mp.get_context("spawn").Pool(workers) as pool:
        results = pool.map(random_episode, jobs, chunksize=1)
    out: dict = {p: {t: {"won": 0, "episodes": 0} for t in TASK_TYPES} for p in tasks_by_preset}
    for preset, ttype, won, _ in results:
        out[preset][ttype]["won"] += int(won)
        out[preset][ttype]["episodes"] += 1
    for preset in out:
        for cell in out[preset].values():
            cell["rate"] = cell["won"] / cell["episodes"] if cell["episodes"] else 0.0
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# ALFWorld env benchmark",
        "",
        f"{res['date']} on {m['cpus']} CPU cores ({m['platform']}), load average at start {m['loadavg']}; "
        f"`benchmarks/alfworld_env.py --per-type {res['args']['per_type']} --episodes {res['args']['episodes']}`.",
        "Runs (date, parts, load average): "
        + "; ".join(f"{h['date']} {'+'.join(h['parts'])} {h['loadavg']}" for h in res.get("history", [])),
        "",
        "## Latency (one AlfWorldEnv, random admissible actions)",
        "",
        "| preset | reset, new game (ms) | reset, same game (ms) | step mean / p95 (ms) | admissible actions per step |",
        "|---|---|---|---|---|",
    ]
    for p, lat in res["latency"].items():
        lines.append(
            f"| {p} | {lat['reset_new_game_ms']['mean']:.0f} | {lat['reset_same_game_ms']['mean']:.0f} | "
            f"{lat['step_ms']['mean']:.1f} / {lat['step_ms']['p95']:.1f} | {lat['admissible_per_step']:.1f} |"
        )
    lines += [
        "",
        f"## Uniform-random policy success ({res['args']['max_steps']} steps, "
        f"{res['args']['episodes']} episodes per game, {res['args']['per_type']} games per type and preset)",
        "",
        "| task type | " + " | ".join(res["random_policy"]) + " |",
        "|---|" + "---|" * len(res["random_policy"]),
    ]
    for t in TASK_TYPES:
        cells = [
            f"{c['won']}/{c['episodes']} ({100 * c['rate']:.0f}%)"
            for c in (res["random_policy"][p][t] for p in res["random_policy"])
        ]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    gen = res["generation"]
    lines += [
        "",
        "## Generation",
        "",
        "| preset | games | seconds | workers |",
        "|---|---|---|---|",
    ]
    lines += [f"| {p} | {g['games']} | {g['seconds']:.1f} | {g['workers']} |" for p, g in gen.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-type", type=int, default=4)
    ap.add_argument("--episodes", type=int, default=2, help="random-policy episodes per game")
    ap.add_argument("--max-steps", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "alfworld_env"))
    ap.add_argument("--parts", default=",".join(PARTS), help="rerun only these parts, keep the rest")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the existing .json")
    args = ap.parse_args()
    if args.render_only:
        with open(args.results + ".json", encoding="utf-8") as f:
            atomic_write_text(args.results + ".md", markdown(json.load(f)))
        return

    parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        ap.error(f"--parts: unknown {sorted(unknown)}; expected a subset of {PARTS}")
    now = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "parts": sorted(parts),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    res: dict = {}
    if parts != set(PARTS) and os.path.exists(args.results + ".json"):
        with open(args.results + ".json", encoding="utf-8") as f:
            res = json.load(f)  # rerun some parts, keep the others
    res.setdefault("history", []).append(now)
    res.update(
        {
            "date": now["date"],
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "loadavg": now["loadavg"],
            },
            "args": vars(args),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        tasks_by_preset: dict[str, list] = {}
        res.setdefault("generation", {})
        for p in PRESETS:
            t0 = time.perf_counter()
            rep = generate(
                f"{tmp}/{p}", args.per_type, seed=args.seed, preset=p, workers=args.workers, splits=["train"]
            )
            res["generation"][p] = {
                "games": rep.total,
                "seconds": time.perf_counter() - t0,
                "workers": args.workers,
            }
            tasks_by_preset[p] = list_tasks(f"{tmp}/{p}", "train")
            print(f"[bench] generated {rep.total} {p} games", flush=True)
        if "latency" in parts:
            res["latency"] = {
                p: latency(ts, steps_per_game=20, seed=args.seed) for p, ts in tasks_by_preset.items()
            }
            print(f"[bench] latency {json.dumps(res['latency'])}", flush=True)
        if "random" in parts:
            res["random_policy"] = random_policy(tasks_by_preset, args.episodes, args.max_steps, args.workers)
            print("[bench] random policy done", flush=True)

    atomic_write_text(args.results + ".json", json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    atomic_write_text(args.results + ".md", md)
    print(md)


if __name__ == "__main__":
    main()
