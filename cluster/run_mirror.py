"""The run folder mirrored at a URI (`trainer.storage_uri`: s3://, gs://, hdfs://, file://), through
pyarrow.fs, so a run survives the loss of the node its driver ran on (a KubeRay head pod replaced, a
spot head) without a shared filesystem.

The driver writes the run folder locally as always (atomic files, checksummed checkpoints); after
each checkpoint `push` uploads what is new: the checkpoint's files with its MANIFEST.json last (so a
remote checkpoint with a manifest is complete), skill library versions and trajectories (immutable:
uploaded once), metrics.jsonl, config.yaml and summary.json (rewritten), and removes remote
checkpoints that keep-last pruned locally. `pull` restores the newest remote checkpoint that
verifies after download into an empty local run folder, with the library, metrics and trajectories;
`evorl train --resume` / `trainer.resume=auto` then continue from it. An upload that fails is logged
and counted; the local copy stays, and the next push sends what is still missing.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from cluster.core.storage import MANIFEST, CorruptFileError, atomic_write, verify_manifest

log = logging.getLogger("evorl.mirror")
REWRITTEN = ("metrics.jsonl", "config.yaml", "summary.json")
IMMUTABLE_DIRS = ("skills", "trajectories")
_CKPT = re.compile(r"^iter-(\d{5,})$")
CHUNK = 8 * 2**20


class RunMirror:
    def __init__(self, uri: str) -> None:
        from pyarrow import fs

        try:
            self.fs, self.base = fs.FileSystem.from_uri(uri)
        except Exception as e:  # pyarrow: ArrowInvalid / ArrowNotImplementedError for a bad scheme
            raise ValueError(f"trainer.storage_uri {uri!r}: {e}") from None
        self.uri = uri
        self.base = self.base.rstrip("/")
        self.failures = 0

    # ---- remote listing ------------------------------------------------------------------------
    def _remote(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def _sizes(self, rel: str) -> dict[str, int]:
        """{path relative to the run: bytes} of every remote file under `rel`."""
        from pyarrow import fs

        sel = fs.FileSelector(self._remote(rel), allow_not_found=True, recursive=True)
        prefix = self.base + "/"
        return {
            i.path[len(prefix) :]: i.size for i in self.fs.get_file_info(sel) if i.type == fs.FileType.File
        }

    def checkpoints(self) -> list[str]:
        """Remote checkpoint names with a manifest, oldest first."""
        names = {p.split("/")[1] for p in self._sizes("checkpoints") if p.endswith("/" + MANIFEST)}
        return sorted((n for n in names if _CKPT.match(n)), key=lambda n: int(_CKPT.match(n).group(1)))

    # ---- upload --------------------------------------------------------------------------------
    def _upload(self, local: Path, rel: str) -> None:
        self.fs.create_dir(self._remote(rel).rsplit("/", 1)[0], recursive=True)
        with open(local, "rb") as src, self.fs.open_output_stream(self._remote(rel)) as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)

    def push(self, run_dir: Path) -> dict[str, float]:
        """Upload what is new since the last push; never raises for a failed upload (see module doc)."""
        try:
            sent = self._push(Path(run_dir))
            return {"storage/uploaded_files": float(sent), "storage/upload_failures": float(self.failures)}
        except Exception as e:  # network, credentials, quota: the run goes on, the local copy stays
            self.failures += 1
            log.error("trainer.storage_uri %s: upload failed (%s: %s); retried at the next checkpoint",
                      self.uri, type(e).__name__, e)  # fmt: skip
            return {"storage/uploaded_files": 0.0, "storage/upload_failures": float(self.failures)}

    def _push(self, run: Path) -> int:
        have = self._sizes("")
        sent = 0
        ckpts = run / "checkpoints"
        local_ckpts = sorted(p.name for p in ckpts.iterdir() if _CKPT.match(p.name)) if ckpts.is_dir() else []
        for name in local_ckpts:  # the new one, and any an earlier failed push left incomplete
            if f"checkpoints/{name}/{MANIFEST}" in have:
                continue
            folder = ckpts / name
            files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
            for p in [*files, folder / MANIFEST]:  # the manifest last: a remote manifest = complete
                rel = f"checkpoints/{name}/{p.relative_to(folder)}"
                if have.get(rel) != p.stat().st_size or p.name == MANIFEST:
                    self._upload(p, rel)
                    sent += 1
        for name in {p.split("/")[1] for p in have if p.startswith("checkpoints/")} - set(local_ckpts):
            if _CKPT.match(name):  # pruned locally by keep-last
                self.fs.delete_dir(self._remote(f"checkpoints/{name}"))
        for d in IMMUTABLE_DIRS:
            for p in sorted((run / d).rglob("*")) if (run / d).is_dir() else []:
                rel = str(p.relative_to(run))
                if p.is_file() and have.get(rel) != p.stat().st_size:
                    self._upload(p, rel)
                    sent += 1
        for name in REWRITTEN:
            if (run / name).is_file():
                self._upload(run / name, name)
                sent += 1
        return sent

    def clear(self) -> None:
        """Remove the mirrored run (`evorl train --overwrite`)."""
        from pyarrow import fs

        if self.fs.get_file_info(self.base).type != fs.FileType.NotFound:
            self.fs.delete_dir_contents(self.base)
            log.warning("trainer.storage_uri %s: the mirrored run was removed (--overwrite)", self.uri)

    # ---- download ------------------------------------------------------------------------------
    def _download(self, rel: str, local: Path) -> None:
        def write(f) -> None:
            with self.fs.open_input_stream(self._remote(rel)) as src:
                while chunk := src.read(CHUNK):
                    f.write(chunk)

        atomic_write(local, write)

    def pull(self, run_dir: Path) -> str | None:
        """Restore the newest remote checkpoint that verifies (and the library, metrics, trajectories)
        into `run_dir`; its name, or None when the URI holds none."""
        run = Path(run_dir)
        have = self._sizes("")
        for name in reversed(self.checkpoints()):
            folder = run / "checkpoints" / name
            for rel in sorted(p for p in have if p.startswith(f"checkpoints/{name}/")):
                self._download(rel, run / rel)
            try:
                verify_manifest(folder)
            except CorruptFileError as e:
                log.error(
                    "trainer.storage_uri: remote checkpoint %s does not verify (%s); trying an older one",
                    name,
                    e,
                )
                continue
            for rel in have:
                if rel.split("/")[0] in IMMUTABLE_DIRS or rel in REWRITTEN:
                    self._download(rel, run / rel)
            log.info("restored %s and the run's records from %s", name, self.uri)
            return name
        return None
