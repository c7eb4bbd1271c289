"""`evorl serve` (the agent behind HTTP, cluster/serving/app.py) and `evorl play` (a client that plays
whole episodes through a served agent on real games and reports the success rate)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger("evorl.play")


def add_commands(sub, data_sub) -> None:
    p = sub.add_parser("serve", help="serve the trained agent with its skill library (Ray Serve)")
    p.add_argument("--checkpoint", default="embedded",
                   help="HF folder, checkpoint (iter-*) or run folder (its newest checkpoint)")  # fmt: skip
    p.add_argument("--skills", default=None, help="skill library folder (its accepted skills are retrieved)")
    p.add_argument("--config", default=None, help="YAML config (sections serve, engine, env, skills, model)")
    p.add_argument("--host", default=None, help="bind address (default serve.host = 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default serve.port)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.set_defaults(func=cmd_serve)

    q = sub.add_parser("play", help="play whole episodes through a served agent and report success")
    q.add_argument("--endpoint", required=True, help="base URL of `evorl serve`, e.g. http://127.0.0.1:8000")
    q.add_argument("--env", choices=["alfworld", "mind2web"], default="alfworld")
    q.add_argument("--games", default=None,
                   help="ALFWorld: folder of games (a split folder, or a data folder with --split); "
                        "Mind2Web: data folder (default: the bundled sample)")  # fmt: skip
    q.add_argument("--split", default="train", help="split subfolder when --games holds several")
    q.add_argument("--max-steps", type=int, default=30)
    q.add_argument("--max-games", type=int, default=0, help="play at most this many (0 = all)")
    q.add_argument("--parallel", type=int, default=4, help="episodes in flight (the server batches them)")
    q.add_argument("--history", type=int, default=8, help="previous (action, observation) pairs sent")
    q.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    q.add_argument("--token-file", default=None,
                   help="file with the server's bearer token (serve.token_file); default $EVORL_TOKEN_FILE")  # fmt: skip
    q.add_argument("--out", default=None, help="write the report as JSON here")
    q.set_defaults(func=cmd_play)


def cmd_serve(args: argparse.Namespace) -> int:
    from cluster.core.config import ConfigError, load_config

    overrides = list(args.set)
    if args.host:
        overrides.append(f"serve.host={args.host}")
    if args.port:
        overrides.append(f"serve.port={args.port}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from cluster.serving.agent import model_from_checkpoint
    from cluster.serving.app import start

    try:
        model = model_from_checkpoint(args.checkpoint)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.skills and not Path(args.skills).is_dir():
        print(f"error: --skills {args.skills}: no such library folder", file=sys.stderr)
        return 2
    from cluster.serving.app import read_token

    try:  # an unusable token file fails here, not later inside the Serve replica
        read_token(cfg.serve.token_file)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.serve.token_file:  # the replica reads it again, from its own working directory
        cfg.serve.token_file = str(Path(cfg.serve.token_file).absolute())
    if cfg.serve.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"[evorl] serving on {cfg.serve.host}: reachable from other machines (bearer token required)")
    elif not cfg.serve.token_file:
        print("[evorl] no serve.token_file: any local process may call the agent")
    url = start(cfg, model, args.skills)
    print(f"[evorl] serving {model} (skills: {args.skills or 'none'}) at {url}  (POST /act, "
          f"POST /v1/chat/completions, GET /health); Ctrl-C to stop", flush=True)  # fmt: skip
    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("[evorl] stopping", flush=True)
    finally:
        import ray
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return 0


# --------------------------------------------------------------------------------------------- play


class EndpointError(RuntimeError):
    pass


def post_json(url: str, payload: dict, timeout: float, token: str = "") -> dict:
    """POST JSON, return the decoded answer; an HTTP error raises EndpointError with the server's message."""
    data = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")[:500]
        raise EndpointError(f"{url}: HTTP {e.code}: {body}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise EndpointError(f"{url}: {e}") from None


@dataclass
class EpisodeReport:
    task_id: str
    task_type: str
    won: bool
    steps: int
    invalid_actions: int = 0
    skills_used: list[str] = field(default_factory=list)
    latency_s: float = 0.0  # summed request latency
    error: str = ""


def play_episode(
    endpoint: str, env, task, args: argparse.Namespace, env_lock: threading.Lock | None = None
) -> EpisodeReport:
    """One episode: reset, then request an action per step until the env ends it or max-steps.

    `env_lock` serialises env calls across episode threads: ALFWorld's PDDL loading is not
    thread-safe; only the HTTP requests overlap (which is what lets the server batch them)."""
    lock = env_lock or threading.Lock()
    rep = EpisodeReport(task.task_id, task.task_type, False, 0)
    try:
        with lock:
            obs = env.reset(task)
    except Exception as e:
        rep.error = f"reset: {type(e).__name__}: {e}"
        return rep
    history: list[list[str]] = []
    steps: list[dict] = []  # the episode so far as the env showed it (the sequence context's prompt)
    skills: set[str] = set()
    while rep.steps < args.max_steps:
        body = {
            "env": args.env,
            "task": obs.task_text or task.text,
            "task_type": task.task_type,
            "observation": obs.text,
            "steps": steps,
            "admissible_actions": obs.admissible_actions,
            "history": history[-args.history :] if args.history else [],
        }
        t0 = time.perf_counter()
        try:
            ans = post_json(f"{endpoint}/act", body, args.timeout, getattr(args, "token", ""))
        except EndpointError as e:
            rep.error = str(e)
            break
        rep.latency_s += time.perf_counter() - t0
        skills.update(s["name"] for s in ans.get("skills_used", []))
        try:
            with lock:
                step = env.step(ans["action"])
        except Exception as e:
            rep.error = f"step({ans['action']!r}): {type(e).__name__}: {e}"
            break
        rep.steps += 1
        rep.invalid_actions += int(step.invalid_action)
        history.append([ans["action"], step.observation.text])
        steps.append(
            {"observation": obs.text, "admissible_actions": obs.admissible_actions, "action": ans["action"]}
        )
        obs = step.observation
        if step.done:
            rep.won = bool(step.won)
            break
    rep.skills_used = sorted(skills)
    return rep


def _tasks(args: argparse.Namespace) -> list:
    if args.env == "alfworld":
        from envs.alfworld.tasks import list_tasks, scan_games

        if not args.games:
            raise FileNotFoundError("--games is required for --env alfworld")
        root = Path(args.games)
        if (root / args.split).is_dir():
            return list_tasks(str(root), args.split)
        from cluster.core.records import TaskSpec

        games = scan_games(str(root)).games
        return [
            TaskSpec(
                f"{args.split}/{g.task_id}",
                "alfworld",
                g.task_type,
                g.task_text,
                str(Path(g.game_file).resolve()),
                args.split,
            )  # fmt: skip
            for g in games
        ]
    from envs.mind2web.tasks import SAMPLE_DIR, list_tasks

    return list_tasks(Path(args.games) if args.games else SAMPLE_DIR, args.split)


def _make_env(args: argparse.Namespace):
    if args.env == "alfworld":
        from envs.alfworld.env import AlfWorldEnv

        return AlfWorldEnv(max_steps=args.max_steps)
    from envs.mind2web.env import Mind2WebEnv

    return Mind2WebEnv(max_steps=args.max_steps)


def client_token(path: str) -> str:
    """The bearer token `evorl play` sends ("" = none). A named file that cannot be read or is empty
    is an error here, not a 401 on every request."""
    if not path:
        return ""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--token-file {path}: {getattr(e, 'strerror', None) or e}") from e
    if not token:
        raise ValueError(f"--token-file {path}: the file is empty")
    return token


def cmd_play(args: argparse.Namespace) -> int:
    endpoint = args.endpoint.rstrip("/")
    if args.max_steps < 1 or args.parallel < 1:
        print("error: --max-steps and --parallel must be >= 1", file=sys.stderr)
        return 2
    try:
        tasks = _tasks(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        args.token = client_token(args.token_file or os.environ.get("EVORL_TOKEN_FILE", ""))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.max_games:
        tasks = tasks[: args.max_games]
    if not tasks:
        print(f"error: no games found in {args.games}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(f"{endpoint}/health", timeout=args.timeout) as r:
            health = json.loads(r.read())
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        print(f"error: {endpoint}/health: {e}", file=sys.stderr)
        return 2
    local = threading.local()
    envs: list = []
    env_lock = threading.Lock()

    def run(task) -> EpisodeReport:
        if not hasattr(local, "env"):
            with env_lock:
                local.env = _make_env(args)
                envs.append(local.env)
        return play_episode(endpoint, local.env, task, args, env_lock)

    t0 = time.perf_counter()
    reports: list[EpisodeReport] = []
    with ThreadPoolExecutor(min(args.parallel, len(tasks))) as pool:
        for rep in pool.map(run, tasks):
            reports.append(rep)
            status = "WON " if rep.won else ("ERROR" if rep.error else "lost")
            print(f"{status} {rep.task_id}  steps={rep.steps} invalid={rep.invalid_actions} "
                  f"skills={','.join(rep.skills_used) or '-'}{'  ' + rep.error if rep.error else ''}",
                  flush=True)  # fmt: skip
    wall = time.perf_counter() - t0
    for env in envs:
        env.close()
    done = [r for r in reports if not r.error]
    steps = sum(r.steps for r in reports)
    summary = {
        "endpoint": endpoint,
        "env": args.env,
        "games": len(reports),
        "completed": len(done),
        "errors": len(reports) - len(done),
        "won": sum(r.won for r in reports),
        "success_rate": sum(r.won for r in reports) / len(reports),
        "mean_steps": steps / len(reports),
        "requests": steps,
        "mean_request_latency_s": sum(r.latency_s for r in reports) / max(1, steps),
        "wall_s": wall,
        "max_steps": args.max_steps,
        "server": health,
    }
    by_type: dict[str, list[int]] = {}
    for r in reports:
        by_type.setdefault(r.task_type, [0, 0])
        by_type[r.task_type][0] += int(r.won)
        by_type[r.task_type][1] += 1
    summary["by_type"] = {k: {"won": w, "games": n} for k, (w, n) in sorted(by_type.items())}
    print(f"success rate {summary['won']}/{len(reports)} = {summary['success_rate']:.3f}  "
          f"(errors {summary['errors']}, {steps} requests, mean latency "
          f"{summary['mean_request_latency_s'] * 1000:.0f} ms, {wall:.1f} s)")  # fmt: skip
    if args.out:
        from cluster.core.storage import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps({**summary, "episodes": [asdict(r) for r in reports]},
                                                     indent=1) + "\n")  # fmt: skip
    return 1 if summary["errors"] else 0
