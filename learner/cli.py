"""`evorl sft`: supervised warm start on demonstrations (solver; optionally extractor), through the learner group."""

from __future__ import annotations

import argparse
import json
import sys
import time


def add_commands(sub, data_sub) -> None:
    p = sub.add_parser("sft", help="supervised warm start of the solver on demonstrations (JSONL)")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--demos", required=True, help="JSONL from `evorl data alfworld-demos`")
    p.add_argument("--out", default="", help="checkpoint root (default <trainer.run_dir>/sft)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-turns", type=int, default=32, help="demo steps per optimizer step")
    p.add_argument("--lr", type=float, default=1e-5, help="SFT learning rate (overrides learner.lr)")
    p.add_argument("--max-demos", type=int, default=0, help="use only the first N demos (0 = all)")
    p.add_argument(
        "--skill-cards",
        type=float,
        default=0.0,
        help="fraction of demos shown with a teacher skill card of the same task type (0-1)",
    )
    p.add_argument("--extractor", action="store_true",
                   help="also train the extractor role: demo transcript -> teacher skill JSON")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="config overrides key.path=value")
    p.set_defaults(func=cmd_sft)


def cmd_sft(args: argparse.Namespace) -> int:
    import itertools
    import logging
    from pathlib import Path

    from cluster.config import ConfigError, load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = load_config(args.config, [*args.overrides, f"learner.lr={args.lr}"])
    except ConfigError as e:
        print(f"evorl sft: {e}", file=sys.stderr)
        return 2
    if args.epochs < 1 or args.batch_turns < 1:
        print("evorl sft: --epochs and --batch-turns must be >= 1", file=sys.stderr)
        return 2
    if not 0.0 <= args.skill_cards <= 1.0:
        print("evorl sft: --skill-cards must be within [0, 1]", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    from cluster.model_store import resolve_model
    from cluster.placement import init_ray
    from cluster.records import turns_to_table
    from envs.alfworld.check import read_demos
    from learner.group import LearnerGroup
    from learner.sft import batches, demo_turns

    try:
        tok = AutoTokenizer.from_pretrained(resolve_model(cfg.model.path))
        demos = read_demos(args.demos)
        if args.max_demos:
            demos = itertools.islice(demos, args.max_demos)
        turns, skipped = demo_turns(
            demos, tok, cfg, where=args.demos, skill_cards=args.skill_cards, extractor=args.extractor,
            seed=cfg.trainer.seed,
        )  # fmt: skip
    except (OSError, ValueError) as e:
        print(f"evorl sft: {e}", file=sys.stderr)
        return 2
    if not turns:
        print(f"evorl sft: {args.demos}: no usable demonstration steps", file=sys.stderr)
        return 2
    out = args.out or str(Path(cfg.trainer.run_dir) / "sft")
    roles = {r: sum(t.role == r for t in turns) for r in ("solver", "extractor")}
    print(f"[sft] {len(turns)} demo turns {roles} ({skipped} skipped), {args.epochs} epochs -> {out}")
    init_ray(cfg)
    group = LearnerGroup(cfg)
    log_path = Path(out) / "sft_metrics.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "a") as log_file:
        for step, (epoch, chunk) in enumerate(
            batches(turns, args.batch_turns, args.epochs, cfg.trainer.seed)
        ):
            m = group.sft(turns_to_table(chunk))
            m.update(epoch=epoch, step=step)
            log_file.write(json.dumps(m) + "\n")
            log_file.flush()
            print(f"[sft] epoch {epoch} step {step}: nll {m['nll']:.4f} ({m['step_time_s']:.1f}s)")
    path = group.save(out)
    print(f"[sft] done in {time.perf_counter() - t0:.0f}s; checkpoint {path} (model.path for RL)")
    group.shutdown()
    return 0
