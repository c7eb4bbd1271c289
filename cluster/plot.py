"""`evorl plot RUN_DIR`: learning curves from metrics.jsonl as PNGs."""

from __future__ import annotations

from pathlib import Path

from cluster.metrics import read_metrics

PANELS = {
    "success": (
        "source/success",
        "downstream/success",
        "baseline/success",
        "eval/valid_seen/with_skill/success",
        "eval/valid_seen/no_skill/success",
    ),
    "skills": ("skills/parse_failure_rate", "skills/mean_candidate_win_rate"),
    "learner": ("learner/loss", "learner/kl", "learner/logprob_gap_mean"),
    "time": ("iteration_s", "time/source", "time/extract", "time/downstream", "time/learn"),
}


def plot_run(run_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise FileNotFoundError(f"{run_dir}/metrics.jsonl: no metrics to plot")
    out = []
    for name, keys in PANELS.items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        drawn = False
        for k in keys:
            pts = [(r["iteration"], r[k]) for r in rows if k in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=k)
                drawn = True
        if drawn:
            ax.set_xlabel("iteration")
            ax.legend(fontsize=7)
            ax.set_title(name)
            path = run_dir / "plots" / f"{name}.png"
            path.parent.mkdir(exist_ok=True)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            out.append(path)
        plt.close(fig)
    return out
