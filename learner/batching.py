"""Turn rows -> length-bucketed micro-batches under a token budget, and whole-sequence sharding.

Rows are sorted by length and packed greedily so that (rows x longest row) stays within the token
budget: neighbours in length share a micro-batch, so right-padding stays small without the
block-diagonal attention masks that true packing needs on non-flash attention kernels.

Shared prompts: GRPO samples of one task start from the same prompt, and the N extractor candidates
of one trajectory share a long one. Rows with identical prompt ids form a unit computed as one
sequence `prompt + response_1 + ... + response_m`: each response attends to the prompt and to itself
(a per-row boolean attention mask, position ids restarting after the prompt), so the prompt is
encoded once instead of m times. The logprobs are those of the separate rows (tests/test_learner_units.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cluster.roles import ROLES

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class Row:
    """One Turn as the learner needs it: full sequence, where the response starts, and its signals."""

    ids: list[int]
    response_start: int
    behaviour_logprobs: list[float]
    advantage: float
    role: str

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_response(self) -> int:
        return len(self.ids) - self.response_start


def rows_from_table(table: pa.Table, where: str = "batch") -> list[Row]:
    """Validate a TURN_SCHEMA table and convert it; errors name the record (episode/turn) and field."""
    from cluster.records import TURN_SCHEMA  # pyarrow: not needed by the torch-only GPU smoke check

    missing = [f.name for f in TURN_SCHEMA if f.name not in table.column_names]
    if missing:
        raise ValueError(f"{where}: table lacks TURN_SCHEMA columns {missing}")
    cols = {
        k: table.column(k).to_pylist()
        for k in (
            "episode_id",
            "turn",
            "role",
            "prompt_ids",
            "response_ids",
            "response_logprobs",
            "advantage",
        )
    }
    rows = []
    for i in range(table.num_rows):
        rec = f"{where}: record {i} (episode {cols['episode_id'][i]!r}, turn {cols['turn'][i]})"
        prompt, resp, lps = cols["prompt_ids"][i], cols["response_ids"][i], cols["response_logprobs"][i]
        role, adv = cols["role"][i], cols["advantage"][i]
        if not prompt:
            raise ValueError(f"{rec}: prompt_ids is empty (the first response token needs a context)")
        if not resp:
            raise ValueError(f"{rec}: response_ids is empty")
        if lps is None or len(lps) != len(resp):
            raise ValueError(f"{rec}: {len(resp)} response_ids but {len(lps or [])} response_logprobs")
        if role not in ROLES:
            raise ValueError(f"{rec}: role {role!r} not in {ROLES}")
        if adv is None or adv != adv:
            raise ValueError(f"{rec}: advantage is {adv!r}")
        rows.append(Row(list(prompt) + list(resp), len(prompt), [float(x) for x in lps], float(adv), role))
    return rows


def plan_micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Indices grouped into micro-batches with len(group) * max length <= token_budget.

    Longest first; a row longer than the budget gets a micro-batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def shard_by_tokens(lengths: list[int], world_size: int) -> list[list[int]]:
    """Whole sequences to ranks, balancing token counts (longest first to the least-loaded rank)."""
    shards: list[list[int]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        r = min(range(world_size), key=lambda k: (load[k], k))
        shards[r].append(i)
        load[r] += lengths[i]
    return [sorted(s) for s in shards]


def plan_units(rows: list[Row], share_prompts: bool, token_budget: int) -> list[list[int]]:
    """Row indices grouped into units that share a prompt (one row per unit without sharing); a unit
    stays within `token_budget` (prompt + its responses) unless a single row is longer."""
    if not share_prompts:
        return [[i] for i in range(len(rows))]
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(rows):
        by_prompt.setdefault(tuple(r.ids[: r.response_start]), []).append(i)
    units: list[list[int]] = []
    for idx in by_prompt.values():
        p = rows[idx[0]].response_start
        cur: list[int] = []
        for i in idx:
            if cur and p + sum(rows[j].n_response for j in cur) + rows[i].n_response > token_budget:
                units.append(cur)
                cur = []
            cur.append(i)
        units.append(cur)
    return units


def unit_length(rows: list[Row]) -> int:
    return rows[0].response_start + sum(r.n_response for r in rows)


@dataclass
class MicroBatch:
    """Right-padded tensors; `select[b, t]` marks positions t whose next token (t+1) is trained on.

    Per-token tensors (targets, behaviour, advantage, role index) are flat, in the row-major order of
    `select`, i.e. aligned with `hidden[:, :-1][select]`. With shared prompts (`collate_units`),
    `attention_mask` is a boolean (rows, L, L) "may attend" mask, `position_ids` is set and `select`
    holds flat indices into `hidden.reshape(rows * L, -1)` (a prompt's last position predicts the first
    token of every response, so one position can be selected more than once).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    select: torch.Tensor
    targets: torch.Tensor
    behaviour_logprobs: torch.Tensor
    advantages: torch.Tensor
    role_index: torch.Tensor  # index into ROLES
    real_tokens: int  # non-pad tokens
    padded_tokens: int  # rows x max length
    position_ids: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.targets.numel())


