"""Learner plumbing without a model: micro-batch planning, sharding, aggregation weights, collation,
the lean-learner rules and checkpoint folders."""

import pytest
import torch

from cluster.core.config import LearnerConfig
from cluster.core.records import Trace, traces_to_table
from learner.batching import (
    MIN_SHARED_PREFIX,
    Row,
    collate,
    collate_units,
    null_micro_batch,
    plan_micro_batches,
    plan_units,
    rows_from_table,
    shard_by_samples,
    token_weights,
    unit_length,
)
from learner.model import deepspeed_config, gradient_checkpointing, zero_stage


def test_plan_micro_batches_respects_budget_and_groups_by_length():
    lengths = [10, 50, 12, 48, 200, 11]
    plan = plan_micro_batches(lengths, token_budget=100)
    assert sorted(i for b in plan for i in b) == list(range(6))
    assert plan[0] == [4]  # longer than the budget: alone
    for b in plan:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100
    assert [1, 3] in plan  # the two ~50-token rows share one micro-batch
    padded = sum(len(b) * max(lengths[i] for i in b) for b in plan)
    assert padded - sum(lengths) <= 10  # sorting keeps padding small


def test_shard_by_samples_keeps_samples_whole_and_balanced():
    lengths = [100, 90, 10, 10, 60, 50]
    sids = ["a", "b", "c", "c", "d", "e"]
    shards = shard_by_samples(lengths, sids, 2)
    assert sorted(i for s in shards for i in s) == list(range(6))
    assert any({2, 3} <= set(s) for s in shards)  # sample c's two rows on one rank
    loads = [sum(lengths[i] for i in s) for s in shards]
    assert abs(loads[0] - loads[1]) <= 20
    assert shard_by_samples([5], ["a"], 2) == [[0], []]  # fewer samples than ranks: an empty shard


def _trace(prompt, resp, role="solver", adv=1.0, sid="e"):
    ids = list(prompt) + list(resp)
    return Trace(
        sid, 0, "t", "x", role, ids, [(len(prompt), len(ids))], [-0.5] * len(resp), 0, advantages=[adv]
    )


def test_collate_aligns_targets_with_selected_positions():
    rows = rows_from_table(
        traces_to_table([_trace([1, 2, 3], [4, 5], "extractor", 0.5), _trace([7], [8, 9, 10])])
    )
    mb = collate(rows, pad_id=0)
    assert mb.input_ids.tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 10, 0]]
    # position t predicts token t+1: response tokens 4,5 are predicted at positions 2,3
    assert mb.select.tolist() == [[False, False, True, True], [True, True, True, False]]
    assert mb.targets.tolist() == [4, 5, 8, 9, 10]
    assert mb.advantages.tolist() == [0.5, 0.5, 1.0, 1.0, 1.0]
    assert mb.role_index.tolist() == [1, 1, 0, 0, 0]
    assert (mb.real_tokens, mb.padded_tokens) == (9, 10)
    null = null_micro_batch(0)
    assert null.role_index.tolist() == [-1] and null.real_tokens == 0 and null.weights.tolist() == [0.0]


def test_multi_span_row_masks_observations_and_carries_per_span_advantages():
    """A whole episode as one sequence: two actions (mask 1) around an observation (mask 0)."""
    t = Trace(
        "ep", 0, "t", "x", "solver", [1, 2, 3, 4, 5, 6, 7, 8], [(3, 5), (7, 8)], [], 0, advantages=[0.5, -1.0]
    )
    assert t.loss_mask == [0, 0, 0, 1, 1, 0, 0, 1]
    (row,) = rows_from_table(traces_to_table([t]))
    mb = collate([row], 0)
    assert mb.targets.tolist() == [4, 5, 8] and mb.advantages.tolist() == [0.5, 0.5, -1.0]
    assert mb.select.tolist() == [[False, False, True, True, False, False, True]]
    assert torch.isnan(mb.behaviour_logprobs).all()  # recomputed by the learner's first pass


