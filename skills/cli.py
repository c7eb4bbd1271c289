"""`evorl skills list|show|export|import --library DIR`: inspect and move skill libraries.

Export writes `<out>.jsonl` (one record per skill: skill, provenance, stats, status, embedding) and
`<out>.md` (the Markdown cards the solver sees). Import reads any number of files, each told apart by
its content (skills.importer: export records, skill JSON in either schema, raw extractor responses),
refuses every bad record with a named reason, and adds the rest through the library's merge rules
as candidates with zero trials; each import is saved as a new library version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_commands(sub, data_sub) -> None:
    p = sub.add_parser("skills", help="inspect, export and import a skill library")
    ssub = p.add_subparsers(dest="skills_command", required=True)

    def lib_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--library", required=True, help="library folder (library-v*.parquet + manifest.json)")

    q = ssub.add_parser("list", help="one line per skill: id, status, trials, win rate, gain, name")
    lib_arg(q)
    q.add_argument("--status", choices=["candidate", "accepted", "retired"], help="only this status")
    q.set_defaults(func=cmd_list)

    q = ssub.add_parser("show", help="a skill's card, provenance and statistics")
    lib_arg(q)
    q.add_argument("skill", help="skill id, id prefix or name")
    q.add_argument("--json", action="store_true", help="print the full export record as JSON")
    q.set_defaults(func=cmd_show)

    q = ssub.add_parser("export", help="write OUT.jsonl and OUT.md")
    lib_arg(q)
    q.add_argument("--out", required=True, help="output path without extension")
    q.add_argument("--status", choices=["candidate", "accepted", "retired"], help="only this status")
    q.set_defaults(func=cmd_export)

    q = ssub.add_parser(
        "import", help="add skills from files: export records, skill JSON, raw extractor responses"
    )
    lib_arg(q)
    q.add_argument("files", nargs="+", help="files of any of those kinds (JSON, JSONL or text)")
    q.add_argument(
        "--schema", choices=["paper", "strict"], default="paper", help="validation rules (default paper)"
    )
    q.set_defaults(func=cmd_import)


def _open(args):
    from skills.library import LibraryError, SkillLibrary

    if not Path(args.library).is_dir():
        print(f"error: library folder {args.library} does not exist", file=sys.stderr)
        return None
    try:
        lib = SkillLibrary.open(args.library)
    except LibraryError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    for path, why in lib.load_report.skipped:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    return lib


def cmd_list(args) -> int:
    lib = _open(args)
    if lib is None:
        return 1
    conf = lib.gate.confidence
    print(f"# {args.library}: version {lib.load_report.version}, {len(lib)} skills")
    print(
        f"{'skill_id':<16}  {'status':<9} {'trials':>6} {'win':>5} {'base':>5} {'gain':>6} {'gain_lcb':>8}  name"
    )
    for e in lib:
        if args.status and e.status != args.status:
            continue
        s = e.stats
        lo, _ = s.gain_interval(conf)
        print(f"{e.skill_id:<16}  {e.status:<9} {s.trials:>6} {s.win_rate:>5.2f} {s.baseline_rate:>5.2f} "
              f"{s.gain:>+6.2f} {lo:>+8.2f}  {e.skill.name}")  # fmt: skip
    return 0


def cmd_show(args) -> int:
    from skills.library import entry_record
    from skills.schema import render_card

    lib = _open(args)
    if lib is None:
        return 1
    try:
        e = lib.get(args.skill)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 1
    rec = entry_record(e, lib.gate.confidence)
    if args.json:
        print(json.dumps(rec, indent=1))
        return 0
    st = rec["stats"]
    print(render_card(e.skill, max_chars=100_000))
    print(f"\nid {e.skill_id}  status {e.status}  merged {len(e.merged_ids)}")
    print(f"provenance {rec['provenance']}")
    print(f"trials {st['trials']} wins {st['wins']} win rate {st['win_rate']:.3f} "
          f"[{st['win_interval'][0]:.3f}, {st['win_interval'][1]:.3f}]; baseline {st['baseline_wins']}/"
          f"{st['baseline_trials']}; gain {st['gain']:+.3f} [{st['gain_interval'][0]:+.3f}, "
          f"{st['gain_interval'][1]:+.3f}] at one-sided confidence {lib.gate.confidence}")  # fmt: skip
    return 0


def cmd_export(args) -> int:
    from skills.library import write_export

    lib = _open(args)
    if lib is None:
        return 1
    entries = [e for e in lib if not args.status or e.status == args.status]
    write_export(entries, Path(args.out), lib.gate.confidence)
    print(f"exported {len(entries)} skills to {args.out}.jsonl and {args.out}.md")
    return 0


def cmd_import(args) -> int:
    from skills.importer import read_skills
    from skills.library import Provenance

    found = [r for f in args.files for r in read_skills(f, schema=args.schema)]
    refused = [r for r in found if r.skill is None]
    for r in refused:
        print(f"refused {r.where}: {r.reason}", file=sys.stderr)
    good = [r for r in found if r.skill is not None]
    if not good:
        print(f"error: no valid skill in {', '.join(args.files)}", file=sys.stderr)
        return 1
    Path(args.library).mkdir(parents=True, exist_ok=True)
    lib = _open(args)
    if lib is None:
        return 1
    before = len(lib)
    for r in good:  # a candidate with zero trials: an import earns nothing
        lib.add(r.skill, Provenance(f"import:{r.where}", 0, 0, r.skill.metadata.source_task_type))
    path = lib.save()
    print(
        f"imported {len(good)} skills ({len(lib) - before} new, the rest merged), refused {len(refused)} -> {path}"
    )
    return 1 if refused else 0
