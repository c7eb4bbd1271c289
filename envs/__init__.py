"""Environments behind one text interface (envs.base.TextEnv): ALFWorld and Mind2Web."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.core.config import EnvConfig
    from cluster.core.records import TaskSpec
    from envs.base import TextEnv


def make_env(env_cfg: EnvConfig, seed: int = 0) -> TextEnv:
    """One environment instance for `env_cfg.name` (imported lazily: alfworld is heavy)."""
    if env_cfg.name == "alfworld":
        from envs.alfworld.env import AlfWorldEnv

        return AlfWorldEnv(max_steps=env_cfg.max_steps)
    if env_cfg.name == "mind2web":
        from envs.mind2web.env import Mind2WebEnv

        return Mind2WebEnv(max_steps=env_cfg.max_steps, seed=seed, reward=env_cfg.reward, mode=env_cfg.replay,
                           observation=env_cfg.observation, max_page_elements=env_cfg.max_page_elements)  # fmt: skip
    raise ValueError(f"env.name: unknown environment {env_cfg.name!r}")


def list_tasks(env_cfg: EnvConfig, split: str) -> list[TaskSpec]:
    """All tasks of one split of the configured dataset."""
    if env_cfg.name == "alfworld":
        from envs.alfworld.tasks import list_tasks as alf_tasks

        return alf_tasks(env_cfg.data_dir, split)
    if env_cfg.name == "mind2web":
        from envs.mind2web.tasks import list_tasks as m2w_tasks

        return m2w_tasks(env_cfg.data_dir, split)
    raise ValueError(f"env.name: unknown environment {env_cfg.name!r}")


def walkthrough(task: TaskSpec) -> list[str] | None:
    """A known solution of a task (the planner's, for generated ALFWorld games), or None."""
    if task.env == "alfworld":
        from envs.alfworld.tasks import walkthrough as alf_walkthrough

        return alf_walkthrough(task)
    return None
