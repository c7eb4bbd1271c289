"""`evorl data alfworld | alfworld-check | alfworld-demos`. Heavy imports stay inside the commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def add_commands(sub: argparse._SubParsersAction, data_sub: argparse._SubParsersAction) -> None:
    p = data_sub.add_parser("alfworld", help="generate planner-verified ALFWorld games (all six task types)")
    p.add_argument("--out", required=True, help="output folder (official layout <split>/<task>/trial_N)")
    p.add_argument("--per-type", type=int, required=True, help="games per task type in train")
    p.add_argument("--valid-per-type", type=int, default=None, help="games per task type per valid split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=("easy", "standard"), default="easy")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--splits", default="train,valid_seen,valid_unseen")
    p.add_argument("--overwrite", action="store_true", help="replace games this generator wrote before")
    p.set_defaults(func=cmd_generate)

    p = data_sub.add_parser("alfworld-check", help="play the planner on every game under DIR")
    p.add_argument("dir")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_check)

    p = data_sub.add_parser("alfworld-demos", help="planner solutions as solver demonstrations (JSONL)")
    p.add_argument("dir")
    p.add_argument("--out", required=True, help="JSONL file, one episode per line")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.set_defaults(func=cmd_demos)


def _alfworld_env() -> None:
    os.environ.setdefault("ALFWORLD_DATA", os.path.join(os.getcwd(), ".cache", "alfworld"))


def cmd_generate(args: argparse.Namespace) -> int:
    _alfworld_env()
    from envs.alfworld.generator import generate

    t0 = time.time()
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    try:
        rep = generate(
            args.out,
            per_type=args.per_type,
            seed=args.seed,
            preset=args.preset,
            workers=args.workers,
            splits=splits,
            valid_per_type=args.valid_per_type,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as e:
        print(f"evorl data alfworld: {e}", file=sys.stderr)
        return 2
    print(f"[alfworld] wrote {rep.total} planner-verified games to {rep.out_dir} in {time.time() - t0:.1f}s")
    for split, counts in rep.counts.items():
        print(f"  {split:13s} " + ", ".join(f"{t}={n}" for t, n in counts.items()))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    _alfworld_env()
    from envs.alfworld.check import check_games

    try:
        rep = check_games(args.dir, workers=args.workers)
    except (FileNotFoundError, ValueError) as e:
        print(f"evorl data alfworld-check: {e}", file=sys.stderr)
        return 2
    print(json.dumps(rep.to_json(), indent=2) if args.json else rep.summary())
    return 0 if rep.games and rep.won == len(rep.games) else 1


def cmd_demos(args: argparse.Namespace) -> int:
    _alfworld_env()
    from envs.alfworld.check import write_demos

    try:
        rep = write_demos(args.dir, args.out, workers=args.workers)
    except (FileNotFoundError, ValueError) as e:
        print(f"evorl data alfworld-demos: {e}", file=sys.stderr)
        return 2
    steps = sum(g.steps for g in rep.games if g.won)
    print(f"[alfworld] wrote {rep.won} demonstrations ({steps} steps) to {args.out}")
    if rep.won < len(rep.games):
        print(f"  {len(rep.games) - rep.won} games not solved by the planner were left out:", file=sys.stderr)
        for g in rep.games:
            if not g.won:
                print(f"    {g.task_id}: {g.error}", file=sys.stderr)
    return 0
