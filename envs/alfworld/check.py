"""Play the planner on every game of a folder: a solvability check and expert demonstrations.

Games are found with alfworld's own rules (tasks.scan_games), loaded through the same engine stack
as AlfredTWEnv, and solved by Fast Downward from the start state, never from a stored walkthrough,
so this works for any folder of ALFWorld-format games.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from envs.alfworld.tasks import GAME_FILE, TASK_TYPES, TRAJ_FILE, GameEntry, scan_games


@dataclass
class GameCheck:
    task_id: str
    task_type: str
    won: bool
    steps: int
    error: str = ""
    task_text: str = ""
    demo: list[dict[str, Any]] = field(default_factory=list)  # [{observation, admissible_actions, action}]


@dataclass
class CheckReport:
    root: str
    games: list[GameCheck]
    skipped: dict[str, int]

    @property
    def won(self) -> int:
        return sum(g.won for g in self.games)

    def by_type(self) -> dict[str, tuple[int, int]]:
        out: dict[str, list[int]] = {}
        for g in self.games:
            out.setdefault(g.task_type, [0, 0])
            out[g.task_type][0] += int(g.won)
            out[g.task_type][1] += 1
        order = [t for t in TASK_TYPES if t in out] + sorted(t for t in out if t not in TASK_TYPES)
        return {t: (out[t][0], out[t][1]) for t in order}

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "won": self.won,
            "total": len(self.games),
            "by_type": {t: {"won": w, "total": n} for t, (w, n) in self.by_type().items()},
            "skipped": self.skipped,
            "failures": [{"task_id": g.task_id, "error": g.error} for g in self.games if not g.won],
        }

    def summary(self) -> str:
        if not self.games:
            return f"{self.root}: no ALFWorld games found (trial folders with {TRAJ_FILE} and {GAME_FILE})"
        lines = [f"{self.root}: {self.won}/{len(self.games)} won by the planner"]
        for t, (w, n) in self.by_type().items():
            lines.append(f"  {t:34s} {w}/{n}")
        for reason, n in self.skipped.items():
            lines.append(f"  skipped ({reason}): {n}")
        for g in self.games:
            if not g.won:
                lines.append(f"  FAILED {g.task_id}: {g.error}")
        return "\n".join(lines)


def play_planner(env: Any, entry: GameEntry, record: bool = False) -> GameCheck:
    """Reset on the game, plan once from the start state, play the plan; errors become the result."""
    check = GameCheck(entry.task_id, entry.task_type, won=False, steps=0, task_text=entry.task_text)
    try:
        obs = env.reset_game(entry.game_file, task_type=entry.task_type)
        check.task_text = obs.task_text or entry.task_text
        plan = env.expert_actions()
        if not plan:
            check.error = "the planner found no plan"
            return check
        for action in plan:
            if record:
                check.demo.append(
                    {
                        "observation": obs.text,
                        "admissible_actions": list(obs.admissible_actions),
                        "action": action,
                    }
                )
            res = env.step(action)
            check.steps += 1
            if res.invalid_action:
                check.error = f"planner action {action!r} not admissible at step {check.steps}"
                return check
            obs = res.observation
            if res.done:
                break
        check.won = env.won
        if not check.won:
            check.error = f"plan of {len(plan)} steps ended without reaching the goal"
    except Exception as e:  # one broken game must not hide the others' results
        check.error = f"{type(e).__name__}: {e}"
        env.close()  # the next game gets a fresh engine
    if not check.won:
        check.demo = []
    return check


_ENV: Any = None  # one engine per worker process


def _play(args: tuple[GameEntry, bool]) -> GameCheck:
    global _ENV
    if _ENV is None:
        from envs.alfworld.env import AlfWorldEnv

        _ENV = AlfWorldEnv(max_steps=500)
    return play_planner(_ENV, *args)


def _run(entries: list[GameEntry], record: bool, workers: int) -> list[GameCheck]:
    global _ENV
    jobs = [(e, record) for e in entries]
    if workers <= 1 or len(jobs) <= 1:
        try:
            return [_play(j) for j in jobs]
        finally:
            if _ENV is not None:
                _ENV.close()
            _ENV = None
    with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        return pool.map(_play, jobs, chunksize=1)


def check_games(root: str, workers: int = 1) -> CheckReport:
    scan = scan_games(root)
    return CheckReport(root, _run(scan.games, record=False, workers=workers), dict(scan.skipped))


def write_demos(root: str, out_file: str, workers: int = 1) -> CheckReport:
    """Planner solutions as JSONL, one episode per line: {task_id, task_type, task_text, game_file,
    steps: [{observation, admissible_actions, action}]}. The SFT code renders each step with the
    solver's prompt builder, so the demonstrations see exactly the prompts the solver sees."""
    from cluster.core.storage import atomic_write_text

    scan = scan_games(root)
    report = CheckReport(root, _run(scan.games, record=True, workers=workers), dict(scan.skipped))
    files = {g.task_id: g.game_file for g in scan.games}
    lines = [
        json.dumps(
            {
                "task_id": g.task_id,
                "task_type": g.task_type,
                "task_text": g.task_text,
                "game_file": os.path.abspath(files[g.task_id]),
                "steps": g.demo,
            },
            sort_keys=True,
        )
        for g in report.games
        if g.won
    ]
    atomic_write_text(out_file, "".join(line + "\n" for line in lines))
    return report


def read_demos(path: str) -> Iterable[dict[str, Any]]:
    """Demo records of a JSONL file; a bad line raises an error naming the file, line and field."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e})") from e
            for key in ("task_id", "task_type", "task_text", "steps"):
                if key not in rec:
                    raise ValueError(f"{path}:{n}: field {key!r} missing")
            for i, step in enumerate(rec["steps"]):
                for key in ("observation", "admissible_actions", "action"):
                    if key not in step:
                        raise ValueError(f"{path}:{n}: steps[{i}] lacks field {key!r}")
            yield rec
