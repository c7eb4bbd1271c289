"""Keep only planner demonstrations of the trained task types (held-out types are never seen in SFT).

    python benchmarks/learning_demos.py IN.jsonl OUT.jsonl --per-type N

Reads `evorl data alfworld-demos` JSONL, keeps the first N episodes of each trained type (sorted by
task id, so the selection is reproducible) and writes them atomically. Prints what it kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from cluster.core.storage import atomic_write_bytes
from envs.alfworld.check import read_demos
from envs.alfworld.tasks import HELDOUT_TYPES, TRAINED_TYPES


def select(records: list[dict], per_type: int, types: tuple[str, ...] = TRAINED_TYPES) -> list[dict]:
    """First `per_type` records (by task id) of each type in `types`; every other type is dropped."""
    by_type: dict[str, list[dict]] = defaultdict(list)
    for rec in sorted(records, key=lambda r: str(r["task_id"])):
        if rec["task_type"] in types:
            by_type[rec["task_type"]].append(rec)
    return [rec for t in types for rec in by_type[t][:per_type]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("demos")
    p.add_argument("out")
    p.add_argument("--per-type", type=int, default=4)
    args = p.parse_args(argv)
    if args.per_type < 1:
        print("learning_demos: --per-type must be >= 1", file=sys.stderr)
        return 2
    kept = select(list(read_demos(args.demos)), args.per_type)
    leaked = [r["task_id"] for r in kept if r["task_type"] in HELDOUT_TYPES]
    if leaked:  # cannot happen with TRAINED_TYPES; guards a future edit of the type lists
        raise AssertionError(f"held-out demos selected: {leaked}")
    atomic_write_bytes(args.out, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())
    counts: dict[str, int] = defaultdict(int)
    for r in kept:
        counts[r["task_type"]] += 1
    steps = sum(len(r["steps"]) for r in kept)
    print(f"[demos] kept {len(kept)} episodes ({steps} steps) -> {args.out}: {dict(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
