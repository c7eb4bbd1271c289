"""Typed records that cross actor boundaries, and their Arrow schema for bulk transfer and storage.

Small things travel as dataclasses (TaskSpec, SkillRef, EpisodeResult); token-level data travels as
Turn records batched into Arrow tables. Text is never re-tokenised downstream: the learner trains on
exactly the token ids and behaviour logprobs the engine produced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields

import pyarrow as pa

from cluster.roles import ROLES, Role  # noqa: F401  (re-exported: records name their role)


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


@dataclass
class Turn:
    """One model call: prompt tokens (mask 0) followed by generated tokens (mask 1).

    A multi-turn episode is a list of Turns; each turn's prompt is the full context the model saw
    (system prompt, optional skill, task, history window, observation), so every generated token's
    behaviour logprob is exactly reproducible by the learner from (prompt_ids, response_ids).
    """

    episode_id: str
    turn: int
    task_id: str
    task_type: str
    role: Role
    prompt_ids: list[int]
    response_ids: list[int]
    response_logprobs: list[float]
    policy_version: int
    skill_id: str = ""
    group_id: str = ""
    reward: float = 0.0
    advantage: float = 0.0
    won: bool = False
    truncated: bool = False

    @property
    def loss_mask(self) -> list[int]:
        return [0] * len(self.prompt_ids) + [1] * len(self.response_ids)

    def __post_init__(self) -> None:
        if len(self.response_ids) != len(self.response_logprobs):
            raise ValueError(
                f"turn {self.episode_id}/{self.turn}: {len(self.response_ids)} response tokens but "
                f"{len(self.response_logprobs)} logprobs"
            )
        if self.role not in ROLES:
            raise ValueError(f"turn {self.episode_id}/{self.turn}: role {self.role!r} not in {ROLES}")


@dataclass
class EpisodeResult:
    """Outcome of one episode (solver) or one extraction (extractor), with its turns."""

    episode_id: str
    task: TaskSpec
    role: Role
    won: bool
    reward: float
    steps: int
    turns: list[Turn] = field(default_factory=list)
    skill_id: str = ""
    policy_version: int = 0
    failed: bool = False  # the env or worker crashed; reported, never silently dropped
    error: str = ""
    truncated: bool = False
    invalid_actions: int = 0
    unparsable_actions: int = 0
    text: str = ""  # extractor: the generated text; solver: a readable transcript for the extractor
    info: dict = field(default_factory=dict)


TURN_SCHEMA = pa.schema(
    [
        ("episode_id", pa.string()),
        ("turn", pa.int32()),
        ("task_id", pa.string()),
        ("task_type", pa.string()),
        ("role", pa.string()),
        ("prompt_ids", pa.list_(pa.int32())),
        ("response_ids", pa.list_(pa.int32())),
        ("response_logprobs", pa.list_(pa.float32())),
        ("policy_version", pa.int64()),
        ("skill_id", pa.string()),
        ("group_id", pa.string()),
        ("reward", pa.float32()),
        ("advantage", pa.float32()),
        ("won", pa.bool_()),
        ("truncated", pa.bool_()),
    ]
)
_TURN_FIELDS = [f.name for f in fields(Turn)]


def turns_to_table(turns: Iterable[Turn]) -> pa.Table:
    rows = [asdict(t) for t in turns]
    return pa.Table.from_pylist(rows, schema=TURN_SCHEMA)


def table_to_turns(table: pa.Table) -> list[Turn]:
    missing = set(_TURN_FIELDS) - set(table.column_names)
    if missing:
        raise ValueError(f"turn table lacks columns {sorted(missing)}")
    return [Turn(**{k: row[k] for k in _TURN_FIELDS}) for row in table.to_pylist()]


def task_table(tasks: Sequence[TaskSpec]) -> pa.Table:
    return pa.Table.from_pylist([asdict(t) for t in tasks])
