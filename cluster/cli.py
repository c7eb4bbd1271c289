"""`evorl` command line. Each area registers its own subcommands (`add_commands(subparsers)`),
so this file stays a table of contents, plus the one error path every command shares: a config or
input error prints `error: ...` naming the file and key and exits 2, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that contribute subcommands; each defines add_commands(subparsers).
COMMAND_MODULES = [
    "cluster.commands",
    "envs.alfworld.cli",
    "envs.mind2web.cli",
    "skills.cli",
    "cluster.sft",
    "cluster.serving.cli",
    "cluster.export",
]


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "your input is wrong", whichever command raised them."""
    from cluster.core.config import ConfigError
    from cluster.core.storage import CorruptFileError, DiskFullError

    errors: list[type[BaseException]] = [ConfigError, CorruptFileError, DiskFullError, FileNotFoundError,
                                         NotADirectoryError, IsADirectoryError, PermissionError]  # fmt: skip
    for mod, name in (("envs.mind2web.loader", "Mind2WebFormatError"), ("envs.alfworld.tasks", "TaskDataError"),
                      ("envs.alfworld.env", "GameFileError"), ("skills.library", "LibraryError")):  # fmt: skip
        try:
            errors.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evorl", description="Evolving-RL on Ray")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show every library's INFO logs on the console (vLLM, DeepSpeed, Ray actors)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="generate / check / convert datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # area not built yet
            raise
        mod.add_commands(sub, data_sub)
    return parser


def configure_logging(verbose: bool) -> None:
    """Our own loggers at INFO on the console; third-party INFO only with -v (they go to the Ray
    session's log files and the dashboard otherwise)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")  # fmt: skip
    for ours in ("evorl", "cluster", "actors", "learner", "envs", "skills"):
        logging.getLogger(ours).setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    if args.verbose:
        import os

        os.environ["EVORL_VERBOSE"] = "1"
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        rc = 130
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        rc = 2
    sys.exit(rc or 0)
