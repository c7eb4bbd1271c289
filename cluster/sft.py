"""Supervised warm start: planner demonstrations -> traces rendered with the rollout prompt builders,
and the `evorl sft` command that trains them through the learner group.

Each demo becomes the trace(s) the solver would have produced playing it: in the sequence context
one conversation (task, observations, the expert actions as generated tokens), in the window
context one trace per step, with exactly the prompt the solver sees at that step. A response is the
expert action as the engine would emit it (action tokens + end-of-turn token in the constrained
format; `<action>...</action>` in the free format). The checkpoint format is the RL one.

Both roles (optional): with `skill_cards` > 0 that fraction of demos is shown with a teacher skill
(skills.teacher) of another demo of the same type in the prompt, as downstream episodes are; with
`extractor` each demo also yields one extractor trace: the extractor prompt over the demo's
transcript -> the teacher skill's JSON. Without them the start model has never seen a skill card
and writes placeholder skills, so evolving gets no signal (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cluster.core.config import Config
from cluster.core.records import Trace

log = logging.getLogger(__name__)


def _eos(tokenizer: Any) -> int:
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if eos is None or eos == tokenizer.unk_token_id:
        eos = tokenizer.eos_token_id
    return eos


def demo_traces(
    demos: Iterable[dict[str, Any]],
    tokenizer: Any,
    cfg: Config,
    where: str = "demos",
    skill_cards: float = 0.0,
    extractor: bool = False,
    seed: int = 0,
) -> tuple[list[Trace], int]:
    """(traces, skipped): a trace longer than model.max_model_len is skipped and counted."""
    from skills.schema import render_card

    demos = list(demos)
    teacher = _teacher_skills(demos, where) if (skill_cards > 0 or extractor) else []
    rng = random.Random(seed)
    traces: list[Trace] = []
    skipped = 0
    for n, rec in enumerate(demos):
        card = None
        if skill_cards > 0 and rng.random() < skill_cards:
            same = [k for k, r in enumerate(demos) if r["task_type"] == rec["task_type"] and k != n]
            card = render_card(teacher[rng.choice(same) if same else n], cfg.skills.max_skill_chars)
        made = _solver_traces(rec, n, card, tokenizer, cfg, where)
        if extractor:
            made.append(_extractor_trace(rec, teacher[n], tokenizer, cfg))
        for t in made:
            if len(t.token_ids) > cfg.model.max_model_len:
                skipped += 1
            else:
                t.advantages = [0.0] * len(
                    t.spans
                )  # one per span, as every learner row carries (unused by NLL)
                traces.append(t)
    if skipped:
        log.warning("%s: %d demo traces longer than model.max_model_len skipped", where, skipped)
    return traces, skipped


def _solver_traces(
    rec: dict, n: int, card: str | None, tokenizer: Any, cfg: Config, where: str
) -> list[Trace]:
    from actors.prompts import (
        ChatFormat,
        Conversation,
        PromptStyle,
        SolverView,
        first_user,
        next_user,
        system_prompt,
        window_messages,
    )
    from cluster.core.text import encode_messages

    style = PromptStyle.from_config(cfg)
    eos = _eos(tokenizer)
    steps = rec["steps"]
    tid, ttype = str(rec["task_id"]), str(rec["task_type"])
    sample = f"demo-{tid}"
    conv: Conversation | None = None
    out: list[Trace] = []
    history: list[tuple[str, str]] = []
    for k, step in enumerate(steps):
        admissible = list(step["admissible_actions"])
        constrained = style.constrained and bool(admissible)
        action = str(step["action"]).strip()
        if not action:
            raise ValueError(f"{where}: record {n} (task {tid}), steps[{k}]: empty action")
        response = list(tokenizer.encode(action if constrained else f"<action>{action}</action>",
                                         add_special_tokens=False)) + [eos]  # fmt: skip
        if cfg.env.context == "sequence":
            if conv is None:
                conv = Conversation.start(tokenizer, system_prompt(style, card, constrained, tokenizer),
                                          first_user(style, rec["task_text"], step["observation"], admissible,
                                                     card, tokenizer))  # fmt: skip
            else:
                conv.add_user(
                    ChatFormat(tokenizer), next_user(style, step["observation"], admissible, tokenizer)
                )
            conv.add_response(response)
        else:
            window = history[-cfg.env.history_window :] if cfg.env.history_window else []
            view = SolverView(rec["task_text"], step["observation"], admissible, window, card)
            prompt = encode_messages(tokenizer, window_messages(style, view, tokenizer))
            out.append(Trace(sample, k, tid, ttype, "solver", prompt + response,
                             [(len(prompt), len(prompt) + len(response))], [], 0, won=True))  # fmt: skip
            next_obs = steps[k + 1]["observation"] if k + 1 < len(steps) else ""
            history.append((action, next_obs))
    if conv is not None:
        out.append(Trace(sample, 0, tid, ttype, "solver", conv.ids, conv.spans, [], 0, won=True))
    return out


def _teacher_skills(demos: list[dict[str, Any]], where: str) -> list:
    from skills.teacher import planner_skill

    out = []
    for n, rec in enumerate(demos):
        try:
            out.append(planner_skill(rec["task_type"], rec["task_text"], [s["action"] for s in rec["steps"]]))
        except ValueError as e:  # SkillValidationError included: a demo the teacher cannot summarise
            raise ValueError(f"{where}: record {n} (task {rec['task_id']}): teacher skill: {e}") from e
    return out


def _extractor_trace(rec: dict[str, Any], skill: Any, tokenizer: Any, cfg: Config) -> Trace:
    """The extractor prompt over the demo's transcript (as actors.episode writes it) -> the skill JSON."""
    from actors.episode import transcript_observation, transcript_step, transcript_task
    from cluster.core.records import EpisodeResult, TaskSpec
    from skills.extractor import extractor_prompt

    steps = rec["steps"]
    lines = [
        transcript_task(rec["task_text"]),
        transcript_observation(steps[0]["observation"] if steps else ""),
    ]
    for k, step in enumerate(steps):
        nxt = steps[k + 1]["observation"] if k + 1 < len(steps) else ""
        lines.append(transcript_step(str(step["action"]).strip(), nxt))
    task = TaskSpec(str(rec["task_id"]), cfg.env.name, str(rec["task_type"]), str(rec["task_text"]), "")
    episode = EpisodeResult(f"demo-{rec['task_id']}", task, won=True, reward=1.0, steps=len(steps),
                            text="\n".join(lines + [f"Outcome: WON after {len(steps)} steps"]))  # fmt: skip
    response = list(tokenizer.encode(skill.to_json(), add_special_tokens=False)) + [_eos(tokenizer)]
    prompt, _ = extractor_prompt(tokenizer, episode, len(response), cfg.model.max_model_len)
    return Trace(f"demo-x-{rec['task_id']}", 0, str(rec["task_id"]), str(rec["task_type"]), "extractor",
                 prompt + response, [(len(prompt), len(prompt) + len(response))], [], 0, won=True)  # fmt: skip


