"""The data a run needs, made or checked before any actor starts.

ALFWorld's `env.data_dir` is either official data (the `alfworld-download` release, json_2.1.1
layout) or a folder of generated games. A folder that holds games is used as found, whichever it is.
A missing or empty folder is generated into (env.generate_preset, env.generate_per_type) only when it
is meant for generated games; when its path names official data it is an error saying how to get
the data, never a silent run on a few generated games. A path names official data when the folder's
name or one of its two parents' names contains "official" or is "json_2.1.1", or when it lies inside
$ALFWORLD_DATA (where `alfworld-download` puts the release). Any other path (data/alfworld-easy, /mnt/evorl/data/gen) is a
folder for generated games. docs/cluster.md "Data" documents the rule.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cluster.core.config import Config, ConfigError

log = logging.getLogger("evorl.data")
OFFICIAL_MARKERS = ("official", "json_2.1.1")


def has_games(data_dir: str | Path) -> bool:
    """True when `data_dir` holds at least one ALFWorld game file (any depth)."""
    if not os.path.isdir(data_dir):
        return False
    return any("game.tw-pddl" in files for _, _, files in os.walk(data_dir))


def names_official_data(data_dir: str | Path, alfworld_data: str | None = None) -> bool:
    """True when the path is meant for the official ALFWorld release (see the module docstring)."""
    path = Path(data_dir).expanduser().absolute()
    if any(m in part.lower() for part in path.parts[-3:] for m in OFFICIAL_MARKERS):
        return True
    root = os.environ.get("ALFWORLD_DATA") if alfworld_data is None else alfworld_data
    return bool(root) and path.is_relative_to(Path(root).expanduser().absolute())


def ensure_data(cfg: Config) -> None:
    """ALFWorld: use the games in env.data_dir; generate them on first use when the folder is meant
    for generated games; ConfigError when it names official data that is not there."""
    if cfg.env.name != "alfworld":
        return
    data_dir = cfg.env.data_dir
    if has_games(data_dir):
        return
    if names_official_data(data_dir):
        root = os.environ.get("ALFWORLD_DATA") or "<folder>"
        raise ConfigError(
            f"env.data_dir: {data_dir} names official ALFWorld data but holds no games "
            f"(absolute: {Path(data_dir).expanduser().absolute()}). Download the release with "
            f"`ALFWORLD_DATA={root} alfworld-download` and set env.data_dir to {root}/json_2.1.1 (on "
            "storage every node sees), or, for generated games, name a folder without 'official' "
            "outside $ALFWORLD_DATA (e.g. data/alfworld-easy). See docs/cluster.md, Data."
        )
    from envs.alfworld.generator import ensure_generated

    log.warning(
        "env.data_dir: %s holds no games: generating %d %s games per type",
        data_dir,
        cfg.env.generate_per_type,
        cfg.env.generate_preset,
    )
    ensure_generated(
        data_dir, cfg.env.generate_per_type, cfg.env.generate_preset, cfg.trainer.seed, workers=2
    )
