"""Mind2Web loader: streaming JSON -> Parquet cache vs. json.load, and task lookup from the cache.

    .venv/bin/python benchmarks/mind2web_loader.py [--mb 200]

Builds a synthetic official-format file of about --mb MB (the bundled sample's train records,
repeated with fresh annotation_ids and a padded raw_html, as the real files are dominated by
raw_html), then measures in fresh subprocesses (peak RSS from getrusage):
  imports   the loader's imports only (pyarrow, ijson): subtracted from the others' peak RSS
  baseline  json.load of the whole file
  stream    envs.mind2web.loader: ijson streaming + validation + Parquet cache write
  lookup    TaskStore.get of 20 random tasks from the cache (vs. rescanning the JSON for each)
Writes benchmarks/results/mind2web_loader.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = {
    "imports": "n = 0",
    "baseline": "d = json.load(open(SRC)); n = len(d)",
    "stream": "from envs.mind2web.loader import cached_parquet, iter_records\n"
    "p = cached_parquet(SRC, CACHE); n = sum(1 for _ in iter_records(p))",
    "lookup": "import random; from envs.mind2web.loader import TaskStore, cached_parquet\n"
    "p = cached_parquet(SRC, CACHE); ids = __import__('pyarrow.parquet').parquet.read_table(p, "
    "columns=['annotation_id']).column(0).to_pylist(); rng = random.Random(0)\n"
    "s = TaskStore(); n = sum(len(s.get(f'{p}#{rng.choice(ids)}').actions) > 0 for _ in range(20))",
    "lookup_json": "import random, json; from envs.mind2web.loader import TaskStore\n"
    "ids = [r['annotation_id'] for r in json.load(open(SRC))]; rng = random.Random(0)\n"
    "s = TaskStore(); n = sum(len(s.get(f'{SRC}#{rng.choice(ids)}').actions) > 0 for _ in range(20))",
}


def run_child(kind: str, src: Path, cache: Path) -> dict:
    code = (
        f"import resource, time, sys, json; sys.path.insert(0, {str(ROOT)!r}); SRC = {str(src)!r}; CACHE = {str(cache)!r}\n"
        "import envs.mind2web.loader, ijson  # same imports in every run: RSS differences are data\n"
        f"t = time.perf_counter()\n{CHILD[kind]}\n"
        "print(n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    return {"items": int(out[0]), "seconds": float(out[1]), "peak_rss_mb": float(out[2])}


def build(dest: Path, mb: float) -> int:
    from envs.mind2web.loader import find_split_files
    from envs.mind2web.tasks import SAMPLE_DIR

    base = [r for f in find_split_files(SAMPLE_DIR, "train") for r in json.load(open(f))]
    pad = "<div class='ad'>" + "lorem ipsum " * 4000 + "</div>"  # ~50 KB of raw_html per step
    n, size = 0, 0
    with open(dest, "w") as f:
        f.write("[")
        while size < mb * 2**20:
            r = json.loads(json.dumps(base[n % len(base)]))
            r["annotation_id"] = f"bench-{n}"
            for a in r["actions"]:
                a["raw_html"] = (a.get("raw_html") or a["cleaned_html"]) + pad
            s = ("," if n else "") + json.dumps(r)
            f.write(s)
            size += len(s)
            n += 1
        f.write("]")
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, cache = Path(tmp) / "train_0.json", Path(tmp) / "cache"
        tasks = build(src, args.mb)
        size_mb = src.stat().st_size / 2**20
        res = {
            k: run_child(k, src, cache) for k in ("imports", "baseline", "stream", "lookup", "lookup_json")
        }
        cache_mb = sum(p.stat().st_size for p in cache.glob("*.parquet")) / 2**20
    out = {
        "machine": f"{platform.node()} {platform.machine()} ({platform.processor() or 'cpu'}), 2 cores shared",
        "date": date.today().isoformat(),
        "file_mb": round(size_mb, 1),
        "tasks": tasks,
        "cache_mb": round(cache_mb, 2),
        **res,
        "stream_vs_json_load_peak_rss_above_imports": round(
            (res["stream"]["peak_rss_mb"] - res["imports"]["peak_rss_mb"])
            / (res["baseline"]["peak_rss_mb"] - res["imports"]["peak_rss_mb"]),
            3,
        ),
        "stream_vs_json_load_time": round(res["stream"]["seconds"] / res["baseline"]["seconds"], 3),
        "lookup_parquet_vs_json_time": round(res["lookup"]["seconds"] / res["lookup_json"]["seconds"], 3),
    }
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "mind2web_loader.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [
        f"# Mind2Web loader benchmark ({out['date']}, {out['machine']})",
        "",
        f"Synthetic official-format file: {out['file_mb']} MB, {tasks} tasks (raw_html padded); "
        f"Parquet cache {out['cache_mb']} MB (raw_html dropped).",
        "",
        "| run | seconds | peak RSS MB |",
        "|---|---|---|",
    ]
    md += [f"| {k} | {v['seconds']:.2f} | {v['peak_rss_mb']:.0f} |" for k, v in res.items()]
    md += [
        "",
        f"- streaming+cache vs json.load: peak RSS above the imports x{out['stream_vs_json_load_peak_rss_above_imports']}, "
        f"time x{out['stream_vs_json_load_time']} (first use only; later runs read the cache)",
        f"- 20 task lookups, Parquet cache vs JSON rescan: time x{out['lookup_parquet_vs_json_time']}",
    ]
    (results / "mind2web_loader.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
