"""`evorl` command line. Each area registers its own subcommands (`add_commands(subparsers)`),
so this file stays a table of contents."""

from __future__ import annotations

import argparse
import importlib
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evorl", description="Evolving-RL on Ray")
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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        rc = 130
    sys.exit(rc or 0)
