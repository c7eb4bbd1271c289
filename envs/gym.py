"""ALFWorld and Mind2Web as gymnasium environments, so the rest of the Ray stack (RLlib's EnvRunners,
Tune) and any gymnasium tooling can step them.

Observation and action spaces are `gymnasium.spaces.Text` over `string.printable`: the agent reads
text and answers with one action string. The admissible actions, `won`, the task and the step details
of the underlying env are in `info` (they change every step, so they are not part of a fixed space).
Characters outside the space's charset are replaced by "?" (counted in `info["replaced_chars"]`); an
action equal to a replaced admissible action is mapped back to the original before it reaches the env.

Ids (registered on import of this module; `register_envs()` is idempotent):
    evorl/ALFWorld-v0   kwargs: data_dir, split="train", task_types=None, max_steps=50
    evorl/Mind2Web-v0   kwargs: data_dir=<bundled sample>, split="train", mode="paper", max_steps=50
Both also take `tasks=[TaskSpec, ...]` instead of a folder. `reset(options={"task_id": ...})` plays a
chosen task; otherwise the task is drawn with the env's seeded `np_random`.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
from gymnasium import spaces

from cluster.core.records import TaskSpec
from envs.base import Observation, StepResult, TextEnv

ALFWORLD_ID = "evorl/ALFWorld-v0"
MIND2WEB_ID = "evorl/Mind2Web-v0"
CHARSET = string.printable
_CHARS = frozenset(CHARSET)
MAX_OBSERVATION_CHARS = 16384
MAX_ACTION_CHARS = 512


def to_space_text(text: str, max_chars: int) -> tuple[str, int]:
    """(text within the Text space, number of characters replaced); overlong text is cut with "..."."""
    replaced = sum(1 for c in text if c not in _CHARS)
    if replaced:
        text = "".join(c if c in _CHARS else "?" for c in text)
    if len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    return text, replaced


class TextGymEnv(gymnasium.Env):
    """A `TextEnv` (envs.base) over a fixed task list, with the gymnasium reset/step contract."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        env: TextEnv,
        tasks: Sequence[TaskSpec],
        max_observation_chars: int = MAX_OBSERVATION_CHARS,
        render_mode: str | None = None,
    ) -> None:
        if not tasks:
            raise ValueError(f"{type(self).__name__}: the task list is empty")
        self.env = env
        self.tasks = list(tasks)
        self._by_id = {t.task_id: i for i, t in enumerate(self.tasks)}
        self.max_observation_chars = max_observation_chars
        self.render_mode = render_mode
        self.observation_space = spaces.Text(max_observation_chars, min_length=0, charset=CHARSET)
        self.action_space = spaces.Text(MAX_ACTION_CHARS, min_length=1, charset=CHARSET)
        self.task: TaskSpec | None = None
        self._actions: dict[str, str] = {}  # action as shown in info -> the env's own string
        self._last = ""

    def _pick(self, options: dict[str, Any] | None) -> TaskSpec:
        options = options or {}
        if "task_id" in options:
            tid = options["task_id"]
            if tid not in self._by_id:
                raise KeyError(f"reset: task_id {tid!r} is not among this env's {len(self.tasks)} tasks")
            return self.tasks[self._by_id[tid]]
        if "task_index" in options:
            return self.tasks[int(options["task_index"]) % len(self.tasks)]
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]

    def _info(self, obs: Observation, extra: dict[str, Any], replaced: int) -> dict[str, Any]:
        self._actions = {}
        shown = []
        for a in obs.admissible_actions:
            s, r = to_space_text(a, MAX_ACTION_CHARS)
            self._actions[s] = a
            shown.append(s)
            replaced += r
        assert self.task is not None
        return {
            **extra,
            "admissible_actions": shown,
            "task": obs.task_text or self.task.text,
            "task_id": self.task.task_id,
            "task_type": obs.task_type or self.task.task_type,
            "replaced_chars": replaced,
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.task = self._pick(options)
        obs = self.env.reset(self.task)
        text, replaced = to_space_text(obs.text, self.max_observation_chars)
        self._last = text
        return text, self._info(obs, {"won": False}, replaced)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.task is None:
            raise RuntimeError(f"{type(self).__name__}: call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"step: action must be a str, got {type(action).__name__}")
        res: StepResult = self.env.step(self._actions.get(action, action))
        text, replaced = to_space_text(res.observation.text, self.max_observation_chars)
        self._last = text
        truncated = bool(res.done and not res.won and res.info.get("truncated", False))
        terminated = bool(res.done and not truncated)
        extra = {**res.info, "won": bool(res.won), "invalid_action": bool(res.invalid_action)}
        return text, float(res.reward), terminated, truncated, self._info(res.observation, extra, replaced)

    def render(self) -> str | None:
        return self._last if self.render_mode == "ansi" else None

    def close(self) -> None:
        self.env.close()


class AlfWorldGymEnv(TextGymEnv):
    """ALFWorld games of `<data_dir>/<split>` (generated or official layout) on the real engine."""

    def __init__(
        self,
        data_dir: str | None = None,
        split: str = "train",
        task_types: Sequence[str] | None = None,
        max_steps: int = 50,
        tasks: Sequence[TaskSpec] | None = None,
        max_observation_chars: int = MAX_OBSERVATION_CHARS,
        render_mode: str | None = None,
    ) -> None:
        from envs.alfworld.env import AlfWorldEnv

        if tasks is None:
            if not data_dir:
                raise ValueError(f"{ALFWORLD_ID}: pass data_dir (a folder of ALFWorld games) or tasks")
            from envs.alfworld.tasks import list_tasks

            tasks = list_tasks(str(data_dir), split)
            if task_types:
                tasks = [t for t in tasks if t.task_type in set(task_types)]
            if not tasks:
                raise ValueError(f"{ALFWORLD_ID}: no games in {data_dir}/{split} (task_types={task_types})")
        super().__init__(AlfWorldEnv(max_steps=max_steps), tasks, max_observation_chars, render_mode)

    def expert_actions(self) -> list[str]:
        """The planner's solution from the current state (for demonstrations and tests)."""
        return self.env.expert_actions()  # type: ignore[attr-defined]


class Mind2WebGymEnv(TextGymEnv):
    """Offline Mind2Web replay (envs.mind2web.env); defaults to the bundled sample."""

    def __init__(
        self,
        data_dir: str | None = None,
        split: str = "train",
        mode: str = "paper",
        max_steps: int = 50,
        cache_dir: str | None = None,
        tasks: Sequence[TaskSpec] | None = None,
        max_observation_chars: int = MAX_OBSERVATION_CHARS,
        render_mode: str | None = None,
    ) -> None:
        from envs.mind2web.env import Mind2WebEnv

        if tasks is None:
            from envs.mind2web.tasks import SAMPLE_DIR, list_tasks

            tasks = list_tasks(Path(data_dir) if data_dir else SAMPLE_DIR, split, cache_dir)
            if not tasks:
                raise ValueError(f"{MIND2WEB_ID}: no tasks in {data_dir or SAMPLE_DIR} split {split!r}")
        env = Mind2WebEnv(max_steps=max_steps, mode=mode)  # type: ignore[arg-type]
        super().__init__(env, tasks, max_observation_chars, render_mode)

    def gold_action(self) -> str | None:
        """A correct action for the current step (oracle for tests and demonstrations)."""
        return self.env.gold_action()  # type: ignore[attr-defined]


ENTRY_POINTS = {ALFWORLD_ID: "envs.gym:AlfWorldGymEnv", MIND2WEB_ID: "envs.gym:Mind2WebGymEnv"}


def register_envs() -> None:
    """Register both ids in gymnasium's registry (no-op for ids already there)."""
    for env_id, entry in ENTRY_POINTS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry)


def env_creator(env_id: str):
    """An RLlib env creator for `env_id`: env_config (an EnvContext dict) becomes the env's kwargs."""

    def create(env_config: dict | None = None) -> gymnasium.Env:
        register_envs()  # the creator runs in EnvRunner processes that never imported this module
        return gymnasium.make(env_id, **dict(env_config or {}))

    return create


def register_rllib_envs() -> list[str]:
    """Register both ids in RLlib's env registry (ray.tune.registry); returns the ids."""
    from ray.tune.registry import register_env

    for env_id in ENTRY_POINTS:
        register_env(env_id, env_creator(env_id))
    return list(ENTRY_POINTS)


register_envs()
