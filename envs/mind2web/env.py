"""Offline replay of one Mind2Web task on the shared TextEnv interface.

Action grammar (one line; case of the verb ignored, brackets around the ref optional):
    CLICK [ref]            click the element
    TYPE [ref] <text>      type <text> into the element
    SELECT [ref] <option>  choose <option> in a <select>
A step is right when the element is one of the step's positive candidates and the operation string
matches the gold one ("CLICK" / "TYPE <value>" / "SELECT <value>", token sets after lower-casing,
MindAct's rule). Modes:
    paper           the episode ends at the first wrong step (Evolving-RL's replay); won = all right
    teacher_forced  every step is scored and the gold action is applied (Mind2Web's evaluation)
Either way the next page is the recorded one and the history shows the gold action_reprs (in paper
mode they equal the agent's own actions, which were right). Rewards (`env.reward`): "step" (the
paper's): 1.0 for every right step, so a return counts the right steps and every step is its own
training sample (cluster/rewards.py); "success": 1.0 on the last step of a won episode; "progress":
1/n for every right step of an n-step task. Per-step correctness is in `info` either way, and so is
whether the gold element was on the observation at all (`gold_visible`; the page view may cut it).

Admissible actions (for constrained decoding): `CLICK [i]` for every element, `SELECT [i] <option>`
for every option of a <select>, and `TYPE [i] <phrase>` for every typable element and every phrase
of `snapshot.value_phrases(task)` (gold-free guesses cut from the task text). The TYPE text is free:
step() scores any text, so a free-form policy is not limited by the list.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from cluster.core.records import TaskSpec
from envs.base import Observation, StepResult
from envs.mind2web.loader import TaskRecord, TaskStore
from envs.mind2web.metrics import EpisodeScore, StepScore, op_string, token_f1
from envs.mind2web.snapshot import Snapshot, build_page_snapshot, build_snapshot, value_phrases

Mode = Literal["paper", "teacher_forced"]
MODES: tuple[str, ...] = ("paper", "teacher_forced")
Reward = Literal["success", "step", "progress"]
REWARDS: tuple[str, ...] = ("success", "step", "progress")
Observation_ = Literal["page", "candidates"]
_ACTION = re.compile(r"^(CLICK|TYPE|SELECT)\s*(?:\[\s*(\d+)\s*\]|(\d+))(?:\s+(.*))?$", re.IGNORECASE)


@dataclass(frozen=True)
class WebAction:
    op: str
    ref: int
    value: str


def parse_web_action(text: str) -> WebAction | None:
    """The first non-empty line in the grammar above, or None."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    m = _ACTION.match(line)
    if not m:
        return None
    op = m.group(1).upper()
    value = (m.group(4) or "").strip()
    return WebAction(op, int(m.group(2) or m.group(3)), "" if op == "CLICK" else value)


def format_action(op: str, ref: int, value: str = "") -> str:
    return f"CLICK [{ref}]" if op == "CLICK" else f"{op} [{ref}] {value}"


