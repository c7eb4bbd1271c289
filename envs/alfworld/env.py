"""ALFWorld on the real TextWorld engine: `PddlEnv` wrapped by alfworld's `AlfredDemangler` and
`AlfredInfos`, exactly the stack `AlfredTWEnv` registers, minus gym's batching and subprocesses so a
rollout worker can host many of them and step them itself.

Observation text and admissible actions are what the engine gives; a command that is not admissible
goes to the engine too, which answers "Nothing happens.", and is counted. The planner (Fast Downward,
through the engine's own `replan`) supplies expert actions for checks and demonstrations.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from cluster.core.records import TaskSpec
from envs.base import Observation, StepResult

_TASK_RE = re.compile(r"Your task is to: ([^\n\"]*)")
GAME_FIELDS = ("pddl_domain", "grammar", "pddl_problem")


class GameFileError(ValueError):
    """A game file that cannot be read or loaded; the message starts with the file's path."""


def _ensure_alfworld_data() -> None:
    # alfworld.info creates ~/.cache/alfworld at import unless ALFWORLD_DATA is set.
    os.environ.setdefault("ALFWORLD_DATA", os.path.join(os.getcwd(), ".cache", "alfworld"))


@contextlib.contextmanager
def keep_argv() -> Iterator[None]:
    """Fast Downward's translator overwrites sys.argv while loading or planning; put it back."""
    saved = list(sys.argv)
    try:
        yield
    finally:
        sys.argv[:] = saved


def task_text_from(text: str) -> str:
    """The goal sentence ("put a clean apple in fridge.") from an intro text or a game grammar."""
    m = _TASK_RE.search(text)
    return m.group(1).strip().rstrip(".").rstrip() if m else ""


def read_game_file(path: str) -> dict[str, Any]:
    """Read and validate a game.tw-pddl file; errors name the file and the field."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise GameFileError(f"{path}: game file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GameFileError(f"{path}: not valid JSON ({e})") from e
    check_game_data(data, path)
    return data


def check_game_data(data: Any, name: str) -> None:
    if not isinstance(data, Mapping):
        raise GameFileError(f"{name}: expected a JSON object, got {type(data).__name__}")
    for key in GAME_FIELDS:
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise GameFileError(f"{name}: field {key!r} missing or empty")


def make_engine() -> Any:
    """A wrapped TextWorld PddlEnv as AlfredTWEnv builds it (own copy of Fast Downward's library)."""
    _ensure_alfworld_data()
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
    from textworld.envs.pddl import PddlEnv

    infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
    env = PddlEnv(infos)
    for wrapper in (AlfredDemangler(shuffle=False), AlfredInfos):
        env = wrapper(env)
    return env


def planner_actions(engine: Any) -> list[str]:
    """Fast Downward's plan from the engine's current state, as admissible commands ([] if none)."""
    inner = engine.unwrapped
    with keep_argv():
        return list(inner._pddl_state.replan(inner._entity_infos))


def offered(commands: list[str]) -> list[str]:
    """The admissible commands shown to the solver: all but `help`."""
    return [c for c in commands if c != "help"]


class AlfWorldEnv:
    """One ALFWorld game at a time on the real engine (implements envs.base.TextEnv).

    reward is 1.0 on the step that reaches the goal, else 0.0; the episode ends when won or after
    `max_steps` steps (invalid ones included), whichever comes first. `help` is not offered as an
    admissible action (as in the authors' env): it prints the command list and changes nothing.
    """

    def __init__(self, max_steps: int = 50) -> None:
        if max_steps < 1:
            raise ValueError(f"AlfWorldEnv: max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps
        self._engine: Any = None  # built on first reset: each holds its own Fast Downward library
        self._loaded: str | None = None
        self._task_text = ""
        self._task_type = ""
        self._admissible: list[str] = []
        self._started = False
        self.steps = 0
        self.invalid_actions = 0
        self.won = False
        self.done = True

    # --- TextEnv -------------------------------------------------------------------------------
    def reset(self, task: TaskSpec) -> Observation:
        obs = self.reset_game(task.ref, task_type=task.task_type)
        if not obs.task_text:
            obs.task_text = self._task_text = task.text
        return obs

    def step(self, action: str) -> StepResult:
        if self.done:
            raise RuntimeError(f"AlfWorldEnv: episode of {self._loaded} is over; call reset()")
        command = action.strip()
        invalid = command not in self._admissible
        with keep_argv():
            state, _, _ = self._engine.step(command)
        self.steps += 1
        self.invalid_actions += int(invalid)
        self.won = bool(state["won"])
        truncated = not self.won and self.steps >= self.max_steps
        self.done = self.won or truncated
        self._admissible = offered(state["admissible_commands"])
        return StepResult(
            observation=self._observation(state["feedback"]),
            reward=1.0 if self.won else 0.0,
            done=self.done,
            won=self.won,
            invalid_action=invalid,
            info={
                "steps": self.steps,
                "invalid_actions": self.invalid_actions,
                "truncated": truncated,
                "gamefile": self._loaded,
            },
        )

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine = None
        self._loaded = None
        self._started = False
        self.done = True

    # --- extras --------------------------------------------------------------------------------
    def reset_game(self, game: str | Mapping[str, Any], task_type: str = "") -> Observation:
        """Start an episode of a game file (path) or of game data already in memory (generator)."""
        if self._engine is None:
            self._engine = make_engine()
        in_memory = not isinstance(game, str)
        name = "<game data>" if in_memory else game
        if in_memory or game != self._loaded:
            if in_memory:
                check_game_data(game, name)
            else:
                read_game_file(game)  # validates, and names the file in any error
            self._loaded = None
            self._started = False
            try:
                with keep_argv():
                    self._engine.load(dict(game) if in_memory else game)
            except Exception as e:  # the engine's parse/translate errors do not name the file
                raise GameFileError(f"{name}: the engine could not load it ({type(e).__name__}: {e})") from e
            self._loaded = None if in_memory else game
        try:
            with keep_argv():
                state = self._engine.reset()
        except Exception as e:
            self._loaded = None
            self._started = False
            raise GameFileError(f"{name}: the engine could not start it ({type(e).__name__}: {e})") from e
        self._started = True
        self.steps = 0
        self.invalid_actions = 0
        self.won = bool(state["won"])
        self.done = False
        self._task_type = task_type
        self._task_text = task_text_from(state["feedback"])
        self._admissible = offered(state["admissible_commands"])
        return self._observation(state["feedback"])

    def expert_actions(self) -> list[str]:
        """The planner's full solution from the current state ([] when no plan exists)."""
        if not self._started:
            raise RuntimeError("AlfWorldEnv: no game started; call reset()")
        return planner_actions(self._engine)

    @property
    def admissible_actions(self) -> list[str]:
        return list(self._admissible)

    def _observation(self, text: str) -> Observation:
        return Observation(
            text=text,
            admissible_actions=list(self._admissible),
            task_text=self._task_text,
            task_type=self._task_type,
        )
