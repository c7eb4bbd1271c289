"""Learner plumbing without a model: micro-batch planning, sharding, collation, checkpoint folders."""

import pytest
import torch

from cluster.config import LearnerConfig
from cluster.records import Turn, turns_to_table
from learner.batching import (
    collate,
    collate_units,
    null_micro_batch,
    plan_micro_batches,
    plan_units,
    rows_from_table,
    shard_by_tokens,
)
from learner.checkpoint import finalize_checkpoint, list_checkpoints, resolve_checkpoint, tmp_checkpoint_dir
from learner.model import deepspeed_config


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


def test_shard_by_tokens_whole_sequences_balanced():
    lengths = [100, 90, 10, 10, 60, 50]
    shards = shard_by_tokens(lengths, 2)
    assert sorted(i for s in shards for i in s) == list(range(6))
    loads = [sum(lengths[i] for i in s) for s in shards]
    assert loads == [160, 160]  # longest-first to the least-loaded rank
    assert shard_by_tokens([5], 2) == [[0], []]  # fewer rows than ranks: an empty shard


def _turn(prompt, resp, role="solver", adv=1.0, eid="e"):
    return Turn(eid, 0, "t", "x", role, prompt, resp, [-0.5] * len(resp), 0, advantage=adv)


def test_collate_aligns_targets_with_selected_positions():
    rows = rows_from_table(
        turns_to_table([_turn([1, 2, 3], [4, 5], "extractor", 0.5), _turn([7], [8, 9, 10])])
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
    assert null.role_index.tolist() == [-1] and null.real_tokens == 0


def test_plan_units_groups_identical_prompts_within_the_budget():
    rows = rows_from_table(
        turns_to_table(
            [_turn([1, 2, 3], [4, 5]), _turn([7], [8]), _turn([1, 2, 3], [6]), _turn([1, 2, 3], [9, 9, 9])]
        )
    )
    assert plan_units(rows, share_prompts=True, token_budget=100) == [[0, 2, 3], [1]]
    assert plan_units(rows, share_prompts=True, token_budget=7) == [
        [0, 2],
        [3],
        [1],
    ]  # 3 + 2 + 1 <= 7 < 3 + 2 + 1 + 3
    assert plan_units(rows, share_prompts=False, token_budget=100) == [[0], [1], [2], [3]]


def test_collate_units_one_prompt_many_responses():
    rows = rows_from_table(
        turns_to_table([_turn([1, 2, 3], [4, 5], adv=0.5), _turn([1, 2, 3], [6, 7, 8], adv=-1.0)])
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


def test_shared_prompt_logprobs_equal_separate_rows():
    """The packed forward of the real embedded model gives the logprobs of the separate rows."""
    from transformers import AutoModelForCausalLM

    from cluster.model_store import resolve_model
    from learner.model import TokenLogits

    try:
        lm = AutoModelForCausalLM.from_pretrained(resolve_model("embedded"), dtype=torch.float32)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    net = TokenLogits(lm).eval()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 5000, (30,), generator=g).tolist()
    other = torch.randint(100, 5000, (12,), generator=g).tolist()
    resps = [torch.randint(100, 5000, (n,), generator=g).tolist() for n in (4, 7, 1)]
    rows = rows_from_table(turns_to_table([_turn(prompt, r) for r in resps] + [_turn(other, [5, 6])]))

    def logprobs(mb):
        logits = net(mb.input_ids, mb.attention_mask, mb.select, mb.position_ids)
        return torch.log_softmax(logits, -1).gather(-1, mb.targets[:, None])[:, 0]

    with torch.no_grad():
        separate = torch.cat([logprobs(collate([r], 0)) for r in rows])
        units = [[rows[i] for i in u] for u in plan_units(rows, True, 4096)]
        packed = logprobs(collate_units(units, 0))  # two units of different lengths: padding included
    assert packed.shape == separate.shape
    assert torch.allclose(packed, separate, atol=1e-4), (packed - separate).abs().max()


def test_rows_from_table_names_the_bad_record():
    t = _turn([1], [2])
    t.prompt_ids = []
    with pytest.raises(ValueError, match=r"record 0 \(episode 'e', turn 0\): prompt_ids is empty"):
        rows_from_table(turns_to_table([t]))
    t = _turn([1], [2], adv=float("nan"))
    with pytest.raises(ValueError, match="advantage is nan"):
        rows_from_table(turns_to_table([t]))
    with pytest.raises(ValueError, match="lacks TURN_SCHEMA columns"):
        rows_from_table(turns_to_table([_turn([1], [2])]).drop(["advantage"]))


def test_deepspeed_config_cpu_buckets_and_precision():
    c = deepspeed_config(LearnerConfig(zero_stage=2, grad_clip=0.5), 2, torch.float32, gpu=False)
    assert c["zero_optimization"]["reduce_bucket_size"] < 5e8 and not c["bf16"]["enabled"]
    assert c["gradient_clipping"] == 0.5 and c["train_batch_size"] == 2
    g = deepspeed_config(LearnerConfig(zero_stage=3), 1, torch.bfloat16, gpu=True)
    assert g["bf16"]["enabled"] and "stage3_prefetch_bucket_size" in g["zero_optimization"]


def _fake_ckpt(root, version):
    tmp = tmp_checkpoint_dir(root, version)
    tmp.mkdir(parents=True)
    (tmp / "learner_state.json").write_text(f'{{"version": {version}}}')
    return tmp


def test_checkpoint_publish_keep_last_k_and_resolve(tmp_path):
    for v in (1, 2, 3):
        final = finalize_checkpoint(tmp_path, _fake_ckpt(tmp_path, v), v, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert resolve_checkpoint(tmp_path) == final
    assert resolve_checkpoint(final) == final
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())
    finalize_checkpoint(tmp_path, _fake_ckpt(tmp_path, 3), 3, keep=2)  # re-save same version
    assert len(list_checkpoints(tmp_path)) == 2
    with pytest.raises(FileNotFoundError, match="holds no step-"):
        resolve_checkpoint(tmp_path / "nothing")


def test_cpu_learner_threads():
    from learner.actor import cpu_threads

    assert cpu_threads(3, 2) == 3  # configured wins
    cores = len(__import__("os").sched_getaffinity(0))
    assert cpu_threads(0, 1) == cores and cpu_threads(0, cores * 4) == 1  # never 0
