"""Task files on nodes that do not mount the driver's data folder.

A task's `ref` names a file as the driver sees it (an ALFWorld game file, a Mind2Web
`<file>#<annotation id>`). On a cluster without shared storage a rollout worker on another node
cannot open it, so the driver ships the files its tasks name through the Ray object store once
(`TaskFiles.ship`), and a worker that cannot see a file writes the shipped copy into its node's
cache and plays from there (`LocalTaskFiles`). `env.data_transfer`: "auto" ships when the cluster
has more than one node, "object_store" always, "shared" never (a missing file is then an error that
says so).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cluster.core.records import TaskSpec

log = logging.getLogger(__name__)


def ref_file(ref: str) -> str:
    """The file part of a task ref (`<file>#<id>` for Mind2Web)."""
    return ref.split("#", 1)[0]


@dataclass(frozen=True)
class TaskFiles:
    """The driver's task files in the object store: `refs` is [ObjectRef] of {absolute path: bytes}
    (a list, so Ray passes the reference on instead of resolving it); `digest` names the copy."""

    refs: list
    digest: str
    files: int
    bytes: int

    @classmethod
    def ship(cls, tasks: list[TaskSpec], max_bytes: int) -> TaskFiles:
        import ray

        paths = sorted({str(Path(ref_file(t.ref)).resolve()) for t in tasks if t.ref})
        total = sum(os.path.getsize(p) for p in paths)
        if total > max_bytes:
            raise ValueError(
                f"env.data_transfer: the tasks' {len(paths)} files hold {total} bytes > env.max_shipped_bytes "
                f"({max_bytes}); put env.data_dir on storage every node mounts and set env.data_transfer: shared"
            )
        blob: dict[str, bytes] = {p: Path(p).read_bytes() for p in paths}
        h = hashlib.sha256()
        for p in paths:
            h.update(p.encode() + b"\0" + hashlib.sha256(blob[p]).digest())
        log.info("shipping %d task files (%.1f MiB) through the object store", len(paths), total / 2**20)
        return cls([ray.put(blob)], h.hexdigest()[:16], len(paths), total)


def cluster_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def ship_if_needed(mode: str, tasks: list[TaskSpec], max_bytes: int) -> TaskFiles | None:
    """The driver's side of env.data_transfer."""
    if mode == "object_store" or (mode == "auto" and cluster_nodes() > 1):
        return TaskFiles.ship(tasks, max_bytes)
    return None


class LocalTaskFiles:
    """The worker's side: a task ref this node can open, from the shipped copy where it cannot."""

    def __init__(self, shipped: TaskFiles | None, cache_dir: Path) -> None:
        self.shipped, self.cache_dir = shipped, cache_dir
        self._root: Path | None = None

    def local(self, ref: str) -> str:
        path, _, rest = ref.partition("#")
        if self.shipped is None:
            if path and not os.path.exists(path):
                raise FileNotFoundError(
                    f"task file {path} is not on this node ({_node()}): put env.data_dir on storage every node "
                    "mounts, or set env.data_transfer: auto (ships the files through the object store)"
                )
            return ref
        root = self._materialise()
        copy = root / str(Path(path).resolve()).lstrip("/")
        if not copy.is_file():
            raise FileNotFoundError(f"task file {path} was not among the {self.shipped.files} files shipped")
        return str(copy) + (f"#{rest}" if rest else "")

    def _materialise(self) -> Path:
        """Write the shipped files once per node (atomically, under the copy's digest)."""
        if self._root is not None:
            return self._root
        import ray

        from cluster.core.storage import atomic_write_bytes

        root = self.cache_dir / self.shipped.digest
        done = root / ".complete"
        if not done.exists():
            blob: dict[str, bytes] = ray.get(self.shipped.refs[0])
            for p, data in blob.items():
                rel = Path(p.lstrip("/"))
                if rel.is_absolute() or ".." in rel.parts:
                    raise ValueError(f"shipped task file {p!r}: not a plain absolute path")
                atomic_write_bytes(root / rel, data)
            atomic_write_bytes(done, f"{len(blob)}\n".encode())
            log.info("%d shipped task files written under %s", len(blob), root)
        self._root = root
        return root


class LocalTaskEnv:
    """A TextEnv whose tasks' files are opened where this node has them (LocalTaskFiles)."""

    def __init__(self, env: Any, files: LocalTaskFiles) -> None:
        self.env, self.files = env, files

    def reset(self, task: TaskSpec):
        return self.env.reset(replace(task, ref=self.files.local(task.ref)) if task.ref else task)

    def __getattr__(self, name: str) -> Any:  # step, close, max_steps, ...: the wrapped env's
        return getattr(self.env, name)


def _node() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:
        return os.uname().nodename