def test_sample_mean_weighs_samples_equally_whatever_their_length():
    """Under sample_mean a 300-token extraction and a 30-turn episode weigh the same (x role weight)."""
    extraction = Row(list(range(310)), [(10, 310)], [], [1.0], "extractor", "x")
    episode = [
        Row(list(range(40)), [(38, 40)], [], [1.0], "solver", "ep") for _ in range(30)
    ]  # window context
    rows = [extraction, *episode]
    total = sum(r.n_trained for r in rows)
    w = token_weights(rows, "sample_mean", total, 2)
    assert sum(w[0]) == pytest.approx(0.5) and sum(sum(x) for x in w[1:]) == pytest.approx(0.5)
    t = token_weights(rows, "token_mean", total, 2)
    assert sum(t[0]) == pytest.approx(300 / 360)  # token_mean: the extraction's 300 tokens dominate
    with pytest.raises(ValueError, match="loss_agg"):
        token_weights(rows, "bogus", total, 2)


def test_plan_units_groups_identical_prompts_within_the_budget():
    rows = rows_from_table(
        traces_to_table(
            [
                _trace([1, 2, 3], [4, 5]),
                _trace([7], [8]),
                _trace([1, 2, 3], [6]),
                _trace([1, 2, 3], [9, 9, 9]),
            ]
        )
    )
    assert plan_units(rows, share_prompts=True, token_budget=100) == [[0, 2, 3], [1]]
    assert plan_units(rows, share_prompts=True, token_budget=7) == [[0, 2], [1], [3]]  # 3+2+1 <= 7 < 3+2+1+3
    assert plan_units(rows, share_prompts=False, token_budget=100) == [[0], [1], [2], [3]]


def test_collate_units_one_prompt_many_responses():
    rows = rows_from_table(
        traces_to_table([_trace([1, 2, 3], [4, 5], adv=0.5), _trace([1, 2, 3], [6, 7, 8], adv=-1.0)])
    )
    mb = collate_units([rows], pad_id=0)
    assert mb.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]
    assert mb.position_ids.tolist() == [
        [0, 1, 2, 3, 4, 3, 4, 5]
    ]  # the second response restarts after the prompt
    assert mb.select.tolist() == [2, 3, 2, 5, 6]  # position 2 (last prompt token) predicts both first tokens
    assert mb.targets.tolist() == [4, 5, 6, 7, 8] and mb.advantages.tolist() == [0.5, 0.5, -1.0, -1.0, -1.0]
    allow = mb.attention_mask[0]
    assert allow[5, :3].all() and not allow[5, 3:5].any() and allow[7, 5:8].all()  # never the other response
    assert (mb.real_tokens, mb.padded_tokens) == (8, 8)
    assert collate_units([[rows[0]], [rows[1]]], 0).position_ids is None  # no sharing: the plain path


def _seq(sid, ids, spans, adv=1.0):
    """A sequence-context trace: several spans (actions) with observations between them."""
    return Trace(sid, 0, "t", "x", "solver", list(ids), spans, [], 0, advantages=[adv] * len(spans))


