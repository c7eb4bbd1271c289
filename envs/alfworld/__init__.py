"""ALFWorld: the real TextWorld engine (env), a generator of planner-verified games, task lists for
generated or official data, a planner check.

`from envs.alfworld import AlfWorldEnv, list_tasks` work; submodules load on first use so the CLI
stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AlfWorldEnv": "envs.alfworld.env",
    "GameFileError": "envs.alfworld.env",
    "list_tasks": "envs.alfworld.tasks",
    "TASK_TYPES": "envs.alfworld.tasks",
    "TRAINED_TYPES": "envs.alfworld.tasks",
    "HELDOUT_TYPES": "envs.alfworld.tasks",
    "generate": "envs.alfworld.generator",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'envs.alfworld' has no attribute {name!r}")
