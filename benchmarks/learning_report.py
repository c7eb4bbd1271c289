"""Tables of the learning experiment (benchmarks/learning.sh) with Wilson 95% intervals.

    python benchmarks/learning_report.py [--results benchmarks/results/learning]

Inputs, all written by learning.sh into the results folder:
  eval_<label>.json           `evorl eval --json` stdout (start points, transfer checks)
  <mode>-seed<S>/summary.json  a training run's summary (its final_eval is the "after" figure)
  <mode>-seed<S>/metrics.jsonl a training run's per-iteration metrics (time/* keys, source success)
  meta.json                    budget, seeds, data and date of the experiment
Success rates are turned back into counts with the number of eval games of each type, which is
exact because every eval covers the whole split (trainer.eval_tasks >= games in the split; checked).
Writes learning.{json,md} next to the inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINED = "trained_success"
HELDOUT = "heldout_success"


def wilson(wins: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sound at 0 and n wins, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = wins / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def read_eval_stdout(path: Path) -> dict[str, float]:
    """The JSON object printed last by `evorl eval --json` (Ray may print log lines before it)."""
    lines = path.read_text().splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.rstrip() == "{"]
    for i in reversed(starts):
        try:
            return json.loads("\n".join(lines[i:]))
        except json.JSONDecodeError:
            continue
    raise ValueError(f"{path}: no JSON object from `evorl eval --json` found")


def counts(
    stats: dict[str, float], split: str, per_type: Counter, trained: set[str]
) -> dict[str, tuple[int, int]]:
    """(wins, games) per task type and for the trained / held-out / all groups."""
    out: dict[str, tuple[int, int]] = {}
    for tt, n in per_type.items():
        key = f"eval/{split}/{tt}"
        if key not in stats:
            raise ValueError(f"{key}: missing from the eval output (was the whole split evaluated?)")
        out[tt] = (round(stats[key] * n), n)
    groups = {
        TRAINED: [t for t in per_type if t in trained],
        HELDOUT: [t for t in per_type if t not in trained],
    }
    groups["success"] = list(per_type)
    for name, types in groups.items():
        out[name] = (sum(out[t][0] for t in types), sum(out[t][1] for t in types))
    return out


def fmt(wc: tuple[int, int]) -> str:
    w, n = wc
    lo, hi = wilson(w, n)
    return f"{w}/{n} = {w / n:.2f} [{lo:.2f}, {hi:.2f}]" if n else "-"


def _library(lib: dict | None) -> str:
    if not lib or not lib.get("skills"):
        return "-"
    return f"{lib['skills']} skills: {lib.get('accepted', 0)} accepted, {lib.get('candidate', 0)} candidates"


def plot_bars(rows: list[tuple[str, dict[str, tuple[int, int]]]], path: Path) -> None:
    """Success on trained and held-out types per model, with Wilson 95% error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 3.8))
    width = 0.38
    for j, (group, label) in enumerate(((TRAINED, "trained types"), (HELDOUT, "held-out types"))):
        xs, ys, err = [], [], [[], []]
        for i, (_, c) in enumerate(rows):
            w, n = c[group]
            lo, hi = wilson(w, n)
            p = w / n if n else 0.0
            xs.append(i + (j - 0.5) * width)
            ys.append(p)
            err[0].append(p - lo)
            err[1].append(hi - p)
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=label)
    ax.set_xticks(range(len(rows)), [name for name, _ in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("greedy success (Wilson 95%)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_stats(run: Path) -> dict:
    """Per-iteration figures of one run folder (summary.json + metrics.jsonl), as the reports show them."""
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    iters = [m for m in metrics if "iteration_s" in m]
    times = {
        k: statistics.mean(m[k] for m in iters if k in m)
        for k in sorted({k for m in iters for k in m if k.startswith("time/")})
    }
    return {
        "iterations": len(iters),
        "wall_s": sum(m["iteration_s"] for m in iters),
        "mean_iteration_s": statistics.mean(m["iteration_s"] for m in iters) if iters else 0.0,
        "mean_stage_s": times,
        "train_source_success": [m.get("source/success") for m in iters],
        "trained_turns": [m.get("turns") for m in iters],
        "downstream_success": [m.get("downstream/success") for m in iters],  # evolving: with a skill
        "baseline_success": [m.get("baseline/success") for m in iters],  # same tasks, no skill
        "library": summary.get("library"),
        "policy_version": summary.get("policy_version"),
    }  # fmt: skip


def pooled(
    rows: list[tuple[str, dict[str, tuple[int, int]]]],
) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """One row per mode (or transfer check) with wins and games summed over its seeds
    (`after grpo-seed0`, `after grpo-seed1`, ...; `sft+candidates-seed0`, ...)."""
    by_mode: dict[str, list[dict[str, tuple[int, int]]]] = {}
    for name, c in rows:
        if "-seed" in name:
            by_mode.setdefault(name.removeprefix("after ").rsplit("-seed", 1)[0], []).append(c)
    out = []
    for mode, cs in sorted(by_mode.items()):
        if len(cs) > 1:
            keys = set.intersection(*(set(c) for c in cs))
            out.append(
                (
                    f"{mode}, {len(cs)} seeds pooled",
                    {k: tuple(map(sum, zip(*(c[k] for c in cs)))) for k in keys},
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "learning"))
    args = p.parse_args(argv)
    res = Path(args.results)
    meta = json.loads((res / "meta.json").read_text())

    from cluster.core.config import load_config
    from cluster.core.storage import atomic_write_bytes, write_json_plain
    from envs import list_tasks

    cfg = load_config(ROOT / meta["config"])
    split = cfg.env.eval_splits[0]
    tasks = list_tasks(cfg.env, split)
    if cfg.trainer.eval_tasks < len(tasks):
        raise ValueError(
            f"{meta['config']}: trainer.eval_tasks {cfg.trainer.eval_tasks} < {len(tasks)} games"
        )
    per_type = Counter(t.task_type for t in tasks)
    trained = set(cfg.env.trained_types)

    rows: list[tuple[str, dict[str, tuple[int, int]]]] = []
    order = {"untrained": 0, "sft": 1}  # starts first, then transfer checks, then the runs
    for f in sorted(res.glob("eval_*.json"), key=lambda f: (order.get(f.stem[5:], 2), f.stem)):
        rows.append((f.stem.removeprefix("eval_"), counts(read_eval_stdout(f), split, per_type, trained)))
    runs = {}
    for d in sorted(x for x in res.iterdir() if x.is_dir() and (x / "summary.json").exists()):
        summary = json.loads((d / "summary.json").read_text())
        rows.append((f"after {d.name}", counts(summary["final_eval"], split, per_type, trained)))
        runs[d.name] = run_stats(d)
    rows += pooled(rows)

    types = sorted(per_type, key=lambda t: (t not in trained, t))
    table = {name: {k: list(v) + list(wilson(*v)) for k, v in c.items()} for name, c in rows}
    write_json_plain(res / "learning.json", {"meta": meta, "split": split, "eval": table, "runs": runs})
    lines = [
        f"# Learning on generated ALFWorld (easy preset, `{res.name}`): {meta['date']}",
        "",
        f"Machine: {meta['machine']}. Config `{meta['config']}`; data `{cfg.env.data_dir}` ({split}: "
        f"{len(tasks)} games, {', '.join(f'{per_type[t]} {t}' for t in types)}).",
        f"Greedy eval, constrained decoding, max {cfg.env.max_steps} steps. Wins/games = rate [Wilson 95% interval].",
        f"Start: {meta['start']}. Budget per run: {meta['budget']}. Seeds: {meta['seeds']}.",
        "",
        "| model | trained types | held-out types | all |",
        "|---|---|---|---|",
    ]
    for name, c in rows:
        lines.append(f"| {name} | {fmt(c[TRAINED])} | {fmt(c[HELDOUT])} | {fmt(c['success'])} |")
    lines += [
        "",
        "Per task type (wins/games):",
        "",
        "| model | " + " | ".join(types) + " |",
        "|---" * (len(types) + 1) + "|",
    ]
    for name, c in rows:
        lines.append(f"| {name} | " + " | ".join(f"{c[t][0]}/{c[t][1]}" for t in types) + " |")
    if runs:
        lines += [
            "",
            "| run | iterations | wall (s) | s/iteration | source success per iteration | "
            "downstream with skill / no-skill baseline | turns trained | library |",
            "|---|---|---|---|---|---|---|---|",
        ]

        def seq(xs: list, spec: str = ".2f") -> str:
            return ", ".join(format(x, spec) for x in xs if x is not None) or "-"

        for name, r in runs.items():
            down = [
                f"{d:.2f}/{b:.2f}"
                for d, b in zip(r.get("downstream_success", []), r.get("baseline_success", []))
                if d is not None and b is not None
            ]
            lines.append(
                f"| {name} | {r['iterations']} | {r['wall_s']:.0f} | {r['mean_iteration_s']:.0f} | "
                f"{seq(r['train_source_success'])} | {', '.join(down) or '-'} | {seq(r.get('trained_turns', []), '.0f')} | "
                f"{_library(r['library'])} |"
            )
    notes = [f.read_text().strip() for f in sorted(res.glob("transfer-*.txt"))]
    if notes:
        lines += [
            "",
            "Transfer check (the evolving run's library given to the SFT start model; rows `sft+...`):",
            "",
        ]
        lines += [f"- {n}" for n in notes]
    if meta.get("notes"):
        lines += ["", *meta["notes"]]
    atomic_write_bytes(res / "learning.md", ("\n".join(lines) + "\n").encode())
    plot_bars(rows, res / "learning.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