def batches(items: list, batch_size: int, epochs: int, seed: int) -> Iterable[tuple[int, list]]:
    """(epoch, batch) pairs; a fresh seeded shuffle each epoch."""
    rng = random.Random(seed)
    for epoch in range(epochs):
        order = list(items)
        rng.shuffle(order)
        for s in range(0, len(order), batch_size):
            yield epoch, order[s : s + batch_size]


# ---- `evorl sft` ----------------------------------------------------------------------------------


def add_commands(sub, data_sub) -> None:
    p = sub.add_parser("sft", help="supervised warm start on demonstrations (solver; optionally extractor)")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--demos", required=True, help="JSONL from `evorl data alfworld-demos`")
    p.add_argument("--out", default="", help="output folder (default <trainer.run_dir>/sft)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-traces", type=int, default=16, help="demo traces per optimizer step")
    p.add_argument("--lr", type=float, default=1e-5, help="SFT learning rate (overrides learner.lr)")
    p.add_argument("--max-demos", type=int, default=0, help="use only the first N demos (0 = all)")
    p.add_argument("--skill-cards", type=float, default=0.0,
                   help="fraction of demos shown with a teacher skill card of the same task type (0-1)")  # fmt: skip
    p.add_argument("--extractor", action="store_true",
                   help="also train the extractor role: demo transcript -> teacher skill JSON")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="config overrides key.path=value")
    p.set_defaults(func=cmd_sft)


def cmd_sft(args: argparse.Namespace) -> int:
    import itertools

    from cluster.core.config import ConfigError, load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = load_config(args.config, [*args.overrides, f"learner.lr={args.lr}"])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.epochs < 1 or args.batch_traces < 1:
        print("error: --epochs and --batch-traces must be >= 1", file=sys.stderr)
        return 2
    if not 0.0 <= args.skill_cards <= 1.0:
        print("error: --skill-cards must be within [0, 1]", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    from cluster.core.model_store import resolve_model
    from cluster.core.records import traces_to_table
    from cluster.placement import init_ray, make_paths_absolute
    from envs.alfworld.check import read_demos
    from learner.group import LearnerGroup

    try:
        tok = AutoTokenizer.from_pretrained(resolve_model(cfg.model.path))
        demos = read_demos(args.demos)
        if args.max_demos:
            demos = itertools.islice(demos, args.max_demos)
        traces, skipped = demo_traces(demos, tok, cfg, where=args.demos, skill_cards=args.skill_cards,
                                      extractor=args.extractor, seed=cfg.trainer.seed)  # fmt: skip
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not traces:
        print(f"error: {args.demos}: no usable demonstration", file=sys.stderr)
        return 2
    out = Path(args.out or str(Path(cfg.trainer.run_dir) / "sft")).absolute()
    roles = {r: sum(t.role == r for t in traces) for r in ("solver", "extractor")}
    print(f"[sft] {len(traces)} demo traces {roles} ({skipped} skipped), {args.epochs} epochs -> {out}")
    make_paths_absolute(cfg)
    init_ray(cfg)
    group = LearnerGroup(cfg)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from cluster.core.storage import append_line

    for step, (epoch, chunk) in enumerate(batches(traces, args.batch_traces, args.epochs, cfg.trainer.seed)):
        m = group.sft(traces_to_table(chunk))
        m.update(epoch=epoch, step=step)
        append_line(out / "sft_metrics.jsonl", json.dumps(m))
        print(f"[sft] epoch {epoch} step {step}: nll {m['nll']:.4f} ({m['step_time_s']:.1f}s)")
    path = save_model(group, out / "model")
    print(f"[sft] done in {time.perf_counter() - t0:.0f}s; model {path} (model.path for RL)")
    group.shutdown()
    return 0


def save_model(group: Any, folder: Path) -> Path:
    """The learner's folder, published atomically with a manifest (an HF model folder at its top)."""
    import shutil

    from cluster.core.storage import fsync_tree, publish_dir, write_manifest

    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    group.save(str(tmp))
    write_manifest(tmp)
    fsync_tree(tmp)
    publish_dir(tmp, folder)
    return folder
