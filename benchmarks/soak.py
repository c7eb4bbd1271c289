"""Soak test (not in CI): the quickstart with rollout workers SIGKILLed at random every few minutes.

Runs `evorl train` twice with the same config: undisturbed, then with a killer that SIGKILLs a random
`ray::RolloutWorker` process of that run (only descendants of the run's own driver) every
`--kill-every` seconds (+-50% jitter). The disturbed run must finish the same number of iterations,
with the kills counted in metrics.jsonl as <pool>/restarts (rollout/restarts; skill-eval/restarts
when skills.num_eval_workers > 0). Writes <out>.json and <out>.md.

    .venv/bin/python benchmarks/soak.py --iterations 3 --kill-every 120 --out benchmarks/results/soak
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cluster.core.storage import atomic_write_text, write_json_plain  # noqa: E402
from cluster.metrics import read_metrics  # noqa: E402

TINY = [
    "env.max_steps=3",
    "env.history_window=1",
    "env.generate_per_type=2",
    "env.eval_splits=[]",
    "skills.n_candidates=2",
    "skills.k_neighbours=1",
    "skills.extractor_max_tokens=448",
    "rollout.max_new_tokens=16",
    "trainer.batch_size=1",
    "trainer.checkpoint_every=1",
    "learner.micro_batch_tokens=512",  # smaller packed micro-batches: less learner memory
    "cluster.include_dashboard=false",
    "cluster.metrics_export_port=8095",
]


def rollout_workers(root_pid: int) -> list:
    import psutil

    try:
        procs = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            if " ".join(p.cmdline()).startswith("ray::RolloutWorker"):
                out.append(p)
        except psutil.Error:
            continue
    return out


def killer(root_pid: int, every_s: float, stop: threading.Event, log: list[dict], seed: int) -> None:
    rng = random.Random(seed)
    t0 = time.monotonic()
    while not rollout_workers(root_pid):  # the clock starts once the pool is up (start-up is not soaked)
        if stop.wait(2.0):
            return
    while not stop.wait(every_s * rng.uniform(0.5, 1.5)):
        workers = rollout_workers(root_pid)
        if not workers:
            log.append({"t_s": round(time.monotonic() - t0, 1), "killed": None})
            continue
        victim = rng.choice(workers)
        try:
            os.kill(victim.pid, signal.SIGKILL)
            log.append({"t_s": round(time.monotonic() - t0, 1), "killed": victim.pid})
            print(
                f"[soak] t={time.monotonic() - t0:.0f}s SIGKILL ray::RolloutWorker pid {victim.pid}",
                flush=True,
            )
        except ProcessLookupError:
            pass


def run(name: str, run_dir: Path, games: Path, iterations: int, kill_every: float | None, seed: int) -> dict:
    cmd = [str(ROOT / ".venv/bin/evorl"), "train", "--config", "configs/quickstart.yaml", *TINY,
           f"trainer.iterations={iterations}", f"trainer.run_dir={run_dir}", f"env.data_dir={games}"]  # fmt: skip
    log_path = run_dir.parent / f"{name}.log"
    kills: list[dict] = []
    stop = threading.Event()
    t0 = time.monotonic()
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        th = None
        if kill_every:
            th = threading.Thread(target=killer, args=(proc.pid, kill_every, stop, kills, seed), daemon=True)
            th.start()
        rc = proc.wait()
        stop.set()
        if th:
            th.join()
    wall = time.monotonic() - t0
    rows = [r for r in read_metrics(run_dir) if "policy_version" in r]
    summary = (
        json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    )
    # workers replaced, summed over the pools (<prefix>/restarts: rollout, and skill-eval when it has its own)
    restarts = max((sum(v for k, v in r.items() if k.endswith("/restarts")) for r in rows), default=0)
    return {
        "name": name,
        "returncode": rc,
        "wall_s": round(wall, 1),
        "iterations_completed": summary.get("iteration", len(rows)),
        "policy_version": summary.get("policy_version"),
        "kills": len([k for k in kills if k["killed"]]),
        "kill_log": kills,
        "rollout_restarts_logged": restarts,
        "iteration_s": [round(r.get("iteration_s", 0), 1) for r in rows],
        "log": str(log_path),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--kill-every", type=float, default=120.0, help="mean seconds between worker kills")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/evorl-soak")
    ap.add_argument("--out", default="benchmarks/results/soak")
    ap.add_argument("--baseline", default="", help="reuse the undisturbed run of an earlier soak JSON")
    ap.add_argument("--note", default="", help="a line for the report, e.g. what else ran on the machine")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    games = work / "games"
    results = []
    plan = [("undisturbed", None), ("disturbed", args.kill_every)]
    if args.baseline:  # same config, measured earlier on this machine: only the disturbed run is new
        old = json.loads(Path(args.baseline).read_text())
        assert old["iterations"] == args.iterations, "baseline ran another number of iterations"
        undisturbed = next(r for r in old["runs"] if r["name"] == "undisturbed")
        results.append(undisturbed | {"from": f"{old['date']} ({args.baseline})"})
        plan = plan[1:]
    for name, every in plan:
        run_dir = work / name
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        print(f"[soak] {name}: {args.iterations} iterations, kill every {every or '-'} s", flush=True)
        results.append(run(name, run_dir, games, args.iterations, every, args.seed))
        print(f"[soak] {json.dumps({k: v for k, v in results[-1].items() if k != 'kill_log'})}", flush=True)
    base, dist = results
    ok = (
        base["returncode"] == dist["returncode"] == 0
        and dist["iterations_completed"] == base["iterations_completed"] == args.iterations
    )
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "config": "configs/quickstart.yaml + " + " ".join(TINY),
        "iterations": args.iterations,
        "kill_every_s": args.kill_every,
        "same_iterations": ok,
        "wall_ratio_disturbed_over_undisturbed": round(dist["wall_s"] / max(base["wall_s"], 1e-9), 3),
        "runs": results,
        "note": args.note,
    }
    out = Path(args.out)
    write_json_plain(out.with_suffix(".json"), report)
    md = render_md(report)
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)
    return 0 if ok else 1


def render_md(report: dict) -> str:
    """The soak report's Markdown, from its JSON."""
    ok = report["same_iterations"]
    md = [
        f"# Soak: quickstart with random rollout-worker kills ({report['date']})",
        "",
        f"Machine: {report['machine']}. Config: `{report['config']}`.",
        f"Kill a random `ray::RolloutWorker` process (SIGKILL) every ~{report['kill_every_s']:.0f} s (+-50%).",
        *[
            f"The {r['name']} run is reused from the soak of {r['from']}."
            for r in report["runs"]
            if r.get("from")
        ],
        *([report["note"]] if report.get("note") else []),
        "",
        "| run | exit | iterations | kills | rollout/restarts logged | wall s | s per iteration |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        md.append(f"| {r['name']} | {r['returncode']} | {r['iterations_completed']} | {r['kills']} | "
                  f"{r['rollout_restarts_logged']} | {r['wall_s']} | {r['iteration_s']} |")  # fmt: skip
    md += ["", f"Same number of iterations: **{ok}**; wall time disturbed / undisturbed: "
           f"{report['wall_ratio_disturbed_over_undisturbed']}x."]  # fmt: skip
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
