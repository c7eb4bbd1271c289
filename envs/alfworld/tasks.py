"""ALFWorld task lists from a folder of games: generated ones or the official json_2.1.1 data.

A game is a folder holding `traj_data.json` and `game.tw-pddl`; the rules for which games count are
alfworld's own (`AlfredTWEnv.collect_game_files`): folders whose path has "movable" or "Sliced" are
skipped, and so are games without a truthy `solvable` key. Skips are counted and logged, never silent.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

from cluster.core.records import TaskSpec

log = logging.getLogger(__name__)

TASK_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
# The paper's task-type split: RL trains on these four ...
TRAINED_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
)
# ... and these two are held out to measure transfer.
HELDOUT_TYPES: tuple[str, ...] = ("pick_two_obj_and_place", "look_at_obj_in_light")
SPLITS: tuple[str, ...] = ("train", "valid_seen", "valid_unseen")
GAME_FILE = "game.tw-pddl"
TRAJ_FILE = "traj_data.json"


class TaskDataError(ValueError):
    """A traj_data.json / game file that cannot be used; the message names the file and field."""


@dataclass
class GameEntry:
    task_id: str  # trial folder relative to the scanned root, "/"-separated
    task_type: str
    game_file: str
    traj_file: str
    task_text: str


@dataclass
class ScanReport:
    games: list[GameEntry] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> count


def official_data_dir() -> str | None:
    """$ALFWORLD_DATA/json_2.1.1 when the official games are there (train/valid_seen/valid_unseen)."""
    root = os.environ.get("ALFWORLD_DATA")
    path = os.path.join(root, "json_2.1.1") if root else ""
    return path if path and os.path.isdir(path) else None


def scan_games(root: str, task_types: tuple[str, ...] | None = None, with_text: bool = True) -> ScanReport:
    """Every usable game under `root` (any depth), sorted by task id."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder of ALFWorld games")
    report = ScanReport()
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        if TRAJ_FILE not in files:
            continue
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if "movable" in rel or "Sliced" in rel:
            report.skipped["movable or sliced"] += 1
            continue
        traj_file = os.path.join(dirpath, TRAJ_FILE)
        try:
            with open(traj_file, encoding="utf-8") as f:
                traj = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TaskDataError(f"{traj_file}: not valid JSON ({e})") from e
        task_type = traj.get("task_type") if isinstance(traj, dict) else None
        if not isinstance(task_type, str):
            raise TaskDataError(f"{traj_file}: field 'task_type' missing")
        if task_types is not None and task_type not in task_types:
            report.skipped["task type not requested"] += 1
            continue
        game_file = os.path.join(dirpath, GAME_FILE)
        if not os.path.isfile(game_file):
            report.skipped["no game file"] += 1
            log.warning("alfworld: skipping %s: no %s", dirpath, GAME_FILE)
            continue
        with open(game_file, encoding="utf-8") as f:
            try:
                game = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise TaskDataError(f"{game_file}: not valid JSON ({e})") from e
        if not isinstance(game, dict) or not game.get("solvable"):
            report.skipped["not marked solvable"] += 1
            log.warning("alfworld: skipping %s: no truthy 'solvable' key", game_file)
            continue
        text = ""
        if with_text:
            from envs.alfworld.env import task_text_from

            text = task_text_from(str(game.get("grammar", "")))
            if not text:
                turk = traj.get("turk_annotations", {})
                anns = turk.get("anns", []) if isinstance(turk, dict) else None
                if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
                    raise TaskDataError(
                        f"{traj_file}: field 'turk_annotations.anns' must be a list of objects"
                    )
                text = str(anns[0].get("task_desc", "")) if anns else ""
        report.games.append(GameEntry(rel, task_type, game_file, traj_file, text))
    report.games.sort(key=lambda g: g.task_id)
    if report.skipped:
        log.info("alfworld: %s: %d games, skipped %s", root, len(report.games), dict(report.skipped))
    return report


def list_tasks(data_dir: str, split: str) -> list[TaskSpec]:
    """Tasks of one split (`<data_dir>/<split>/...`), task_id = "<split>/<task folder>/<trial>"."""
    split_dir = os.path.join(data_dir, split)
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(f"{split_dir}: split {split!r} not found under {data_dir}")
    report = scan_games(split_dir)
    return [
        TaskSpec(
            task_id=f"{split}/{g.task_id}",
            env="alfworld",
            task_type=g.task_type,
            text=g.task_text,
            ref=os.path.abspath(g.game_file),
            split=split,
        )
        for g in report.games
    ]


def walkthrough(task: TaskSpec) -> list[str] | None:
    """The planner's solution stored in a generated game file (`walkthrough`), or None (official
    games carry no textual walkthrough)."""
    try:
        with open(task.ref, encoding="utf-8") as f:
            steps = json.load(f).get("walkthrough")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(a) for a in steps] if isinstance(steps, list) and steps else None
