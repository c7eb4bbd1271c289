"""ALFWorld on the real engine: generator, env, task lists, planner check, demos, env pool.

One small set of `easy` games (2 per task type, train split) is generated once for the module.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("ALFWORLD_DATA", str(Path(__file__).resolve().parents[1] / ".cache" / "alfworld"))

from cluster.core.records import TaskSpec  # noqa: E402
from envs.alfworld.check import check_games, read_demos, write_demos  # noqa: E402
from envs.alfworld.env import AlfWorldEnv, GameFileError  # noqa: E402
from envs.alfworld.generator import PRESETS, ensure_generated, generate, room, sample_game, scenes_for  # noqa: E402
from envs.alfworld.tasks import TASK_TYPES, list_tasks, scan_games  # noqa: E402

SEED = 7


@pytest.fixture(scope="module")
def games(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("alfworld") / "easy"
    rep = generate(str(out), per_type=2, seed=SEED, preset="easy", workers=1, splits=["train"])
    assert rep.total == 12
    return out


@pytest.fixture(scope="module")
def tasks(games: Path) -> list[TaskSpec]:
    return list_tasks(str(games), "train")


@pytest.fixture(scope="module")
def env() -> AlfWorldEnv:
    e = AlfWorldEnv(max_steps=50)
    yield e
    e.close()


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name in ("traj_data.json", "game.tw-pddl")
    }


# --- generator -----------------------------------------------------------------------------------
def test_layout_and_metadata(games: Path) -> None:
    trials = sorted(games.glob("train/*/trial_*"))
    assert len(trials) == 12
    for trial in trials:
        traj = json.loads((trial / "traj_data.json").read_text())
        game = json.loads((trial / "game.tw-pddl").read_text())
        assert trial.parent.name.startswith(traj["task_type"] + "-")
        assert game["solvable"] is True and game["walkthrough"]
        meta = traj["evorl"]
        assert meta["preset"] == "easy" and 4 <= meta["num_receptacles"] <= 6
        assert meta["num_distractors"] <= 3 and meta["target_in_closed_receptacle"] is False
        assert set(traj["pddl_params"]) >= {
            "object_target",
            "parent_target",
            "toggle_target",
            "mrecep_target",
        }


def test_same_seed_gives_byte_identical_files_whatever_the_workers(games: Path, tmp_path: Path) -> None:
    types = ["pick_and_place_simple", "pick_two_obj_and_place"]
    generate(
        str(tmp_path / "a"),
        per_type=1,
        seed=SEED,
        preset="easy",
        workers=2,
        splits=["train"],
        task_types=types,
    )
    again = _files(tmp_path / "a")
    first = {
        k: v for k, v in _files(games).items() if k.split("/")[1].split("-")[0] in types and "trial_0" in k
    }
    assert len(again) == 4 and again == first
    generate(
        str(tmp_path / "b"), per_type=1, seed=SEED + 1, preset="easy", splits=["train"], task_types=types[:1]
    )
    other = _files(tmp_path / "b")
    assert set(other.values()).isdisjoint(first.values())


def test_valid_unseen_rooms_are_held_out() -> None:
    for t in TASK_TYPES:
        unseen, seen = set(scenes_for("valid_unseen", t)), set(scenes_for("train", t))
        assert unseen and seen and not unseen & seen and set(scenes_for("valid_seen", t)) == seen


@pytest.mark.parametrize("preset", ["easy", "standard"])
def test_sampled_games_respect_the_preset(preset: str) -> None:
    import random

    p = PRESETS[preset]
    hidden = 0
    for t in TASK_TYPES:
        scenes = scenes_for("train", t)
        specs = [sample_game(random.Random(f"{t}/{i}"), t, scenes, p) for i in range(40)]
        specs = [s for s in specs if s is not None]
        assert len(specs) >= 20, t
        for s in specs:
            hosts = {r.id: r for r in s.receptacles}
            targets = [hosts[h] for _, ot, h in s.objects if ot == s.object_target]
            assert len(targets) >= (2 if t == "pick_two_obj_and_place" else 1)
            assert all(r.type != s.parent_target for r in targets)  # not solved at the start
            assert s.meta["num_distractors"] <= p.distractors[1]
            if preset == "easy":
                room_size = len(room(s.scene)[0])
                assert min(p.receptacles[0], room_size) <= len(s.receptacles) <= p.receptacles[1]
                assert not s.meta["target_in_closed_receptacle"]
            hidden += s.meta["target_in_closed_receptacle"]
    assert (hidden > 0) == (preset == "standard")


def test_ensure_generated_leaves_existing_games_alone(games: Path) -> None:
    before = _files(games)
    assert ensure_generated(str(games), per_type=1) is False
    assert _files(games) == before


def test_generator_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        generate(str(tmp_path), per_type=1, splits=["train"], task_types=["pick_and_place_simple"])
    with pytest.raises(FileExistsError, match="not written by this generator"):
        generate(
            str(tmp_path), per_type=1, splits=["train"], task_types=["pick_and_place_simple"], overwrite=True
        )


# --- planner check -------------------------------------------------------------------------------
def test_planner_wins_every_generated_game_of_each_type(games: Path) -> None:
    rep = check_games(str(games))
    assert rep.by_type() == {t: (2, 2) for t in TASK_TYPES}, rep.summary()


def test_check_reports_a_broken_game_and_goes_on(games: Path, tmp_path: Path) -> None:
    src = sorted(games.glob("train/pick_and_place_simple-*/trial_*"))[0]
    shutil.copytree(src, tmp_path / "a" / "trial_0")
    shutil.copytree(src, tmp_path / "b" / "trial_0")
    game_file = tmp_path / "a" / "trial_0" / "game.tw-pddl"
    game = json.loads(game_file.read_text())
    game["pddl_problem"] = game["pddl_problem"].replace("(:init", "(:init (nonsense")
    game_file.write_text(json.dumps(game))
    rep = check_games(str(tmp_path))
    assert [g.won for g in rep.games] == [False, True]
    assert str(game_file) in rep.games[0].error and "FAILED a/trial_0" in rep.summary()


def test_check_cli_json(games: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cluster.cli import main

    one_type = sorted(games.glob("train/pick_two_obj_and_place-*"))[0]
    with pytest.raises(SystemExit) as ex:
        main(["data", "alfworld-check", str(one_type), "--json", "--workers", "1"])
    report = json.loads(capsys.readouterr().out)
    assert ex.value.code == 0 and report["won"] == report["total"] >= 1
    assert report["by_type"] == {"pick_two_obj_and_place": {"won": report["won"], "total": report["won"]}}


# --- tasks ---------------------------------------------------------------------------------------
def test_list_tasks(games: Path, tasks: list[TaskSpec]) -> None:
    assert len(tasks) == 12 and {t.task_type for t in tasks} == set(TASK_TYPES)
    assert list_tasks(str(games), "train") == tasks  # stable ids and order
    for t in tasks:
        traj = json.loads((Path(t.ref).parent / "traj_data.json").read_text())
        assert t.env == "alfworld" and t.split == "train" and t.task_id.startswith("train/")
        assert t.text == traj["turk_annotations"]["anns"][0]["task_desc"] and t.text
        assert os.path.isfile(t.ref)
    with pytest.raises(FileNotFoundError, match="valid_unseen"):
        list_tasks(str(games), "valid_unseen")


def test_scan_skips_are_counted(games: Path, tmp_path: Path) -> None:
    src = sorted(games.glob("train/*/trial_0"))[0]
    shutil.copytree(src, tmp_path / "x-Sliced-1" / "trial_0")
    shutil.copytree(src, tmp_path / "unsolvable" / "trial_0")
    game_file = tmp_path / "unsolvable" / "trial_0" / "game.tw-pddl"
    game = json.loads(game_file.read_text())
    del game["solvable"]
    game_file.write_text(json.dumps(game))
    shutil.copytree(src, tmp_path / "ok" / "trial_0")
    rep = scan_games(str(tmp_path))
    assert [g.task_id for g in rep.games] == ["ok/trial_0"]
    assert rep.skipped == {"movable or sliced": 1, "not marked solvable": 1}


# --- env -----------------------------------------------------------------------------------------
def test_won_exactly_at_the_goal(env: AlfWorldEnv, tasks: list[TaskSpec]) -> None:
    import sys

    argv = list(sys.argv)  # Fast Downward overwrites it while loading and planning; the env restores it
    for task in tasks[::2]:  # one game of each type
        obs = env.reset(task)
        assert obs.task_text == task.text and obs.task_type == task.task_type
        assert f"Your task is to: {task.text}" in obs.text and obs.admissible_actions
        plan = env.expert_actions()
        assert plan
        for i, action in enumerate(plan):
            assert action in obs.admissible_actions
            res = env.step(action)
            last = i == len(plan) - 1
            assert res.won is last and res.done is last and res.reward == (1.0 if last else 0.0), (
                task.task_id,
                i,
            )
            assert not res.invalid_action
            obs = res.observation
        with pytest.raises(RuntimeError, match="over"):
            env.step("look")
    assert sys.argv == argv


def test_goal_reached_out_of_plan_order_still_wins(env: AlfWorldEnv, tasks: list[TaskSpec]) -> None:
    task = next(t for t in tasks if t.task_type == "pick_and_place_simple")
    env.reset(task)
    plan = env.expert_actions()
    res = env.step("look")  # a detour, then the plan replanned from here
    assert not res.won and not res.invalid_action
    for action in env.expert_actions():
        res = env.step(action)
    assert res.won and res.info["steps"] == len(plan) + 1


def test_invalid_action_is_answered_by_the_engine_and_counted(
    env: AlfWorldEnv, tasks: list[TaskSpec]
) -> None:
    obs = env.reset(tasks[0])
    res = env.step("fly to the moon")
    assert res.observation.text == "Nothing happens."
    assert res.invalid_action and not res.done and res.reward == 0.0
    assert res.observation.admissible_actions == obs.admissible_actions
    assert res.info["invalid_actions"] == 1 and res.info["steps"] == 1
    res = env.step(obs.admissible_actions[0])
    assert not res.invalid_action and res.info["invalid_actions"] == 1 and res.info["steps"] == 2


def test_done_at_max_steps(tasks: list[TaskSpec]) -> None:
    env = AlfWorldEnv(max_steps=3)
    try:
        env.reset(tasks[0])
        results = [env.step("look") for _ in range(3)]
        assert [r.done for r in results] == [False, False, True]
        assert not results[-1].won and results[-1].info["truncated"]
    finally:
        env.close()


def test_malformed_game_files_name_the_file(env: AlfWorldEnv, tasks: list[TaskSpec], tmp_path: Path) -> None:
    good = json.loads(Path(tasks[0].ref).read_text())
    cases = {
        "notjson.tw-pddl": "{ this is not json",
        "nofield.tw-pddl": json.dumps({k: v for k, v in good.items() if k != "pddl_problem"}),
        "badpddl.tw-pddl": json.dumps(
            {**good, "pddl_problem": "(define (problem p) (:domain alfred) (:objects"}
        ),
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        task = TaskSpec("x", "alfworld", "pick_and_place_simple", "t", str(path))
        with pytest.raises(GameFileError, match=str(path)):
            env.reset(task)
    with pytest.raises(GameFileError, match="not found"):
        env.reset(TaskSpec("x", "alfworld", "pick_and_place_simple", "t", str(tmp_path / "missing")))
    assert env.reset(tasks[0]).admissible_actions  # the env still works afterwards


# --- demos ---------------------------------------------------------------------------------------
def test_demos(games: Path, tmp_path: Path) -> None:
    for trial in sorted(games.glob("train/pick_heat*/trial_*")):
        shutil.copytree(trial, tmp_path / "data" / trial.relative_to(games))
    out = tmp_path / "demos.jsonl"
    rep = write_demos(str(tmp_path / "data"), str(out))
    records = list(read_demos(str(out)))
    tasks = list_tasks(str(tmp_path / "data"), "train")
    assert rep.won == len(records) == len(tasks) == 2
    by_id = {r["task_id"]: r for r in records}
    assert set(by_id) == {t.task_id for t in tasks}  # same ids as list_tasks on the same root
    rec = by_id[tasks[0].task_id]
    assert rec["task_text"] == tasks[0].text and rec["task_type"] == "pick_heat_then_place_in_recep"
    walkthrough = json.loads(Path(tasks[0].ref).read_text())["walkthrough"]
    assert [s["action"] for s in rec["steps"]] == walkthrough
    assert rec["steps"][0]["observation"].startswith("-= Welcome to TextWorld, ALFRED! =-")
    assert all(s["action"] in s["admissible_actions"] for s in rec["steps"])
