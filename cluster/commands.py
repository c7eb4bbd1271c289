"""Foundation commands: prepare-model, doctor, train, eval."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys


def add_commands(sub: argparse._SubParsersAction, data_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-model", help="convert the embedded SmolLM2-135M GGUF to an HF folder")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_prepare_model)

    p = sub.add_parser("doctor", help="check the installation")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("train", help="run Evolving-RL (or a baseline mode) from a config")
    p.add_argument("--config", required=True)
    p.add_argument(
        "--resume", action="store_true", help="continue the run folder's newest complete checkpoint"
    )
    p.add_argument("--overwrite", action="store_true", help="start over in a run folder that holds a run")
    p.add_argument(
        "--print-config", action="store_true", help="validate and print the resolved config, then exit"
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.iterations=3")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval", help="evaluate a checkpoint: with-skill and no-skill success on the same tasks"
    )
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", default="",
                   help="HF model folder, checkpoint (iter-N), checkpoints root or run folder; default: model.path")  # fmt: skip
    p.add_argument("--protocol", choices=("online", "teacher", "library", "none"), default="online",
                   help="online: the paper's (retrieve a training task, play it, extract, play with the skill); "
                        "teacher: a rule-written skill from the retrieved task's planner solution; "
                        "library: skills from --skills; none: no skill")  # fmt: skip
    p.add_argument(
        "--skills", default="", help="skill library folder for --protocol library (the transfer experiment)"
    )
    p.add_argument(
        "--skill-status",
        type=skill_statuses,
        default=("accepted",),
        help="comma-separated library statuses to retrieve from (accepted, candidate); default accepted: "
        "'accepted,candidate' gives the extractor's ungated skills too, for runs too short for the gate",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", default="", help="also write the result as JSON to this file (atomically)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plot", help="learning-curve PNGs from a run folder")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_plot)


def skill_statuses(text: str) -> tuple[str, ...]:
    """`--skill-status accepted,candidate` -> ('accepted', 'candidate'); retired skills are never served."""
    statuses = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not statuses or set(statuses) - {"accepted", "candidate"}:
        raise argparse.ArgumentTypeError(f"expected accepted and/or candidate, comma-separated, not {text!r}")
    return statuses


def cmd_prepare_model(args: argparse.Namespace) -> int:
    from cluster.core.model_store import embedded_dir, is_prepared, prepare_embedded

    if is_prepared() and not args.force:
        print(f"[prepare-model] embedded model ready at {embedded_dir()}")
        return 0
    out = prepare_embedded(force=args.force)
    print(f"[prepare-model] wrote {out}")
    return 0


def _version(mod: str) -> str | None:
    try:
        m = importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - doctor reports anything that breaks an import
        return f"ERROR {type(e).__name__}: {e}"[:120] if not isinstance(e, ModuleNotFoundError) else None
    return getattr(m, "__version__", "?")


def cmd_doctor(args: argparse.Namespace) -> int:
    from cluster.core.model_store import embedded_dir, is_prepared

    problems = []
    for mod in ("torch", "vllm", "deepspeed", "ray", "transformers", "alfworld", "pyarrow"):
        v = _version(mod)
        print(f"{mod:14s} {v or 'MISSING'}")
        if v is None or v.startswith("ERROR"):
            problems.append(f"{mod} is not importable: run `make setup`")
    gpu = False
    try:
        import torch

        gpu = torch.cuda.is_available()
        print(f"{'gpu':14s} {torch.cuda.get_device_name(0) if gpu else 'none (CPU stack)'}")
    except Exception:  # noqa: BLE001
        pass
    prepared = is_prepared()
    print(f"{'default model':14s} {embedded_dir()} ({'ready' if prepared else 'NOT prepared'})")
    if not prepared:
        problems.append("embedded model not prepared: run `evorl prepare-model`")
    for tool in ("g++", "ninja"):
        if not shutil.which(tool) and not shutil.which(tool, path=f"{sys.prefix}/bin"):
            problems.append(f"{tool} not found: DeepSpeed compiles its CPU ops with it")
    if problems:
        print("\n".join(["", "problems:"] + [f"  - {p}" for p in problems]), file=sys.stderr)
        return 1
    print("ok")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cluster.core.config import load_config
    from cluster.run import train

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        from cluster.core.config import dump_config

        print(dump_config(cfg), end="")
        return 0
    return train(cfg, resume=args.resume, overwrite=args.overwrite)


def cmd_eval(args: argparse.Namespace) -> int:
    from cluster.core.config import load_config
    from cluster.run import evaluate_only

    cfg = load_config(args.config, args.overrides)
    return evaluate_only(cfg, checkpoint=args.checkpoint, skills=args.skills, protocol=args.protocol,
                         as_json=args.json, statuses=args.skill_status, out=args.out)  # fmt: skip


def cmd_plot(args: argparse.Namespace) -> int:
    from cluster.plot import plot_run

    for path in plot_run(args.run_dir):
        print(path)
    return 0
