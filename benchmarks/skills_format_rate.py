"""Valid-skill rate of the extractor with and without structured (JSON-schema) decoding, real vLLM engine.

Same prompts, same seeds, same sampling settings (config defaults: temperature 1.0, 512 tokens);
the only difference is `GenParams.json_schema` (`skills.constrained_json`). The unconstrained run is
the baseline. Both are scored as the trainer scores extractor candidates (skills/parse.py
`score_candidates`, under `--schema`: the config default "paper", or "strict").

    .venv/bin/python benchmarks/skills_format_rate.py [--n 8] [--schema paper] [--out benchmarks/results/skills_format_rate.json]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster.core.config import EngineConfig, SkillsConfig  # noqa: E402
from cluster.core.records import EpisodeResult, TaskSpec  # noqa: E402
from cluster.core.text import encode_messages  # noqa: E402
from skills.extractor import extractor_gen_params, extractor_messages  # noqa: E402
from skills.parse import score_candidates  # noqa: E402

# ALFWorld-style transcripts in the episode loop's format (actors/episode.py: Task / Observation /
# "> action" / Outcome).
ROOM = (
    "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a countertop 1, "
    "a fridge 1, a microwave 1, a sinkbasin 1, and a stoveburner 1."
)
TRAJECTORIES = [
    (
        "pick_clean_then_place_in_recep",
        "put a clean apple in fridge",
        True,
        [
            ("go to countertop 1", "On the countertop 1, you see a apple 1, and a knife 1."),
            ("take apple 1 from countertop 1", "You pick up the apple 1 from the countertop 1."),
            ("go to sinkbasin 1", "On the sinkbasin 1, you see nothing."),
            ("clean apple 1 with sinkbasin 1", "You clean the apple 1 using the sinkbasin 1."),
            ("go to fridge 1", "The fridge 1 is closed."),
            ("open fridge 1", "You open the fridge 1. The fridge 1 is open. In it, you see nothing."),
            ("move apple 1 to fridge 1", "You move the apple 1 to the fridge 1."),
        ],
    ),
    (
        "pick_heat_then_place_in_recep",
        "heat some egg and put it in countertop",
        False,
        [
            ("go to fridge 1", "The fridge 1 is closed."),
            ("open fridge 1", "You open the fridge 1. The fridge 1 is open. In it, you see a egg 1."),
            ("take egg 1 from fridge 1", "You pick up the egg 1 from the fridge 1."),
            ("go to countertop 1", "On the countertop 1, you see a knife 1."),
            ("move egg 1 to countertop 1", "You move the egg 1 to the countertop 1."),
            ("look", "You are facing the countertop 1. Next to it, you see nothing."),
        ],
    ),
    (
        "pick_cool_then_place_in_recep",
        "put a cool mug in cabinet",
        True,
        [
            ("go to microwave 1", "The microwave 1 is closed."),
            (
                "open microwave 1",
                "You open the microwave 1. The microwave 1 is open. In it, you see a mug 1.",
            ),
            ("take mug 1 from microwave 1", "You pick up the mug 1 from the microwave 1."),
            ("go to fridge 1", "The fridge 1 is closed."),
            ("cool mug 1 with fridge 1", "You cool the mug 1 using the fridge 1."),
            ("go to cabinet 1", "The cabinet 1 is open. In it, you see nothing."),
            ("move mug 1 to cabinet 1", "You move the mug 1 to the cabinet 1."),
        ],
    ),
    (
        "pick_and_place_simple",
        "put some knife on stoveburner",
        False,
        [
            ("go to cabinet 1", "The cabinet 1 is closed."),
            ("open cabinet 1", "You open the cabinet 1. The cabinet 1 is open. In it, you see nothing."),
            ("go to cabinet 1", "Nothing happens."),
            ("inventory", "You are not carrying anything."),
            ("go to sinkbasin 1", "On the sinkbasin 1, you see nothing."),
        ],
    ),
]


def episodes() -> list[EpisodeResult]:
    out = []
    for i, (ttype, text, won, steps) in enumerate(TRAJECTORIES):
        lines = [f"Task: {text}", f"Observation: {ROOM}"]
        lines += [f"> {a}\n{o}" for a, o in steps]
        lines.append(f"Outcome: {'WON' if won else 'lost'} after {len(steps)} steps")
        task = TaskSpec(f"bench-{i}", "alfworld", ttype, text, "n/a")
        out.append(EpisodeResult(f"bench-{i}", task, won, float(won), len(steps), text="\n".join(lines)))
    return out


def run(engine, prompts: list[list[int]], params, max_skill_chars: int, schema: str) -> dict:
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    wall = time.perf_counter() - t0
    gens = [g for per in outs for g in per]
    results = score_candidates([g.text for g in gens], max_chars=max_skill_chars, schema=schema)
    reasons = collections.Counter(r.category or "ok" for r in results)
    valid = sum(r.ok for r in results)
    return {
        "samples": len(gens),
        "valid": valid,
        "valid_rate": valid / len(gens),
        "reasons": dict(reasons.most_common()),
        "mean_tokens": sum(len(g.token_ids) for g in gens) / len(gens),
        "finish_length_rate": sum(g.finish_reason == "length" for g in gens) / len(gens),
        "wall_s": round(wall, 1),
        "example_valid": next((g.text for g, r in zip(gens, results) if r.ok), None),
        "example_invalid": next((g.text[:600] for g, r in zip(gens, results) if not r.ok), None),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="candidates per trajectory (paper N=8)")
    ap.add_argument("--max-tokens", type=int, default=SkillsConfig().extractor_max_tokens)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--schema", default=SkillsConfig().schema, choices=["paper", "strict"])
    ap.add_argument("--out", default="benchmarks/results/skills_format_rate.json")
    args = ap.parse_args()

    from actors.engine import VLLMEngine
    from cluster.core.model_store import resolve_model

    cfg = SkillsConfig(n_candidates=args.n, extractor_max_tokens=args.max_tokens, schema=args.schema)
    t0 = time.perf_counter()
    engine = VLLMEngine(
        resolve_model("embedded"), EngineConfig(kv_cache_gib=1.0), seed=args.seed, max_model_len=2048
    )
    start_s = time.perf_counter() - t0
    eps = episodes()
    prompts = [encode_messages(engine.tokenizer, extractor_messages(ep, max_chars=3000)) for ep in eps]
    base = extractor_gen_params(replace(cfg, constrained_json=False), seed=args.seed)
    constrained = extractor_gen_params(replace(cfg, constrained_json=True), seed=args.seed)
    res_free = run(engine, prompts, base, cfg.max_skill_chars, cfg.schema)
    res_json = run(engine, prompts, constrained, cfg.max_skill_chars, cfg.schema)
    report = {
        "what": "extractor valid-skill rate, unconstrained (baseline) vs JSON-schema structured decoding",
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, no GPU ({platform.platform()})",
        "engine": f"vLLM {__import__('vllm').__version__} in-process, CPU, fp32; model SmolLM2-135M-Instruct (embedded)",
        "settings": {
            "trajectories": len(eps),
            "candidates_per_trajectory": args.n,
            "temperature": cfg.extractor_temperature,
            "max_tokens": cfg.extractor_max_tokens,
            "seed": args.seed,
            "schema": cfg.schema,
            "prompt_tokens": [len(p) for p in prompts],
        },
        "engine_start_s": round(start_s, 1),
        "unconstrained": res_free,
        "structured": res_json,
        "valid_rate_ratio_structured_over_unconstrained": (
            res_json["valid_rate"] / res_free["valid_rate"] if res_free["valid_rate"] else None
        ),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from cluster.core.storage import atomic_write_bytes

    atomic_write_bytes(args.out, (json.dumps(report, indent=1) + "\n").encode())
    for k in ("unconstrained", "structured"):
        r = report[k]
        print(f"{k:>13}: valid {r['valid']}/{r['samples']} = {r['valid_rate']:.3f}  reasons {r['reasons']}  "
              f"mean tokens {r['mean_tokens']:.0f}  hit max_tokens {r['finish_length_rate']:.2f}  {r['wall_s']} s")  # fmt: skip
    print(f"ratio structured/unconstrained: {report['valid_rate_ratio_structured_over_unconstrained']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
