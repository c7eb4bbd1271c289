"""The data a run needs, made or checked before any actor starts."""

from __future__ import annotations

from cluster.core.config import Config


def ensure_data(cfg: Config) -> None:
    """Generated ALFWorld games are made on first use (official data is used as found)."""
    if cfg.env.name != "alfworld":
        return
    from envs.alfworld.generator import ensure_generated

    ensure_generated(
        cfg.env.data_dir, cfg.env.generate_per_type, cfg.env.generate_preset, cfg.trainer.seed, workers=2
    )