class Mind2WebEnv:
    """One task per episode; `reset(task)` with task.ref = `<parquet or json file>#<annotation_id>`."""

    def __init__(
        self,
        max_steps: int = 50,
        mode: Mode = "paper",
        max_candidates: int = 20,
        seed: int = 0,
        previous_k: int = 5,
        store: TaskStore | None = None,
        reward: Reward = "success",
        observation: Observation_ = "page",
        max_page_elements: int = 150,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Mind2WebEnv mode {mode!r}: expected one of {MODES}")
        if reward not in REWARDS:
            raise ValueError(f"Mind2WebEnv reward {reward!r}: expected one of {REWARDS}")
        self.reward = reward
        if observation not in ("page", "candidates"):
            raise ValueError(f"Mind2WebEnv observation {observation!r}: expected 'page' or 'candidates'")
        self.observation, self.max_page_elements = observation, max_page_elements
        if max_steps < 1 or max_candidates < 1:
            raise ValueError("Mind2WebEnv: max_steps and max_candidates must be >= 1")
        self.max_steps, self.mode, self.max_candidates = max_steps, mode, max_candidates
        self.seed, self.previous_k = seed, previous_k
        self.store = store or TaskStore()
        self._record: TaskRecord | None = None
        self._snapshot: Snapshot | None = None
        self._score: EpisodeScore | None = None
        self._t = 0
        self._done = True

    # -- episode ---------------------------------------------------------------------------------

    def reset(self, task: TaskSpec) -> Observation:
        r = self.store.get(task.ref)
        self._record, self._t, self._done = r, 0, False
        self._score = EpisodeScore(r.annotation_id, len(r.actions), [], r.website, r.domain, r.subdomain)
        self._snapshot = self._make_snapshot()
        return self._observation()

    def step(self, action: str) -> StepResult:
        if self._done or self._record is None or self._snapshot is None or self._score is None:
            raise RuntimeError("Mind2WebEnv.step() called before reset() or after the episode ended")
        r, t, snap = self._record, self._t, self._snapshot
        gold = r.actions[t].operation
        gold_action = self.gold_action()
        parsed = parse_web_action(action)
        el = snap.by_ref(parsed.ref) if parsed else None
        has_positive = any(e.is_positive for e in snap.elements)
        element_correct = bool(el is not None and el.is_positive)
        op_f1 = (
            token_f1(op_string(parsed.op, parsed.value), op_string(gold.op, gold.value)) if parsed else 0.0
        )
        if not has_positive:  # MindAct scores a step without a positive candidate as all-wrong
            op_f1 = 0.0
        score = StepScore(t, element_correct, op_f1)
        self._score.steps.append(score)
        self._t += 1
        n = len(r.actions)
        failed_out = self.mode == "paper" and not score.success
        truncated = not failed_out and self._t < n and self._t >= self.max_steps
        self._done = failed_out or truncated or self._t >= n
        won = self._done and self._score.success
        info = {
            "annotation_id": r.annotation_id,
            "action_uid": r.actions[t].action_uid,
            "step": t,
            "element_correct": element_correct,
            "op_correct": op_f1 == 1.0,
            "op_f1": op_f1,
            "step_success": score.success,
            "invalid": el is None,
            "no_positive": not has_positive,
            "gold": gold_action,
            "gold_repr": r.action_reprs[t],
            "truncated": truncated,
            "gold_visible": snap.gold_visible,
            "gold_included": self.observation == "candidates",  # MindAct's easier task: gold always shown
        }
        if self._done:
            info["episode_score"] = self._score
            self._snapshot = None
            obs = Observation("Episode finished.", [], r.confirmed_task, r.task_type)
        else:
            self._snapshot = self._make_snapshot()
            obs = self._observation()
        reward = {"success": float(won), "step": float(score.success),
                  "progress": score.success / n}[self.reward]  # fmt: skip
        return StepResult(obs, reward, self._done, won, invalid_action=el is None, info=info)

    def close(self) -> None:
        self._record = self._snapshot = self._score = None
        self._done = True

    # -- views -----------------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot | None:
        """The current step's snapshot (with gold flags: for oracles and tests, not for policies)."""
        return self._snapshot

    @property
    def episode_score(self) -> EpisodeScore | None:
        return self._score

    def gold_action(self) -> str | None:
        """A correct action for the current step, or None when no positive candidate is on the page."""
        if self._snapshot is None or self._record is None:
            return None
        gold = self._record.actions[self._t].operation
        pos = [e for e in self._snapshot.elements if e.is_positive]
        if not pos:
            return None
        return format_action(gold.op, pos[0].ref, gold.value)

    def _make_snapshot(self) -> Snapshot:
        assert self._record is not None
        r, t = self._record, self._t
        if self.observation == "page":
            return build_page_snapshot(r.confirmed_task, r.action_reprs[:t], r.actions[t], self.max_page_elements,
                                       self.previous_k)  # fmt: skip
        rng = random.Random(f"{self.seed}:{r.annotation_id}:{t}")
        return build_snapshot(
            r.confirmed_task, r.action_reprs[:t], r.actions[t], self.max_candidates, rng, self.previous_k
        )

    def _observation(self) -> Observation:
        assert self._snapshot is not None and self._record is not None
        return Observation(
            self._snapshot.render(),
            admissible_actions(self._snapshot),
            self._record.confirmed_task,
            self._record.task_type,
        )


def admissible_actions(snap: Snapshot) -> list[str]:
    phrases = value_phrases(snap.task)
    out = []
    for e in snap.elements:
        out.append(format_action("CLICK", e.ref))
        out.extend(format_action("SELECT", e.ref, o) for o in e.options)
        if e.typable:
            out.extend(format_action("TYPE", e.ref, p) for p in phrases)
    return out
