"""Typed records that cross actor boundaries, and the Arrow schema of the one bulk record, `Trace`.

Small things travel as dataclasses (TaskSpec, SkillRef, EpisodeJob, EpisodeResult); token-level data
travels as `Trace` records batched into Arrow tables. Text is never re-tokenised downstream: the
learner trains on exactly the token ids the engine produced and saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields

import pyarrow as pa

from cluster.core.roles import ROLES, Role  # noqa: F401  (re-exported: records name their role)


@dataclass(frozen=True)
class TaskSpec:
    """One playable task: an ALFWorld game folder or one Mind2Web annotation.

    `text` and `task_type` are the retrieval keys (task description; ALFWorld task type or
    Mind2Web domain/subdomain). `ref` locates the task for its env (game file path, or
    `<parquet file>#<annotation_id>`).
    """

    task_id: str
    env: str
    task_type: str
    text: str
    ref: str
    split: str = "train"


@dataclass(frozen=True)
class SkillRef:
    """A skill as a solver plays it: the card text for its system prompt and the id results are kept
    under. `raw` marks the raw text of an extraction that did not parse (played as the paper does)."""

    skill_id: str
    text: str
    raw: bool = False

    @staticmethod
    def raw_text(text: str) -> SkillRef:
        return SkillRef("raw-" + hashlib.sha256(text.encode()).hexdigest()[:16], text, raw=True)


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to play: a task, optionally with a skill in the solver's prompt."""

    task: TaskSpec
    skill: SkillRef | None = None


@dataclass
class Trace:
    """One token sequence the learner trains on: a whole episode (`env.context: sequence`), one turn
    of it (`env.context: window`), or one extraction.

    `spans` are the [start, end) positions of generated tokens (loss mask 1), in turn order: span i is
    turn `first_turn + i`; everything else (system prompt, skill, task, observations) is mask 0.
    `behaviour_logprobs` holds one value per generated token when the engine returned them, else it is
    empty and the learner recomputes them in its first pass. `advantages` holds one value per span
    (set by cluster.rewards). `sample_id` names the sample the trace belongs to (its episode or
    extraction): `learner.loss_agg: sample_mean` averages each sample over its own tokens.
    """

    sample_id: str
    first_turn: int
    task_id: str
    task_type: str
    role: Role
    token_ids: list[int]
    spans: list[tuple[int, int]]
    behaviour_logprobs: list[float]
    policy_version: int
    skill_id: str = ""
    group_id: str = ""
    reward: float = 0.0
    advantages: list[float] = field(default_factory=list)
    won: bool = False
    truncated: bool = False

    def __post_init__(self) -> None:
        where = f"trace {self.sample_id}/{self.first_turn}"
        if self.role not in ROLES:
            raise ValueError(f"{where}: role {self.role!r} not in {ROLES}")
        self.spans = [(int(a), int(b)) for a, b in self.spans]
        last = 0
        for a, b in self.spans:
            if not (max(1, last) <= a < b <= len(self.token_ids)):
                raise ValueError(
                    f"{where}: span [{a}, {b}) out of order or outside {len(self.token_ids)} tokens"
                )
            last = b
        if self.behaviour_logprobs and len(self.behaviour_logprobs) != self.n_generated:
            raise ValueError(
                f"{where}: {self.n_generated} generated tokens but {len(self.behaviour_logprobs)} logprobs"
            )

    @property
    def n_generated(self) -> int:
        return sum(b - a for a, b in self.spans)

    @property
    def loss_mask(self) -> list[int]:
        mask = [0] * len(self.token_ids)
        for a, b in self.spans:
            mask[a:b] = [1] * (b - a)
        return mask

    def span_tokens(self, i: int) -> list[int]:
        a, b = self.spans[i]
        return self.token_ids[a:b]


@dataclass
class EpisodeResult:
    """Outcome of one solver episode, with its traces. `reward` is the episode's return under the
    configured reward; `step_rewards[t]` the reward of step t (the per-step signal, Mind2Web)."""

    episode_id: str
    task: TaskSpec
    won: bool
    reward: float
    steps: int
    traces: list[Trace] = field(default_factory=list)
    skill_id: str = ""
    policy_version: int = 0
    failed: bool = False  # the env or worker crashed; reported, never silently dropped
    error: str = ""
    truncated: bool = False
    invalid_actions: int = 0
    unparsable_actions: int = 0
    step_rewards: list[float] = field(default_factory=list)
    text: str = ""  # a readable transcript, what the extractor reads
    info: dict = field(default_factory=dict)


TRACE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("first_turn", pa.int32()),
        ("task_id", pa.string()),
        ("task_type", pa.string()),
        ("role", pa.string()),
        ("token_ids", pa.list_(pa.int32())),
        ("spans", pa.list_(pa.list_(pa.int32(), 2))),
        ("behaviour_logprobs", pa.list_(pa.float32())),
        ("policy_version", pa.int64()),
        ("skill_id", pa.string()),
        ("group_id", pa.string()),
        ("reward", pa.float32()),
        ("advantages", pa.list_(pa.float32())),
        ("won", pa.bool_()),
        ("truncated", pa.bool_()),
    ]
)
_TRACE_FIELDS = [f.name for f in fields(Trace)]


def traces_to_table(traces: Iterable[Trace]) -> pa.Table:
    rows = []
    for t in traces:
        row = asdict(t)
        row["spans"] = [list(s) for s in t.spans]
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=TRACE_SCHEMA)


def table_to_traces(table: pa.Table) -> list[Trace]:
    missing = set(_TRACE_FIELDS) - set(table.column_names)
    if missing:
        raise ValueError(f"trace table lacks columns {sorted(missing)}")
    return [Trace(**{k: row[k] for k in _TRACE_FIELDS}) for row in table.to_pylist()]


def task_table(tasks: Sequence[TaskSpec]) -> pa.Table:
    return pa.Table.from_pylist([asdict(t) for t in tasks])
