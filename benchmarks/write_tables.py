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
    "learning_solver_sft/learning.md",
    "iteration_breakdown.md",
    "trl_grpo.md",
    "mind2web_model.md",
    "mind2web_learning.md",
    "rollout_throughput.md",
    "rollout_scaling.md",
    "learner_step.md",
    "alfworld_env.md",
    "mind2web_loader.md",
    "serve_latency.md",
)


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _day(d: dict) -> str:
    return str(d.get("date", "?"))[:10]


def _learning() -> list[str]:
    d = _load("learning/learning.json")
    ev = d["eval"]

    def cell(name: str, group: str = "trained_success") -> str:
        w, n, lo, hi = ev[name][group]
        return f"{w}/{n} [{lo:.2f}, {hi:.2f}]"

    rows = []
    if "untrained" in ev and "sft" in ev:
        rows.append(
            f"| ALFWorld easy, trained types, greedy (Wilson 95%), both-roles start | SFT start {cell('sft')} | "
            f"untrained {cell('untrained')} | see docs | {_day(d['meta'])} |"
        )
    pooled = sorted(k for k in ev if k.endswith("seeds pooled"))  # one row per mode when several seeds
    for name in pooled or sorted(k for k in ev if k.startswith("after ")):
        rows.append(
            f"| {name}: trained / held-out | {cell(name)} / {cell(name, 'heldout_success')} | "
            f"SFT start {cell('sft')} / {cell('sft', 'heldout_success')} | see docs | {_day(d['meta'])} |"
        )
    return rows


def _trl() -> list[str]:
    d = _load("trl_grpo.json")
    return [
        f"| GRPO step samples/s, {d['prompts']}x{d['group']} samples | ours {d['ours']['samples_per_s']:.3f} | "
        f"TRL GRPOTrainer {d['trl']['samples_per_s']:.3f} | **{d['ratio_samples_per_s']:.2f}x** (target 2x) | {_day(d)} |"
    ]


def _rollout() -> list[str]:
    d = _load("rollout_throughput.json")
    return [
        f"| rollout pool tokens/s | {d['pool']['tokens_per_s']:.1f} | bare vLLM {d['bare_vllm']['tokens_per_s']:.1f} | "
        f"{d['pool_vs_bare_tokens_per_s']:.2f}x | {_day(d)} |"
    ]


def _scaling() -> list[str]:
    d = _load("rollout_scaling.json")
    e = d["episodes_per_s"]
    return [
        f"| rollout episodes/s, 2 workers | {e['2']:.3f} | 1 worker {e['1']:.3f} | {d['ratio_2_vs_1']:.2f}x | {_day(d)} |"
    ]


def _learner() -> list[str]:
    d = _load("learner_step.json")
    b = d["broadcast"]
    return [
        f"| learner step (s) | DeepSpeed {d['learner_step_s']:.2f} | bare torch {d['bare_torch_step_s']:.2f} | "
        f"{d['step_ratio']:.2f}x | {_day(d)} |",
        f"| weight broadcast (s, {b['bytes'] / 2**20:.0f} MiB) | {b['learner_to_engine_s']:.2f} | bare copy "
        f"{b['bare_copy_s']:.2f} | {b['ratio_vs_bare_copy']:.1f}x | {_day(d)} |",
    ]


def _envpool() -> list[str]:
    d = _load("alfworld_env.json")
    p = {x["actors"]: x["steps_per_s"] for x in d["pool"]}
    return [
        f"| env pool steps/s, 2 actors | {p[2]:.1f} | 1 actor {p[1]:.1f} | {p[2] / p[1]:.2f}x | {_day(d)} |"
    ]


def _mind2web() -> list[str]:
    d = _load("mind2web_model.json")
    r = d["results"]["test_task"]
    m, rnd = r["model"], r["random"]
    return [
        f"| Mind2Web sample test_task, untrained: element acc / step SR | {m['element_acc']:.2f} / {m['step_sr']:.2f} | "
        f"random {rnd['element_acc']:.2f} / {rnd['step_sr']:.2f} | - | {_day(d)} |"
    ]


def _mind2web_learning() -> list[str]:
    d = _load("mind2web_learning.json")
    ev, day = d["eval"]["test_task"], max(_day(v) for v in d["scored"].values())
    return [
        f"| Mind2Web sample test_task, after {name}: element acc / step SR | "
        f"{r['element_acc']:.2f} / {r['step_sr']:.2f} | untrained {ev['untrained']['element_acc']:.2f} / "
        f"{ev['untrained']['step_sr']:.2f} | - | {day} |"
        for name, r in ev.items()
        if name.startswith(("grpo", "evolving"))
    ]


HEADLINES: tuple[tuple[str, Callable[[], list[str]]], ...] = (
    ("learning", _learning),
    ("trl", _trl),
    ("rollout", _rollout),
    ("scaling", _scaling),
    ("learner", _learner),
    ("env pool", _envpool),
    ("mind2web", _mind2web),
    ("mind2web learning", _mind2web_learning),
)


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
