"""`evorl data mind2web-eval` and `evorl data mind2web-check`."""

from __future__ import annotations

import argparse
import json
import sys

_METRICS = (
    "element_acc",
    "op_f1",
    "step_sr",
    "macro_element_acc",
    "macro_op_f1",
    "macro_step_sr",
    "task_sr",
    "action_acc",
)


def add_commands(sub: argparse._SubParsersAction, data_sub: argparse._SubParsersAction) -> None:
    p = data_sub.add_parser("mind2web-eval", help="replay a Mind2Web split with a policy, print the metrics")
    p.add_argument(
        "--data",
        default=None,
        help="Mind2Web folder: the JSON release or the Hub's Parquet files (default: bundled sample)",
    )
    p.add_argument("--split", default="test_task")
    p.add_argument("--policy", choices=["oracle", "random"], default="oracle")
    p.add_argument("--mode", choices=["paper", "teacher_forced"], default="teacher_forced")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-candidates", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--limit", type=int, default=None, help="first N tasks only")
    p.add_argument("--cache-dir", default=None, help="Parquet cache (default $EVORL_CACHE/mind2web)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = data_sub.add_parser("mind2web-check", help="validate a Mind2Web folder and build its Parquet cache")
    p.add_argument(
        "--data",
        default=None,
        help="Mind2Web folder: the JSON release or the Hub's Parquet files (default: bundled sample)",
    )
    p.add_argument("--splits", nargs="*", default=None, help="default: every split found")
    p.add_argument("--cache-dir", default=None)
    p.set_defaults(func=cmd_check)


def cmd_eval(args: argparse.Namespace) -> int:
    from envs.mind2web.evaluate import evaluate
    from envs.mind2web.loader import Mind2WebFormatError

    try:
        res = evaluate(
            args.data,
            args.split,
            args.policy,
            args.mode,
            args.seed,
            args.max_candidates,
            args.max_steps,
            args.cache_dir,
            args.limit,
        )
    except (Mind2WebFormatError, FileNotFoundError, ValueError) as e:
        print(f"[mind2web-eval] error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(
        f"[mind2web-eval] {res['data_dir']} split={res['split']} policy={res['policy']} mode={res['mode']} "
        f"tasks={res['tasks']} steps={res['scored_steps']}/{res['gold_steps']}"
    )
    for k in _METRICS:
        print(f"  {k:<18} {res[k]:.4f}")
    print(f"  {'gold_in_admissible':<18} {res['gold_in_admissible']:.4f}")
    for dom, m in res["per_domain"].items():
        print(
            f"  domain {dom:<14} tasks={m['tasks']:<4} step_sr={m['step_sr']:.4f} task_sr={m['task_sr']:.4f}"
        )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from envs.mind2web.loader import Mind2WebFormatError, available_splits
    from envs.mind2web.tasks import SAMPLE_DIR, list_tasks

    data = args.data or SAMPLE_DIR
    try:
        splits = args.splits or available_splits(data)
        if not splits:
            print(f"[mind2web-check] no Mind2Web split found under {data}", file=sys.stderr)
            return 2
        for split in splits:
            tasks = list_tasks(data, split, args.cache_dir)
            sites = {t.ref.rpartition("#")[0] for t in tasks}
            types = {t.task_type for t in tasks}
            print(
                f"[mind2web-check] {split}: {len(tasks)} tasks, {len(types)} domain/subdomains, "
                f"{len(sites)} cached files"
            )
    except (Mind2WebFormatError, FileNotFoundError, ValueError) as e:
        print(f"[mind2web-check] error: {e}", file=sys.stderr)
        return 2
    return 0