def test_prefix_tree_stores_common_turns_once():
    """Two episodes of one task that took the same first action and saw the same observation share
    those tokens: the tree holds 3 + 2 + 2 + (1 + 1) tokens, not 2 x 8; each token attends to its
    ancestors only and its position is its depth in the episode."""
    a = [1, 2, 3, 10, 11, 20, 21, 30]  # prompt, action, observation, action
    b = [1, 2, 3, 10, 11, 20, 21, 31]  # the same episode until the last action token
    rows = rows_from_table(
        traces_to_table([_seq("a", a, [(3, 5), (7, 8)]), _seq("b", b, [(3, 5), (7, 8)], -1.0)])
    )
    assert unit_length(rows) == 9 and unit_length(rows, prefix_tree=False) == 3 + 5 + 5
    mb = collate_units([rows], pad_id=0)
    assert mb.input_ids.tolist() == [[1, 2, 3, 10, 11, 20, 21, 30, 31]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 7]]
    assert mb.select.tolist() == [2, 3, 6, 2, 3, 6]  # node 6 (token 21) predicts both last actions
    assert mb.targets.tolist() == [10, 11, 30, 10, 11, 31]
    allow = mb.attention_mask[0]
    assert allow[8, :7].all() and not allow[8, 7] and allow[8, 8]  # 31 never sees its sibling 30
    assert (mb.real_tokens, mb.padded_tokens) == (9, 9)
    old = collate_units([rows], pad_id=0, prefix_tree=False)  # only the prompt shared
    assert old.real_tokens == 13 and old.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 3, 4, 5, 6, 7]]
    # the budget counts the tree: both rows fit 9 tokens together with the tree, not without it
    assert plan_units(rows, True, 9) == [[0, 1]] and plan_units(rows, True, 9, prefix_tree=False) == [
        [0],
        [1],
    ]


def _net():
    from transformers import AutoModelForCausalLM

    from cluster.core.model_store import resolve_model
    from learner.model import TokenLogits

    try:
        lm = AutoModelForCausalLM.from_pretrained(resolve_model("embedded"), dtype=torch.float32)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return TokenLogits(lm).eval()


def _logprobs(net, mb):
    logits = net(mb.input_ids, mb.attention_mask, mb.select, mb.position_ids)
    return torch.log_softmax(logits, -1).gather(-1, mb.targets[:, None])[:, 0]


def test_shared_prompt_logprobs_equal_separate_rows():
    """The packed forward of the real embedded model gives the logprobs of the separate rows, also for
    rows with several spans (sequence context: observations between the actions)."""
    net = _net()
    g = torch.Generator().manual_seed(0)

    def rand(n):
        return torch.randint(100, 5000, (n,), generator=g).tolist()

    prompt, other = rand(30), rand(12)
    traces = [_trace(prompt, rand(n)) for n in (4, 7, 1)] + [_trace(other, [5, 6])]
    ids = prompt + rand(3) + rand(5) + rand(2)  # action, observation, action
    traces.append(_seq("seq", ids, [(30, 33), (38, 40)]))
    # two more episodes that share the first turn with it and part of the next action (prefix tree)
    traces.append(_seq("seq2", ids[:39] + rand(4), [(30, 33), (38, 43)]))
    traces.append(_seq("seq3", ids[:36] + rand(2) + rand(3), [(30, 33), (38, 41)]))
    # two prompts that differ only after a long common start (one skill card, two downstream tasks)
    card = rand(MIN_SHARED_PREFIX)
    traces += [_trace(card + rand(5), rand(3)), _trace(card + rand(6), rand(2))]
    rows = rows_from_table(traces_to_table(traces))
    with torch.no_grad():
        plan = plan_units(rows, True, 4096)
        # the rows of one prompt (incl. the sequences); the other prompt; the two sharing the card
        assert plan == [[0, 1, 2, 4, 5, 6], [3], [7, 8]]
        assert unit_length([rows[7], rows[8]]) == MIN_SHARED_PREFIX + 5 + 3 + 6 + 2
        assert plan_units(rows, True, 4096, prefix_tree=False) == [[0, 1, 2, 4, 5, 6], [3], [7], [8]]
        separate = torch.cat([_logprobs(net, collate([rows[i]], 0)) for u in plan for i in u])
        units = [[rows[i] for i in u] for u in plan]
        for tree in (True, False):
            mb = collate_units(units, 0, prefix_tree=tree)  # two units of different lengths: padding included
            packed = _logprobs(net, mb)
            assert packed.shape == separate.shape
            assert torch.allclose(packed, separate, atol=1e-4), (tree, (packed - separate).abs().max())
        assert mb.real_tokens > collate_units(units, 0).real_tokens  # the tree stored fewer tokens


