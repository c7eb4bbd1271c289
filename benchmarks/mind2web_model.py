"""Mind2Web metrics of a model (default: the untrained embedded SmolLM2-135M) on the bundled sample.

    python benchmarks/mind2web_model.py [--model embedded|HF_DIR | --run RUN_DIR] [--label untrained]

Policy = the model through the rollout engine (actors.engine, in-process vLLM on CPU) with the
solver prompt of actors.prompts and constrained decoding over the step's admissible actions,
greedy. Scored by envs.mind2web.evaluate in Mind2Web's teacher-forced mode (every step scored, the
gold action applied). Baselines in the same run: a uniformly random admissible action (seed 0) and
the oracle (gold replay, 1.0 by construction: checks the scorer). The sample is hand-written and
small (20 test tasks): the numbers say nothing about real Mind2Web.
Writes benchmarks/results/mind2web_model[_LABEL].{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

RESULTS = Path(__file__).parent / "results"
SPLITS = ("test_task", "test_website", "test_domain")
METRICS = ("element_acc", "op_f1", "step_sr", "task_sr")


def model_policy(engine, max_observation_chars: int = 4000):
    """Observation -> one admissible action, chosen by the model (greedy, constrained)."""
    from actors.engine import GenParams
    from actors.prompts import SolverView, encode_messages, solver_messages

    def policy(obs) -> str:
        view = SolverView(obs.task_text, obs.text, list(obs.admissible_actions), [], None)
        msgs = solver_messages(view, "mind2web", True, max_observation_chars, engine.tokenizer)
        ids = encode_messages(engine.tokenizer, msgs)
        gen = GenParams(temperature=0.0, max_tokens=48, choices=list(obs.admissible_actions))
        return engine.generate([ids], gen)[0][0].text.strip()

    policy.__name__ = "model"
    return policy


def run_model(run_dir: Path) -> Path:
    """The HF model folder of a run's newest verified checkpoint."""
    from cluster.checkpoint import CheckpointManager
    from learner.checkpoint import resolve_checkpoint

    latest = CheckpointManager(run_dir / "checkpoints").latest()
    if latest is None:
        raise FileNotFoundError(f"{run_dir}: no complete checkpoint under checkpoints/")
    return resolve_checkpoint(latest[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--run", default="", help="a training run folder: score its newest verified checkpoint")
    p.add_argument("--label", default="untrained")
    p.add_argument("--max-candidates", type=int, default=20)
    p.add_argument("--limit", type=int, default=None, help="tasks per split (default: all)")
    args = p.parse_args(argv)

    from actors.engine import make_engine
    from cluster.core.config import EngineConfig
    from cluster.core.model_store import resolve_model
    from cluster.core.storage import atomic_write_bytes, write_json_plain
    from envs.mind2web.evaluate import evaluate

    if args.run:
        args.model = str(run_model(Path(args.run)))
    engine = make_engine(resolve_model(args.model), EngineConfig(), seed=0, max_model_len=4096)
    policy = model_policy(engine)
    rows: dict[str, dict[str, dict]] = {}
    timing: dict[str, float] = {}
    for split in SPLITS:
        for name, pol in (("model", policy), ("random", "random"), ("oracle", "oracle")):
            t0 = time.perf_counter()
            res = evaluate(
                split=split,
                policy=pol,
                mode="teacher_forced",
                max_candidates=args.max_candidates,
                limit=args.limit,
            )
            res.pop("per_website", None)
            rows.setdefault(split, {})[name] = res
            if name == "model":
                timing[split] = time.perf_counter() - t0
            print(f"[mind2web] {split:13s} {name:7s} " + " ".join(f"{m} {res[m]:.3f}" for m in METRICS))
    when = datetime.now(UTC).isoformat(timespec="seconds")
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, vllm-cpu in-process fp32"
    out = {
        "date": when,
        "machine": machine,
        "model": args.model,
        "label": args.label,
        "mode": "teacher_forced",
        "max_candidates": args.max_candidates,
        "results": rows,
        "model_seconds_per_split": timing,
    }
    stem = "mind2web_model" if args.label == "untrained" else f"mind2web_model_{args.label}"
    write_json_plain(RESULTS / f"{stem}.json", out)
    lines = [
        f"# Mind2Web bundled sample: {args.label} model ({args.model})",
        "",
        f"{when}, {machine}. Teacher-forced scoring (every step scored, gold applied), greedy constrained",
        f"decoding over the admissible actions, top {args.max_candidates} candidates per page. Baselines in",
        "the same run: random admissible action (seed 0) and oracle (gold replay). A hand-written sample",
        "of 20 test tasks: not the Mind2Web benchmark.",
        "",
        "| split | policy | tasks | steps | element acc | op F1 | step SR | task SR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, by_pol in rows.items():
        for name, r in by_pol.items():
            lines.append(
                f"| {split} | {name} | {r['tasks']} | {r['scored_steps']} | {r['element_acc']:.3f} | "
                f"{r['op_f1']:.3f} | {r['step_sr']:.3f} | {r['task_sr']:.3f} |"
            )
    atomic_write_bytes(RESULTS / f"{stem}.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