def collate(rows: list[Row], pad_id: int) -> MicroBatch:
    length = max(len(r) for r in rows)
    n = len(rows)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    att = torch.zeros((n, length), dtype=torch.long)
    select = torch.zeros((n, length - 1), dtype=torch.bool)
    beh, adv, role = [], [], []
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r.ids)
        att[b, : len(r)] = 1
        select[b, r.response_start - 1 : len(r) - 1] = True
        beh += r.behaviour_logprobs
        adv += [r.advantage] * r.n_response
        role += [ROLES.index(r.role)] * r.n_response
    return MicroBatch(
        input_ids=ids,
        attention_mask=att,
        select=select,
        targets=ids[:, 1:][select],
        behaviour_logprobs=torch.tensor(beh, dtype=torch.float32),
        advantages=torch.tensor(adv, dtype=torch.float32),
        role_index=torch.tensor(role, dtype=torch.long),
        real_tokens=sum(len(r) for r in rows),
        padded_tokens=n * length,
    )


def collate_units(units: list[list[Row]], pad_id: int) -> MicroBatch:
    """One sequence per unit (a prompt and the responses that share it); plain `collate` when no unit
    has more than one response."""
    if all(len(u) == 1 for u in units):
        return collate([u[0] for u in units], pad_id)
    length = max(unit_length(u) for u in units)
    n = len(units)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    allow = torch.eye(length, dtype=torch.bool).repeat(n, 1, 1)  # pads attend to themselves: no empty row
    pos = torch.zeros((n, length), dtype=torch.long)
    select, targets, beh, adv, role = [], [], [], [], []
    for b, unit in enumerate(units):
        p = unit[0].response_start
        ids[b, :p] = torch.tensor(unit[0].ids[:p])
        allow[b, :p, :p] = torch.tril(torch.ones(p, p, dtype=torch.bool))
        pos[b, :p] = torch.arange(p)
        s = p
        for r in unit:
            k = r.n_response
            ids[b, s : s + k] = torch.tensor(r.ids[p:])
            allow[b, s : s + k, :p] = True
            allow[b, s : s + k, s : s + k] = torch.tril(torch.ones(k, k, dtype=torch.bool))
            pos[b, s : s + k] = torch.arange(p, p + k)
            # the prompt's last position predicts the first response token; then each token the next
            select += [b * length + p - 1] + [b * length + s + t for t in range(k - 1)]
            targets += r.ids[p:]
            beh += r.behaviour_logprobs
            adv += [r.advantage] * k
            role += [ROLES.index(r.role)] * k
            s += k
    return MicroBatch(
        input_ids=ids,
        attention_mask=allow,
        select=torch.tensor(select, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        behaviour_logprobs=torch.tensor(beh, dtype=torch.float32),
        advantages=torch.tensor(adv, dtype=torch.float32),
        role_index=torch.tensor(role, dtype=torch.long),
        real_tokens=sum(unit_length(u) for u in units),
        padded_tokens=n * length,
        position_ids=pos,
    )


def null_micro_batch(pad_id: int) -> MicroBatch:
    """A 2-token row with advantage 0 and role index -1 (all coefficients 0): a rank with fewer
    micro-batches than its peers runs these so every rank makes the same number of collectives."""
    mb = collate([Row([pad_id, pad_id], 1, [0.0], 0.0, ROLES[0])], pad_id)
    mb.role_index = torch.full_like(mb.role_index, -1)
    mb.real_tokens = 0
    return mb
