"""Write the result tables into docs/results.md and the README "Results" section.

    python benchmarks/write_tables.py

Both files keep their hand-written text; only the block between
`<!-- BEGIN GENERATED: benchmarks/write_tables.py -->` and `<!-- END GENERATED -->` is replaced:
in docs/results.md by every benchmarks/results/*.md (and the learning*/learning.md) in a fixed order,
in README.md by one headline row per benchmark read from the JSON results (a missing or malformed
result leaves its row out and says so on stderr). Files are written atomically.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN = "<!-- BEGIN GENERATED: benchmarks/write_tables.py -->"
END = "<!-- END GENERATED -->"
ORDER = (
    "learning/learning.md",
    "iteration_cost.md",
    "iteration_cost_evolving.md",
    "overlap.md",
    "quickstart.md",
    "iteration_breakdown.md",
    "rollout_constrained.md",
    "learner_step.md",
    "weight_sync.md",
    "trl_multiturn.md",
    "faults.md",
    "alfworld_env.md",
    "mind2web_loader.md",
)


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _day(d: dict) -> str:
    return str(d.get("date", "?"))[:10]


def _ci(t) -> str:
    return f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"


def _learning() -> list[str]:
    d = _load("learning/learning.json")
    rows, dates = [], d.get("eval_dates", {})

    def day(*labels: str) -> str:
        """The latest of these evaluations' dates; the report's, marked so, for evals that did not record one."""
        known = [dates[x] for x in labels if dates.get(x)]
        return max(known)[:10] if known and len(known) == len(labels) else f"report {_day(d['machine'])}"

    for start in d.get("starts") or {"start": {}}:  # every SFT recipe whose go/no-go ran
        for label, name in ((f"{start}_teacher", "teacher card"), (f"{start}_online", "own extracted skill")):
            g = d["gonogo"].get(label, {}).get("trained")
            if g:
                what = f"go/no-go, {start} model + {name}, trained types (paired)"
                rows.append(_paired_row(what, g, day(label)))
    modes = d.get("modes", {})
    # evolving, grpo and their training variants (evolving-lr5e-6), each row against the start
    for mode in [m for m in modes if m != "start"] if "start" in modes else []:
        off = {str(s) for s in d.get("off_budget", {}).get(mode, [])}  # listed, not pooled: not in this row
        w, s0 = modes[mode]["with_skill"], modes["start"]["with_skill"]
        runs = {seed: r for seed, r in d["runs"].get(mode, {}).items() if str(seed) not in off}
        paired = "; ".join(f"seed {seed}: {_pdiff(v)}" for seed, r in runs.items()
                           if (v := r.get("vs_start", {}).get("with_skill", {}).get("trained")))  # fmt: skip
        when = day(*(r.get("run", "?") + "_online" for r in runs.values()))
        rows.append(f"| {mode} (seed{'s' * (len(runs) > 1)} {', '.join(map(str, runs))}), online protocol with skill: trained / held-out | "
                    f"{_ci(w['trained'])} / {_ci(w['heldout'])} | start {_ci(s0['trained'])} / {_ci(s0['heldout'])} | "
                    f"paired vs start, trained: {paired or 'see docs'} | {when} |")  # fmt: skip
    # the paper's comparison: evolving against grpo from the same start, seed and variant, same games
    for variant, seeds in d.get("evolving_vs_grpo", {}).items():
        cells = {seed: v for seed, x in seeds.items() if (v := x.get("with_skill", {}).get("trained"))}
        if cells:
            name = "evolving vs grpo" + ("" if variant == "base" else f" ({variant})")
            wins = "; ".join(
                f"seed {s}: {v['a']}/{v['games']} vs {v['b']}/{v['games']}" for s, v in cells.items()
            )
            diffs = "; ".join(f"seed {s}: {_pdiff(v)}" for s, v in cells.items())
            runs = [name + "_online" for s in cells for name in seeds[s]["runs"].values()]
            rows.append(
                f"| {name}, online protocol with skill, trained types (paired per seed) | {wins} | grpo | {diffs} | {day(*runs)} |"
            )
    # transfer: an evolving run's library given to a model not trained with it
    for who, t in d.get("transfer", {}).items():
        if g := t.get("trained"):
            what = f"transfer, {who}: library protocol, trained types (paired)"
            rows.append(_paired_row(what, g, day("transfer-" + who)))
    m2w = d.get("mind2web", {})
    if all(f"m2w-{m}" in m2w for m in ("evolving", "grpo", "untrained", "random")):
        sr = {m: _pooled_step_sr(m2w[f"m2w-{m}"]) for m in ("evolving", "grpo", "untrained", "random")}
        rows.append(f"| Mind2Web bundled sample, step SR (all test splits pooled, teacher-forced): evolving / grpo | "
                    f"{sr['evolving'][0]}/{sr['evolving'][1]} / {sr['grpo'][0]}/{sr['grpo'][1]} | untrained "
                    f"{sr['untrained'][0]}/{sr['untrained'][1]}, random {sr['random'][0]}/{sr['random'][1]} | see docs | {day(*('m2w-' + m for m in sr))} |")  # fmt: skip
    return rows


def _paired_row(measure: str, g: dict, when: str) -> str:
    """One README row of a paired with-skill / no-skill result (learning.py's paired_diff) on the same games."""
    return f"| {measure} | {g['with_skill']}/{g['games']} | no skill {g['no_skill']}/{g['games']} | {_pdiff(g)} | {when} |"


def _pdiff(g: dict) -> str:
    """A paired difference (learning.py's `paired`): diff [95% interval], McNemar p."""
    return f"{g['diff']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}], McNemar p {g['mcnemar_p']:.2f}"


def _pooled_step_sr(stats: dict) -> tuple[int, int]:
    """(right steps, scored steps) over the test splits of one Mind2Web evaluation."""
    right = total = 0
    for k, n in stats.items():
        if k.endswith("/scored_steps"):
            right += round(stats[k.removesuffix("scored_steps") + "step_sr"] * n)
            total += int(n)
    return right, total


def _target(name: str, key: str, measure: str, ours: str, base: str, fmt: str = "{:.2f}") -> list[str]:
    d = _load(f"{name}.json")
    v = d[key]
    met = "met" if d.get("target_met") else "MISSED"
    return [f"| {measure} | {ours.format(**d)} | {base.format(**d)} | **{fmt.format(v)}** (target {d['target']}: {met}) | "
            f"{_day(d['machine'])} |"]  # fmt: skip


def _iteration_cost() -> list[str]:
    rows = []
    for name, what in (("iteration_cost", "grpo"), ("iteration_cost_evolving", "evolving")):
        if name != "iteration_cost" and not (RESULTS / f"{name}.json").exists():
            continue
        d = _load(f"{name}.json")
        s = d["s_per_sample"]
        met = "met" if d["target_met"] else "MISSED"
        p, drop = d["processed_per_trained"], d["processed_per_trained_drop"]
        rows.append(
            f"| training iteration ({what}), s per trained sample | {s['current']:.2f} | legacy path "
            f"{s['legacy']:.2f} | **{d['speedup']:.2f}x** (target >= 3: {met}); learner tokens processed per "
            f"trained token {p['current']:.1f} vs legacy {p['legacy']:.1f}, a drop of {drop:.2f}x (target >= 2: "
            f"{'met' if drop >= 2 else 'MISSED'}) | {_day(d['machine'])} |"
        )
    return rows


def _overlap() -> list[str]:
    d = _load("overlap.json")
    s = d["s_per_sample"]
    return [f"| trainer.overlap (collect t+1 while training t), s per trained sample | {s['on']:.2f} | off "
            f"{s['off']:.2f} | **{d['gain']:.2f}x** gain (off / on) | {_day(d['machine'])} |"]  # fmt: skip


def _quickstart() -> list[str]:
    d = _load("quickstart.json")
    met = "met" if d["target_met"] else "MISSED"
    return [f"| quickstart wall time (3 iterations, every stage) | {d['wall_s']:.0f} s | target 600 s | "
            f"(target <= 600 s: {met}) | {_day(d['machine'])} |"]  # fmt: skip


def _trl() -> list[str]:
    d = _load("trl_multiturn.json")
    return [f"| multi-turn ALFWorld GRPO step, samples/s | ours {d['ours_samples_per_s']:.3f} | TRL GRPOTrainer "
            f"{d['trl_samples_per_s']:.3f} | **{d['ratio']:.2f}x** | {_day(d['machine'])} |"]  # fmt: skip


def _faults() -> list[str]:
    d = _load("faults.json")
    return [f"| fault probe: scenarios passing | {d['passed']}/{d['total']} | - | - | {_day(d['machine'])} |"]


HEADLINES: tuple[tuple[str, Callable[[], list[str]]], ...] = (
    ("learning", _learning),
    ("iteration cost", _iteration_cost),
    ("overlap", _overlap),
    ("quickstart", _quickstart),
    ("generation share", lambda: _target("iteration_breakdown", "generation_share",
                                         "generation share of a trained iteration", "{generation_share:.2f}", "-")),
    ("rollout", lambda: _target("rollout_constrained", "ratio", "rollout pool generation, tokens/s",
                                "{tokens_per_s[pool]:.1f}", "bare constrained vLLM {tokens_per_s[bare]:.1f}")),
    ("learner", lambda: _target("learner_step", "ratio", "learner step (s), like for like",
                                "{step_s[learner]:.1f}", "bare torch {step_s[bare]:.1f}")),
    ("weight sync", lambda: _target("weight_sync", "ratio", "weight push (s) into the engines",
                                    "{push_s:.2f}", "one copy + bare engine reload {floor_s:.2f}")),
    ("trl", _trl),
    ("faults", _faults),
)  # fmt: skip


def splice(text: str, block: str, where: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"{where}: markers {BEGIN} / {END} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block.strip()}\n{END}{tail}"


def main() -> int:
    from cluster.core.storage import atomic_write_bytes

    parts = []
    for name in ORDER:
        path = RESULTS / name
        if path.exists():
            body = path.read_text().strip().replace("\n#", "\n##")  # one level below the doc's sections
            parts.append(
                f"<!-- from benchmarks/results/{name} -->\n#{body}" if body.startswith("#") else body
            )
    doc = ROOT / "docs" / "results.md"
    atomic_write_bytes(doc, splice(doc.read_text(), "\n\n".join(parts), str(doc)).encode())

    rows = [
        "| measure (2-core CPU machine) | ours | baseline (same run) | ratio ours / baseline | date |",
        "|---|---|---|---|---|",
    ]
    for name, fn in HEADLINES:
        try:
            rows += fn()
        except (OSError, KeyError, ValueError, TypeError, ZeroDivisionError) as e:
            print(f"write_tables: {name}: left out ({type(e).__name__}: {e})", file=sys.stderr)
    readme = ROOT / "README.md"
    atomic_write_bytes(readme, splice(readme.read_text(), "\n".join(rows), str(readme)).encode())
    print(
        f"wrote {doc.relative_to(ROOT)} ({len(parts)} tables) and README.md ({len(rows) - 2} headline rows)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