def test_rows_from_table_names_the_bad_record():
    t = _trace([1], [2])
    t.advantages = [float("nan")]
    with pytest.raises(ValueError, match=r"record 0 \(sample 'e', turn 0\): advantage is nan"):
        rows_from_table(traces_to_table([t]))
    t = _trace([1], [2])
    t.advantages = []
    with pytest.raises(ValueError, match="1 spans but 0 advantages"):
        rows_from_table(traces_to_table([t]))
    with pytest.raises(ValueError, match="lacks TRACE_SCHEMA columns"):
        rows_from_table(traces_to_table([_trace([1], [2])]).drop(["advantages"]))
    with pytest.raises(ValueError, match=r"span \[0, 1\) out of order"):
        Trace("e", 0, "t", "x", "solver", [1, 2], [(0, 1)], [], 0)  # the first token needs a context


def test_deepspeed_config_cpu_buckets_and_precision():
    c = deepspeed_config(LearnerConfig(zero_stage=2, grad_clip=0.5), 2, torch.float32, gpu=False)
    assert c["zero_optimization"]["reduce_bucket_size"] < 5e8 and not c["bf16"]["enabled"]
    assert c["gradient_clipping"] == 0.5 and c["train_batch_size"] == 2
    assert c["zero_optimization"]["stage"] == 2
    g = deepspeed_config(LearnerConfig(zero_stage=3), 1, torch.bfloat16, gpu=True)
    assert g["bf16"]["enabled"] and "stage3_prefetch_bucket_size" in g["zero_optimization"]


def test_lean_learner_rules():
    assert zero_stage("auto", world_size=1, gpu=False) == 0  # nothing to shard on one rank
    assert zero_stage("auto", world_size=2, gpu=False) == 2 and zero_stage(3, world_size=1, gpu=True) == 3
    assert (
        zero_stage(2, world_size=1, gpu=False) == 2
    )  # an explicit stage is kept (the legacy benchmark path)
    assert deepspeed_config(LearnerConfig(), 1, torch.float32, gpu=False)["zero_optimization"]["stage"] == 0
    assert not gradient_checkpointing("auto", 135_000_000) and gradient_checkpointing("auto", 7_000_000_000)
    assert gradient_checkpointing(True, 1) and not gradient_checkpointing(False, 10**10)


def test_cpu_learner_threads():
    from cluster.core.device import cpu_threads

    assert cpu_threads(3, 2) == 3  # configured wins
    cores = len(__import__("os").sched_getaffinity(0))
    assert cpu_threads(0, 1) == cores and cpu_threads(0, cores * 4) == 1  # never 0
    # trainer.overlap: only the CPUs Ray gave the rank
    assert cpu_threads(0, 1, own_cpus=1.0) == 1 and cpu_threads(0, 1, own_cpus=0.5) == 1
    assert cpu_threads(4, 1, own_cpus=1.0) == 4


def test_cpu_engine_threads_follow_the_rule(monkeypatch):
    """A CPU rollout engine's OpenMP threads: the node's cores shared by the run's engines (they
    generate while the learner waits), the worker's own CPUs under overlap, or rollout.num_threads;
    outside Ray an OMP_NUM_THREADS already set is kept."""
    import os

    from actors.rollout_worker import _cpu_process_settings
    from cluster.core.config import load_config

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert _cpu_process_settings(load_config(None)) == cores
    assert os.environ["OMP_NUM_THREADS"] == str(cores)
    two_pools = load_config(None, ["rollout.num_workers=2", "skills.num_eval_workers=2"])
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _cpu_process_settings(two_pools) == max(1, cores // 4)
    monkeypatch.delenv("OMP_NUM_THREADS")
    overlap = load_config(None, ["trainer.overlap=true", "rollout.engine_logprobs=true"])
    assert _cpu_process_settings(overlap) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _cpu_process_settings(load_config(None)) == 1  # the caller's setting, outside Ray
    assert _cpu_process_settings(load_config(None, ["rollout.num_threads=3"])) == 3
    torch.set_num_threads(1)
