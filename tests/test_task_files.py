"""Task files shipped through the object store to nodes that do not mount the driver's data folder
(cluster/core/task_files.py). Ray's put/get are replaced by FakeObjectStore: the driver's folder is
deleted after shipping, as if the worker ran on another node."""

from __future__ import annotations

import shutil

import pytest

from cluster.core.records import TaskSpec
from cluster.core.task_files import LocalTaskEnv, LocalTaskFiles, TaskFiles, ship_if_needed


class FakeObjectStore:
    """FakeObjectStore: ray.put/ray.get over a dict; counts gets."""

    def __init__(self) -> None:
        self.objects: dict[int, object] = {}
        self.gets = 0

    def put(self, value):
        self.objects[len(self.objects)] = value
        return len(self.objects) - 1

    def get(self, ref, timeout=None):
        self.gets += 1
        return self.objects[ref]


@pytest.fixture
def store(monkeypatch):
    import ray

    fake = FakeObjectStore()
    monkeypatch.setattr(ray, "put", fake.put)
    monkeypatch.setattr(ray, "get", fake.get)
    return fake


def make_tasks(root):
    (root / "a").mkdir(parents=True)
    (root / "a" / "game.tw-pddl").write_text('{"pddl": "a"}')
    (root / "b.json").write_text('[{"annotation_id": "x"}]')
    return [TaskSpec("a", "alfworld", "t", "text a", str(root / "a" / "game.tw-pddl")),
            TaskSpec("b", "mind2web", "t", "text b", f"{root / 'b.json'}#x"),
            TaskSpec("b2", "mind2web", "t", "text b2", f"{root / 'b.json'}#y")]  # fmt: skip


def test_shipped_files_are_played_where_the_driver_folder_is_missing(store, tmp_path):
    tasks = make_tasks(tmp_path / "driver")
    shipped = TaskFiles.ship(tasks, max_bytes=10_000)
    assert shipped.files == 2 and shipped.bytes > 0
    shutil.rmtree(tmp_path / "driver")  # another node: the driver's folder is not there
    files = LocalTaskFiles(shipped, tmp_path / "cache")
    game = files.local(tasks[0].ref)
    assert game.startswith(str(tmp_path / "cache")) and open(game).read() == '{"pddl": "a"}'
    page, _, aid = files.local(tasks[2].ref).partition("#")
    assert aid == "y" and open(page).read() == '[{"annotation_id": "x"}]'  # the annotation id is kept
    # written once per node: a second worker there reuses the copy without fetching it again
    again = LocalTaskFiles(shipped, tmp_path / "cache")
    assert again.local(tasks[0].ref) == game and store.gets == 1
    with pytest.raises(FileNotFoundError, match="not among the 2 files shipped"):
        files.local(str(tmp_path / "driver" / "other.json"))


def test_same_files_same_digest_and_size_limit(store, tmp_path):
    tasks = make_tasks(tmp_path / "d")
    before = TaskFiles.ship(tasks, 10_000).digest
    assert TaskFiles.ship(list(reversed(tasks)), 10_000).digest == before
    (tmp_path / "d" / "b.json").write_text("changed")  # new content: a new copy on the nodes
    assert TaskFiles.ship(tasks, 10_000).digest != before
    with pytest.raises(ValueError, match="env.max_shipped_bytes"):
        TaskFiles.ship(tasks, max_bytes=5)


def test_shared_mode_names_the_setting_and_single_node_ships_nothing(store, tmp_path, monkeypatch):
    import cluster.core.task_files as tf

    files = LocalTaskFiles(None, tmp_path / "cache")
    ref = str(tmp_path / "missing.tw-pddl")
    with pytest.raises(FileNotFoundError, match="env.data_transfer: auto"):
        files.local(ref)
    tasks = make_tasks(tmp_path / "d")
    assert files.local(tasks[1].ref) == tasks[1].ref  # visible here: used in place
    monkeypatch.setattr(tf, "cluster_nodes", lambda: 1)
    assert ship_if_needed("auto", tasks, 10_000) is None and ship_if_needed("shared", tasks, 10_000) is None
    assert ship_if_needed("object_store", tasks, 10_000).files == 2
    monkeypatch.setattr(tf, "cluster_nodes", lambda: 3)
    assert ship_if_needed("auto", tasks, 10_000).files == 2


def test_env_wrapper_rewrites_only_the_ref(store, tmp_path):
    class RecordingEnv:
        """RecordingEnv: keeps the task it was reset with."""

        max_steps = 7

        def reset(self, task):
            self.task = task
            return "obs"

    tasks = make_tasks(tmp_path / "d")
    shipped = TaskFiles.ship(tasks, 10_000)
    shutil.rmtree(tmp_path / "d")
    env = LocalTaskEnv(RecordingEnv(), LocalTaskFiles(shipped, tmp_path / "cache"))
    assert env.reset(tasks[0]) == "obs" and env.max_steps == 7
    assert env.env.task.task_id == "a" and env.env.task.ref.startswith(str(tmp_path / "cache"))


def test_folder_pack_unpack_and_rank_files(store, tmp_path, monkeypatch):
    import cluster.core.folder_transfer as ft

    monkeypatch.setattr(ft, "CHUNK", 4)  # several chunks per file
    src = tmp_path / "src"
    (src / "deepspeed" / "state").mkdir(parents=True)
    for name in ("zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt",
                 "mp_rank_00_model_states.pt"):  # fmt: skip
        (src / "deepspeed" / "state" / name).write_bytes(name.encode() * 3)
    (src / "deepspeed" / "latest").write_text("state")
    (src / "learner_state.json").write_text('{"steps": 3}')
    (src / "model.safetensors").write_bytes(b"weights" * 10)
    every = ft.files_under(src)
    packed = ft.pack(src)
    assert len(packed["model.safetensors"]) == 18  # 70 bytes in 4-byte chunks
    assert ft.unpack(packed, tmp_path / "dst") == sum((src / f).stat().st_size for f in every)
    assert ft.files_under(tmp_path / "dst") == every
    assert all((tmp_path / "dst" / f).read_bytes() == (src / f).read_bytes() for f in every)
    mine = ft.rank_files(every, 1, ("learner_state.json",))
    assert (
        "deepspeed/state/zero_pp_rank_1_mp_rank_00_optim_states.pt" in mine and "learner_state.json" in mine
    )
    assert not any("rank_0_" in f for f in mine) and "model.safetensors" not in mine
    assert "deepspeed/latest" in mine and "deepspeed/state/mp_rank_00_model_states.pt" in mine
    with pytest.raises(ValueError, match="not a path inside"):
        ft.unpack({"../x": []}, tmp_path / "dst")
