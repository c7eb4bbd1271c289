"""RolloutPool._dispatch's and _each's retry rules with Ray's wait/get replaced by a scripted FakeRay (no cluster):
an OutOfMemoryError from Ray's memory monitor is a dead worker (replaced, chunk redone), the restart
budget bounds it, and any other error is a RolloutError naming actor, stage and item."""

from __future__ import annotations

import pytest
from ray.exceptions import OutOfMemoryError

from actors.pool import RolloutError, RolloutPool
from cluster.core.config import load_config


class FakeRay:
    """Every submitted ref is ready at once; `get` raises the next scripted error, else returns the result."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref, timeout=None):
        if self.errors:
            raise self.errors.pop(0)
        return list(ref)


def fake_pool(max_restarts: int) -> RolloutPool:
    pool = object.__new__(RolloutPool)  # no actors: _replace is recorded instead of killing one
    pool.cfg = load_config(None, [f"rollout.max_restarts={max_restarts}"])
    pool.prefix, pool.num_workers, pool.workers, pool.restarts = "rollout", 1, ["w0"], 0
    pool.replaced = []
    pool._replace = lambda i, why: pool.replaced.append((i, why))
    return pool


def run(pool: RolloutPool, errors: list[Exception], monkeypatch) -> list:
    import ray

    fake = FakeRay(errors)
    monkeypatch.setattr(ray, "wait", fake.wait)
    monkeypatch.setattr(ray, "get", fake.get)
    submit = lambda worker, sl: tuple(f"item{k}" for k in range(sl.start, sl.stop))  # noqa: E731
    return pool._dispatch(3, 2, submit, "play", lambda k: f"task {k}")


def test_oom_kill_is_a_dead_worker_and_the_chunk_is_redone(monkeypatch):
    pool = fake_pool(max_restarts=2)
    out = run(pool, [OutOfMemoryError("node memory above threshold")], monkeypatch)
    assert out == ["item0", "item1", "item2"]
    assert pool.replaced == [(0, "play: died: OutOfMemoryError")]


def test_restart_budget_bounds_repeated_oom(monkeypatch):
    pool = fake_pool(max_restarts=1)
    with pytest.raises(
        RolloutError,
        match=r"rollout-0: play failed on task task 0: died: OutOfMemoryError; restart budget spent",
    ):
        run(pool, [OutOfMemoryError("a"), OutOfMemoryError("b")], monkeypatch)
    assert len(pool.replaced) == 1


def test_other_errors_are_named_not_retried(monkeypatch):
    pool = fake_pool(max_restarts=3)
    with pytest.raises(RolloutError, match=r"rollout-0: play failed on task task 0: ValueError\('bad env'\)"):
        run(pool, [ValueError("bad env")], monkeypatch)
    assert pool.replaced == []


def test_each_replaces_until_the_budget_then_names_the_stage(monkeypatch):
    """Broadcast-style calls: a worker OOM-killed twice in a row (its replacement too) still gets the
    weights while the budget lasts; past it, the error names actor, stage and the budget."""
    import ray

    pool = fake_pool(max_restarts=2)
    fake = FakeRay([OutOfMemoryError("a"), OutOfMemoryError("b")])
    monkeypatch.setattr(ray, "get", fake.get)
    assert pool._each(lambda w: ("v3",), "update_weights") == [["v3"]]
    assert [why for _, why in pool.replaced] == ["update_weights: died: OutOfMemoryError"] * 2
    pool = fake_pool(max_restarts=1)
    fake = FakeRay([OutOfMemoryError("a"), OutOfMemoryError("b")])
    monkeypatch.setattr(ray, "get", fake.get)
    with pytest.raises(
        RolloutError, match=r"rollout-0: update_weights failed on task -: .*restart budget spent"
    ):
        pool._each(lambda w: ("v3",), "update_weights")
