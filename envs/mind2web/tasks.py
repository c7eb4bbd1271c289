"""Mind2Web tasks as TaskSpecs: the retrieval keys (task text, domain/subdomain) and a ref per task."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from cluster.core.records import TaskSpec
from envs.mind2web.loader import INDEX_COLUMNS, split_parquets

SAMPLE_DIR = Path(__file__).parent / "sample"


def list_tasks(data_dir: str | Path, split: str, cache_dir: str | Path | None = None) -> list[TaskSpec]:
    """Every task of a split; caches the split as Parquet on first use (validating it)."""
    out = []
    for parquet in split_parquets(data_dir, split, cache_dir):
        rows = pq.read_table(parquet, columns=INDEX_COLUMNS).to_pylist()
        for row in rows:
            aid = row["annotation_id"]
            out.append(
                TaskSpec(
                    task_id=f"mind2web/{split}/{aid}",
                    env="mind2web",
                    task_type=f"{row['domain']}/{row['subdomain']}",
                    text=row["confirmed_task"],
                    ref=f"{parquet}#{aid}",
                    split=split,
                )
            )
    return out
