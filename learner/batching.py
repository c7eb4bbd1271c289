"""Trace rows -> length-bucketed micro-batches under a token budget, per-token loss weights, sharding.

A row is one trace: token ids with the generated spans marked (loss mask 1; observations and
prompts 0). Rows are sorted by length and packed greedily so that (rows x longest row) stays within
the token budget: neighbours in length share a micro-batch, so right-padding stays small without the
block-diagonal attention masks that true packing needs on non-flash attention kernels.

Shared prompts: the G GRPO samples of one task start from the same prompt, and the N extractor
candidates of one trajectory share a long one. Rows with identical ids before their first generated
token form a unit computed as one sequence `prompt + rest_1 + ... + rest_m`: each rest attends to the
prompt and to itself (a per-row boolean attention mask, position ids restarting after the prompt),
so the prompt is encoded once instead of m times. With `prefix_tree` the rests' common prefixes are
stored once too (a token prefix tree, flattened: each token attends to its ancestors, its position id
is its depth): G sequence traces of one task that took the same first actions share those turns,
as the window rows of identical prompts shared them before, and rows whose prompts differ share
their common start (a skill card and its K downstream tasks). The logprobs are those of the
separate rows (tests/test_learner_units.py).

Loss aggregation (`learner.loss_agg`) is a per-token weight computed here: token_mean = 1 / (all
trained tokens); sample_mean = 1 / (tokens of the token's sample x number of samples), a sample being
every row with the same sample_id (one episode, or one extraction). Totals are global over ranks;
`shard_by_samples` keeps a sample's rows on one rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cluster.core.roles import ROLES

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class Row:
    """One trace as the learner needs it."""

    ids: list[int]
    spans: list[tuple[int, int]]
    behaviour_logprobs: list[float]  # one per generated token, or [] (recomputed in the first pass)
    advantages: list[float]  # one per span
    role: str
    sample_id: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def prompt_len(self) -> int:
        """Tokens before the first generated one: what rows may share."""
        return self.spans[0][0]

    @property
    def n_trained(self) -> int:
        return sum(b - a for a, b in self.spans)

    def token_advantages(self) -> list[float]:
        return [adv for (a, b), adv in zip(self.spans, self.advantages) for _ in range(b - a)]

    def targets(self) -> list[int]:
        return [t for a, b in self.spans for t in self.ids[a:b]]


def rows_from_table(table: pa.Table, where: str = "batch") -> list[Row]:
    """Validate a TRACE_SCHEMA table and convert it; errors name the record (sample/turn) and field."""
    from cluster.core.records import TRACE_SCHEMA  # pyarrow: not needed by the torch-only GPU smoke check

    missing = [f.name for f in TRACE_SCHEMA if f.name not in table.column_names]
    if missing:
        raise ValueError(f"{where}: table lacks TRACE_SCHEMA columns {missing}")
    keys = ("sample_id", "first_turn", "role", "token_ids", "spans", "behaviour_logprobs", "advantages")
    cols = {k: table.column(k).to_pylist() for k in keys}
    rows = []
    for i in range(table.num_rows):
        rec = f"{where}: record {i} (sample {cols['sample_id'][i]!r}, turn {cols['first_turn'][i]})"
        ids, spans = cols["token_ids"][i] or [], [tuple(s) for s in cols["spans"][i] or []]
        lps, advs, role = cols["behaviour_logprobs"][i] or [], cols["advantages"][i], cols["role"][i]
        if not spans:
            raise ValueError(f"{rec}: no generated span")
        last = 0
        for a, b in spans:
            if not max(1, last) <= a < b <= len(ids):
                raise ValueError(f"{rec}: span [{a}, {b}) out of order or outside {len(ids)} tokens")
            last = b
        n = sum(b - a for a, b in spans)
        if lps and len(lps) != n:
            raise ValueError(f"{rec}: {n} generated tokens but {len(lps)} behaviour_logprobs")
        if advs is None or len(advs) != len(spans):
            raise ValueError(f"{rec}: {len(spans)} spans but {len(advs or [])} advantages")
        if any(a is None or a != a for a in advs):
            raise ValueError(f"{rec}: advantage is {next(a for a in advs if a is None or a != a)!r}")
        if role not in ROLES:
            raise ValueError(f"{rec}: role {role!r} not in {ROLES}")
        sid = cols["sample_id"][i] or f"row-{i}"
        rows.append(Row(list(ids), spans, [float(x) for x in lps], [float(a) for a in advs], role, sid))
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


def shard_by_samples(lengths: list[int], sample_ids: list[str], world_size: int) -> list[list[int]]:
    """Rows to ranks, whole samples together, balancing token counts (largest sample first to the
    least-loaded rank)."""
    samples: dict[str, list[int]] = {}
    for i, s in enumerate(sample_ids):
        samples.setdefault(s, []).append(i)
    units = sorted(samples.values(), key=lambda idx: (-sum(lengths[i] for i in idx), idx[0]))
    shards: list[list[int]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for idx in units:
        r = min(range(world_size), key=lambda k: (load[k], k))
        shards[r] += idx
        load[r] += sum(lengths[i] for i in idx)
    return [sorted(s) for s in shards]


def token_weights(
    rows: list[Row], loss_agg: str, total_tokens: float, total_samples: float
) -> list[list[float]]:
    """Per-row, per-trained-token aggregation weights (see module doc); totals are global."""
    if loss_agg == "token_mean":
        w = 1.0 / max(total_tokens, 1.0)
        return [[w] * r.n_trained for r in rows]
    if loss_agg != "sample_mean":
        raise ValueError(f"loss_agg {loss_agg!r}: expected sample_mean or token_mean")
    per_sample: dict[str, int] = {}
    for r in rows:
        per_sample[r.sample_id] = per_sample.get(r.sample_id, 0) + r.n_trained
    return [[1.0 / (max(per_sample[r.sample_id], 1) * max(total_samples, 1.0))] * r.n_trained for r in rows]


class PrefixTree:
    """The rows of one unit as a token prefix tree, nodes numbered in insertion order (a parent
    before its children). `prefix_tree=False` shares only the common prompt: every rest gets new
    nodes."""

    def __init__(self, prompt_len: int, prefix_tree: bool = True) -> None:
        self.tokens: list[int] = []
        self.parent: list[int] = []  # -1 = a root
        self.depth: list[int] = []
        self._children: list[dict[int, int]] = []
        self._roots: dict[int, int] = {}
        self.prompt_len, self.share_rests = prompt_len, prefix_tree

    def __len__(self) -> int:
        return len(self.tokens)

    def _walk(self, ids: list[int]) -> list[int]:
        """Node indices of the longest prefix of `ids` already stored."""
        path: list[int] = []
        limit = len(ids) if self.share_rests else min(self.prompt_len, len(ids))
        kids = self._roots
        for t in ids[:limit]:
            node = kids.get(t)
            if node is None:
                break
            path.append(node)
            kids = self._children[node]
        return path

    def added(self, ids: list[int]) -> int:
        """How many nodes inserting `ids` would add."""
        return len(ids) - len(self._walk(ids))

    def insert(self, ids: list[int]) -> list[int]:
        """Store `ids`; the node of each of its tokens."""
        path = self._walk(ids)
        for t in ids[len(path) :]:
            node, parent = len(self.tokens), (path[-1] if path else -1)
            self.tokens.append(t)
            self.parent.append(parent)
            self.depth.append(len(path))
            self._children.append({})
            if parent < 0:
                self._roots.setdefault(t, node)
            elif self.share_rests or len(path) < self.prompt_len:
                self._children[parent].setdefault(t, node)
            path.append(node)
        return path


# With the prefix tree, rows that share at least this many leading tokens are stored as one tree even
# when their prompts differ: the K downstream tasks of one skill share the system prompt and the skill
# card (~550 tokens in the quickstart: 18% fewer learner tokens, about 15% less learner time, on one of
# its batches). A tree's attention mask is dense, so on this CPU sharing only the ~100-token solver
# instructions saves less than the mask costs.
MIN_SHARED_PREFIX = 256


def plan_units(
    rows: list[Row], share_prompts: bool, token_budget: int, prefix_tree: bool = True
) -> list[list[int]]:
    """Row indices grouped into units computed as one sequence (one row per unit without sharing);
    a unit stays within `token_budget` (its prefix tree's size) unless a single row is longer.

    Without the prefix tree only rows with identical prompts share. With it, rows are visited in
    token order, so rows with long common prefixes are neighbours, and a row joins the unit being
    built when it shares its whole prompt or MIN_SHARED_PREFIX tokens with the unit's last row."""
    if not share_prompts:
        return [[i] for i in range(len(rows))]
    if prefix_tree:
        order = sorted(range(len(rows)), key=lambda i: (rows[i].ids, i))
    else:
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, r in enumerate(rows):
            by_prompt.setdefault(tuple(r.ids[: r.prompt_len]), []).append(i)
        order = [i for idx in by_prompt.values() for i in idx]
    units: list[list[int]] = []
    cur: list[int] = []
    tree = PrefixTree(0, prefix_tree)
    for i in order:
        r = rows[i]
        if cur:
            # tokens already in the tree: in token order, the common prefix with the last row
            added = tree.added(r.ids)
            shared = len(r) - added
            same_prompt = shared >= r.prompt_len == rows[cur[-1]].prompt_len
            joins = same_prompt or (prefix_tree and shared >= MIN_SHARED_PREFIX)
            if joins and len(tree) + added <= token_budget:
                cur.append(i)
                tree.insert(r.ids)
                continue
            units.append(sorted(cur))
        cur, tree = [i], PrefixTree(r.prompt_len, prefix_tree)
        tree.insert(r.ids)
    if cur:
        units.append(sorted(cur))
    return sorted(units)


def unit_tree(rows: list[Row], prefix_tree: bool = True) -> tuple[PrefixTree, list[list[int]]]:
    """A unit's prefix tree and, per row, the node of each of its tokens."""
    tree = PrefixTree(rows[0].prompt_len, prefix_tree)
    return tree, [tree.insert(r.ids) for r in rows]


def unit_length(rows: list[Row], prefix_tree: bool = True) -> int:
    return len(unit_tree(rows, prefix_tree)[0])


@dataclass
class MicroBatch:
    """Right-padded tensors; `select` marks the positions whose next token is trained on.

    Per-token tensors (targets, behaviour, advantage, role index, weight) are flat, in the order of
    `select`, i.e. aligned with `hidden[:, :-1][select]` (or, with shared prompts, with
    `hidden.reshape(rows * L, -1)[select]`: `attention_mask` is then a boolean (rows, L, L) "may
    attend" mask and `position_ids` is set). `behaviour_logprobs` holds NaN where the learner must
    recompute them. `weights` are the aggregation weights of module doc."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    select: torch.Tensor
    targets: torch.Tensor
    behaviour_logprobs: torch.Tensor
    advantages: torch.Tensor
    role_index: torch.Tensor  # index into ROLES; -1 = padding (all coefficients 0)
    weights: torch.Tensor
    real_tokens: int  # non-pad tokens
    padded_tokens: int  # rows x max length
    position_ids: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.targets.numel())


def _token_fields(rows: list[Row], weights: list[list[float]]) -> dict[str, torch.Tensor]:
    beh, adv, role, w = [], [], [], []
    for r, rw in zip(rows, weights):
        beh += r.behaviour_logprobs or [float("nan")] * r.n_trained
        adv += r.token_advantages()
        role += [ROLES.index(r.role)] * r.n_trained
        w += rw
    return {
        "behaviour_logprobs": torch.tensor(beh, dtype=torch.float32),
        "advantages": torch.tensor(adv, dtype=torch.float32),
        "role_index": torch.tensor(role, dtype=torch.long),
        "weights": torch.tensor(w, dtype=torch.float64),
    }


def collate(rows: list[Row], pad_id: int, weights: list[list[float]] | None = None) -> MicroBatch:
    weights = weights if weights is not None else [[1.0] * r.n_trained for r in rows]
    length = max(len(r) for r in rows)
    n = len(rows)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    att = torch.zeros((n, length), dtype=torch.long)
    select = torch.zeros((n, length - 1), dtype=torch.bool)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r.ids)
        att[b, : len(r)] = 1
        for a, e in r.spans:
            select[b, a - 1 : e - 1] = True  # position t predicts token t + 1
    return MicroBatch(
        input_ids=ids,
        attention_mask=att,
        select=select,
        targets=ids[:, 1:][select],
        real_tokens=sum(len(r) for r in rows),
        padded_tokens=n * length,
        **_token_fields(rows, weights),
    )


def collate_units(
    units: list[list[Row]],
    pad_id: int,
    weights: list[list[list[float]]] | None = None,
    prefix_tree: bool = True,
) -> MicroBatch:
    """One flattened prefix tree per unit (a prompt and the rows that share it); plain `collate`
    when no unit has more than one row."""
    weights = weights if weights is not None else [[[1.0] * r.n_trained for r in u] for u in units]
    if all(len(u) == 1 for u in units):
        return collate([u[0] for u in units], pad_id, [w[0] for w in weights])
    trees = [unit_tree(u, prefix_tree) for u in units]
    length = max(len(tree) for tree, _ in trees)
    n = len(units)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    allow = torch.eye(length, dtype=torch.bool).repeat(n, 1, 1)  # pads attend to themselves: no empty row
    pos = torch.zeros((n, length), dtype=torch.long)
    select: list[int] = []
    targets: list[int] = []
    for b, (unit, (tree, paths)) in enumerate(zip(units, trees)):
        m = len(tree)
        ids[b, :m] = torch.tensor(tree.tokens)
        pos[b, :m] = torch.tensor(tree.depth)
        a_b = allow[b]
        for node, parent in enumerate(tree.parent):  # a node sees its ancestors and itself
            if parent >= 0:
                a_b[node, :m] |= a_b[parent, :m]
        for r, path in zip(unit, paths):
            for a, e in r.spans:  # token t is predicted at the node of token t - 1
                select += [b * length + path[t - 1] for t in range(a, e)]
            targets += r.targets()
    return MicroBatch(
        input_ids=ids,
        attention_mask=allow,
        select=torch.tensor(select, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        real_tokens=sum(len(tree) for tree, _ in trees),
        padded_tokens=n * length,
        position_ids=pos,
        **_token_fields([r for u in units for r in u], [w for uw in weights for w in uw]),
    )


def null_micro_batch(pad_id: int) -> MicroBatch:
    """A 2-token row with advantage 0, role index -1 and weight 0: a rank with fewer micro-batches
    than its peers runs these so every rank makes the same number of collectives."""
    mb = collate([Row([pad_id, pad_id], [(1, 2)], [0.0], [0.0], ROLES[0])], pad_id, [[0.0]])
    mb.role_index = torch.full_like(mb.role_index, -1)
    mb.real_tokens = 0
    return mb
