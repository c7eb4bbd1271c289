"""`make cluster-smoke`: the README's cluster launch, end to end, on this one machine.

A Ray cluster of three raylets on this machine (each with its own --temp-dir and ports; the dashboard
and job API on 127.0.0.1; token authentication on with a token generated for the smoke): a head with 0 CPUs, a "rollout" node
({rollout: 1}) and a "learner" node ({learner: 1}). The quickstart is submitted for one iteration
with `ray job submit` exactly as README "On a GPU cluster" shows it (cluster/runtime_env.yaml, the
venv's interpreter as the entrypoint, --submission-id, --no-wait, trainer.resume=auto), with this
checkout standing in for /opt/evorl and a temporary folder for the shared storage /mnt/evorl. Checked:

  - the job API refuses a call without the token (HTTP 401) or with a wrong one, and answers with it;
  - the job succeeds; its actors ran where the resources say (Ray state API: rollout-0 on the
    rollout node, learner-0 on the learner node);
  - the checkpoint is complete (verify_manifest on checkpoints/iter-00001) and the skill library opens;
  - a second submission (trainer.iterations=2, same run folder) continues from iteration 1.

The raylets are ended by the PIDs of their `ray start --block` processes (never `ray stop`, which
would end every Ray session on the machine). Prints one closing line. `--quick` runs only the launch
mechanics (cluster, token, a tiny job placing two actors by custom resource), for tests/test_cluster_smoke.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.prefix) / "bin"  # the venv running this script (never resolved: it would leave the venv)
RAY = str(BIN / "ray")

# The smoke's sizes: one short iteration of every stage on 2 loaded cores.
SMALL = [
    "env.max_steps=3",
    "env.generate_per_type=1",
    "env.eval_splits=[]",
    "skills.n_candidates=2",
    "skills.k_neighbours=1",
    "skills.extractor_max_tokens=96",
    "trainer.batch_size=1",
    "rollout.max_new_tokens=16",
    "rollout.resources={rollout: 1}",
    "learner.resources={learner: 1}",
    "cluster.address=auto",
]


def log(msg: str) -> None:
    print(f"[cluster-smoke {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def wait_for_memory(need_gib: float, wait_s: float) -> None:
    """The training job needs up to 10 GiB (vLLM worker, DeepSpeed learner with its reference model,
    driver); Ray's memory monitor kills actors above 95% of the machine's memory, so a smoke started
    next to other jobs fails by chance. Wait for the memory, or stop with the reason."""
    deadline = time.monotonic() + wait_s
    told = False
    while (have := mem_available_gib()) < need_gib:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {have:.1f} GiB of memory available, the smoke needs {need_gib:.0f}")
        if not told:
            log(
                f"{have:.1f} GiB of memory available, waiting for {need_gib:.0f} (other jobs on this machine)"
            )
            told = True
        time.sleep(15)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Three raylets on this machine with token authentication; `close()` ends them by PID."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.token_file = self._make_token()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
        # HF_HUB_OFFLINE is left to cluster/placement.py actor_env (offline for a local model).
        for k in ("RAY_API_SERVER_ADDRESS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            self.env.pop(k, None)
        self.env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)}
        self.gcs_port, self.dash_port = free_port(), free_port()
        self.dashboard = f"http://127.0.0.1:{self.dash_port}"
        self.nodes: dict[str, str] = {}  # role -> node id

    def _make_token(self) -> Path:
        """`ray get-auth-token --generate` as the docs say, into the smoke's own HOME: the machine's
        ~/.ray/auth_token (other Ray sessions) is left alone."""
        home = self.base / "home"
        home.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(home)}
        subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
        token = home / ".ray" / "auth_token"
        token.chmod(0o600)
        return token

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def _start(self, role: str, args: list[str]) -> None:
        temp = self.base / role[0]  # short: Ray's socket paths must stay under 108 characters
        ports = ["--metrics-export-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port"]  # fmt: skip
        cmd = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats",
               "--object-store-memory=300000000", *(f"{p}={free_port()}" for p in ports), *args]  # fmt: skip
        out = open(self.base / f"raylet-{role}.log", "w")  # noqa: SIM115 (lives as long as the process)
        self.procs.append((role, subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)))

    def start(self) -> None:
        self._start("head", ["--head", f"--port={self.gcs_port}", "--num-cpus=0", "--num-gpus=0",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dash_port}",
                             f"--ray-client-server-port={free_port()}"])  # fmt: skip
        self.wait_http("/api/version", 120)
        address = f"--address=127.0.0.1:{self.gcs_port}"
        self._start("rollout", [address, "--num-cpus=1", "--num-gpus=0", '--resources={"rollout": 1}'])
        self._start("learner", [address, "--num-cpus=1", "--num-gpus=0", '--resources={"learner": 1}'])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            alive = [n for n in self.state("nodes") if n.get("state") == "ALIVE"]
            for n in alive:
                res = n.get("resources_total") or {}
                role = "rollout" if "rollout" in res else "learner" if "learner" in res else "head"
                self.nodes[role] = n["node_id"]
            if len(alive) == 3 and len(self.nodes) == 3:
                log(f"cluster up: 3 raylets, dashboard {self.dashboard} (token auth on)")
                return
            self.check_alive()
            time.sleep(2)
        raise RuntimeError(f"cluster did not reach 3 live nodes: {self.nodes}")

    def check_alive(self) -> None:
        for role, p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(
                    f"{role} raylet exited ({p.returncode}): see {self.base}/raylet-{role}.log"
                )

    def http(self, path: str, token: bool = True) -> tuple[int, dict]:
        req = urllib.request.Request(self.dashboard + path)
        if token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, json.loads(body) if body.strip().startswith((b"{", b"[")) else {}
        except urllib.error.HTTPError as e:
            return e.code, {}

    def wait_http(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if self.http(path)[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        raise RuntimeError(f"dashboard {self.dashboard}{path} not answering after {timeout:.0f} s")

    def state(self, kind: str, **filters: str) -> list[dict]:
        """Ray state API (list_nodes / list_actors) over HTTP with the token."""
        q = "&".join(f"filter_keys={k}&filter_predicates=%3D&filter_values={v}" for k, v in filters.items())
        code, body = self.http(f"/api/v0/{kind}?limit=10000&detail=1&{q}")
        if code != 200:
            raise RuntimeError(f"state API {kind}: HTTP {code}")
        return body["data"]["result"]["result"]

    def auth_refused(self) -> int:
        """HTTP status of the job API without the token (401 expected) after checking it answers with
        it and refuses a wrong one."""
        ok, _ = self.http("/api/jobs/")
        if ok != 200:
            raise RuntimeError(f"job API with the token: HTTP {ok}")
        req = urllib.request.Request(
            self.dashboard + "/api/jobs/", headers={"Authorization": "Bearer " + "0" * 64}
        )
        try:
            urllib.request.urlopen(req, timeout=30).close()
            raise RuntimeError("job API accepted a wrong token")
        except urllib.error.HTTPError as e:
            if e.code not in (401, 403):  # Ray answers 403 to a wrong token, 401 to none
                raise RuntimeError(f"job API with a wrong token: HTTP {e.code}") from None
        return self.http("/api/jobs/", token=False)[0]

    def submit(self, sub_id: str, entrypoint: list[str], runtime_env: Path, timeout: float) -> dict:
        """`ray job submit --no-wait` (from the repository root: working_dir "."), follow its logs,
        return the job's final record."""
        cmd = [RAY, "job", "submit", "--address", self.dashboard, "--runtime-env", str(runtime_env),
               "--submission-id", sub_id, "--no-wait", "--", *entrypoint]  # fmt: skip
        shown = [a if len(a) < 80 else a[:40] + "..." for a in entrypoint]
        log(f"ray job submit --runtime-env ... --submission-id {sub_id} --no-wait -- " + " ".join(shown))
        with open(self.base / f"submit-{sub_id}.log", "w") as out:
            subprocess.run(
                cmd, env=self.env, cwd=ROOT, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=300
            )
        logf = self.base / f"job-{sub_id}.log"
        with open(logf, "w") as out:
            follow = subprocess.Popen([RAY, "job", "logs", "--address", self.dashboard, "--follow", sub_id],
                                      env=self.env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
            deadline = time.monotonic() + timeout
            try:
                while True:
                    code, job = self.http(f"/api/jobs/{sub_id}")
                    if code == 200 and job.get("status") in ("SUCCEEDED", "FAILED", "STOPPED"):
                        break
                    if time.monotonic() > deadline:
                        subprocess.run(
                            [RAY, "job", "stop", "--address", self.dashboard, sub_id], env=self.env
                        )
                        raise RuntimeError(
                            f"job {sub_id} still {job.get('status')} after {timeout:.0f} s: {logf}"
                        )
                    self.check_alive()
                    time.sleep(5)
            finally:
                try:
                    follow.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    follow.terminate()
        if job["status"] != "SUCCEEDED":
            tail = "".join(logf.read_text(errors="replace").splitlines(True)[-40:])
            raise RuntimeError(f"job {sub_id}: {job['status']} ({job.get('message')})\n{tail}")
        log(f"job {sub_id}: SUCCEEDED (log {logf})")
        return job | {"log": logf}

    def placement(self, job_id: str, names: tuple[str, ...]) -> dict[str, str]:
        """Role of the node each named actor of the job ran on."""
        where = {}
        by_node = {v: k for k, v in self.nodes.items()}
        for a in self.state("actors", job_id=job_id):
            if a.get("name") in names:
                where[a["name"]] = by_node.get(
                    a.get("node_id") or (a.get("address") or {}).get("node_id"), "?"
                )
        return where

    def close(self) -> None:
        """End the raylets by the PIDs of their --block processes (workers first, the head last)."""
        for _role, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []


def runtime_env_for(base: Path, shared: Path) -> Path:
    """cluster/runtime_env.yaml with this checkout for /opt/evorl and `shared` for /mnt/evorl."""
    text = (ROOT / "cluster" / "runtime_env.yaml").read_text()
    text = text.replace("/opt/evorl", str(ROOT)).replace("/mnt/evorl", str(shared))
    path = base / "runtime_env.yaml"
    path.write_text(text)
    return path


QUICK_JOB = """
import ray, socket
ray.init(address="auto")
@ray.remote(num_cpus=0)
class Probe:
    def node(self):
        import cluster  # the uploaded working_dir is importable on every node
        return ray.get_runtime_context().get_node_id(), cluster.__file__
a = Probe.options(name="rollout-0", resources={"rollout": 1}).remote()
b = Probe.options(name="learner-0", resources={"learner": 1}).remote()
print("PROBE", ray.get([a.node.remote(), b.node.remote()]))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="launch mechanics only (no training job)")
    ap.add_argument("--job-timeout", type=float, default=3600.0, help="seconds per training job")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--min-free-gib", type=float, default=10.0, help="memory to wait for before starting")
    ap.add_argument("--wait-memory", type=float, default=1800.0, help="seconds to wait for that memory")
    args = ap.parse_args()
    wait_for_memory(2.0 if args.quick else args.min_free_gib, args.wait_memory)
    base = Path(tempfile.mkdtemp(prefix="evs-", dir="/tmp"))
    shared = base / "mnt"  # stands in for /mnt/evorl
    shared.mkdir()
    cluster = Cluster(base)
    ok = False
    t0 = time.monotonic()
    try:
        cluster.start()
        refused = cluster.auth_refused()
        if refused != 401:
            raise RuntimeError(f"job API without the token: HTTP {refused}, expected 401")
        log("job API: 200 with the token, 403 with a wrong one, 401 without")
        renv = runtime_env_for(base, shared)
        if args.quick:
            job = cluster.submit("evorl-smoke-quick", [str(BIN / "python"), "-c", QUICK_JOB], renv, 600)
            where = cluster.placement(job["job_id"], ("rollout-0", "learner-0"))
            if where != {"rollout-0": "rollout", "learner-0": "learner"}:
                raise RuntimeError(f"actors on the wrong nodes: {where}")
            probe = [ln for ln in job["log"].read_text().splitlines() if ln.startswith("PROBE")]
            if not probe or str(ROOT / "cluster") in probe[0] or "working_dir_files" not in probe[0]:
                raise RuntimeError(f"actors did not import the uploaded working_dir: {probe}")
            print(f"cluster-smoke --quick: OK: 3 raylets with token auth (401 without the token, wrong one refused); a job "
                  f"submitted with cluster/runtime_env.yaml placed rollout-0/learner-0 on the rollout/learner "
                  f"nodes; raylets ended by PID ({time.monotonic() - t0:.0f} s)")  # fmt: skip
            ok = True
            return 0
        run_dir = shared / "runs" / "quickstart"
        bucket = base / "bucket" / "quickstart"  # trainer.storage_uri: the run's mirror (not under mnt/)
        train = [str(BIN / "evorl"), "train", "--config", "configs/quickstart.yaml", "trainer.resume=auto",
                 f"trainer.run_dir={run_dir}", f"env.data_dir={shared / 'data' / 'alfworld-easy'}",
                 f"trainer.storage_uri=file://{bucket}"]  # fmt: skip
        job1 = cluster.submit(
            "evorl-smoke-1", [*train, *SMALL, "trainer.iterations=1"], renv, args.job_timeout
        )
        where = cluster.placement(job1["job_id"], ("rollout-0", "learner-0"))
        if where != {"rollout-0": "rollout", "learner-0": "learner"}:
            raise RuntimeError(f"actors on the wrong nodes: {where}")
        log(f"actors: {where}")
        sys.path.insert(0, str(ROOT))
        from cluster.core.storage import verify_manifest
        from skills.library import SkillLibrary

        n_files = verify_manifest(run_dir / "checkpoints" / "iter-00001")
        lib = SkillLibrary.open(run_dir / "skills")
        if lib.load_report.version < 1 or lib.load_report.skipped:
            raise RuntimeError(f"skill library: {lib.load_report}")
        log(
            f"checkpoint iter-00001: {n_files} files verified; skill library v{lib.load_report.version}, {len(lib)} skills"
        )
        moved = json.loads((run_dir / "summary.json").read_text())["transfers"]
        if moved["task_files_shipped"] < 1 or moved["checkpoint_ranks_via_object_store"] != 1:
            raise RuntimeError(
                f"the learner and rollout nodes did not get their files through the object store: {moved}"
            )
        if not (bucket / "checkpoints" / "iter-00001" / "MANIFEST.json").is_file():
            raise RuntimeError(f"trainer.storage_uri: no mirrored iter-00001 under {bucket}")
        log(f"transfers: {moved['task_files_shipped']} task files shipped, the learner's checkpoint through the "
            f"object store, the run mirrored at file://{bucket}")  # fmt: skip
        shutil.rmtree(run_dir)  # the head's disk is lost: the next job has only the mirror
        cluster.submit("evorl-smoke-2", [*train, *SMALL, "trainer.iterations=2"], renv, args.job_timeout)
        summary = json.loads((run_dir / "summary.json").read_text())
        if summary.get("resumed_from_iteration") != 1 or summary.get("iteration") != 2:
            raise RuntimeError(f"second job did not continue from iteration 1: {summary}")
        n2 = verify_manifest(run_dir / "checkpoints" / "iter-00002")
        print(f"cluster-smoke: OK: 3 raylets with token auth (job API 401 without the token, refuses a wrong one); "
              f"README submission (runtime_env.yaml, venv entrypoint) succeeded with rollout-0 on the rollout "
              f"node and learner-0 on the learner node; checkpoint iter-00001 complete ({n_files} files), "
              f"skill library v{lib.load_report.version} ({len(lib)} skills); task files and the learner's "
              f"checkpoint through the object store; with the run folder deleted, a resubmission with "
              f"trainer.resume=auto restored iteration 1 from trainer.storage_uri and continued to 2 "
              f"(iter-00002, {n2} files); raylets ended "
              f"by PID ({time.monotonic() - t0:.0f} s)")  # fmt: skip
        ok = True
        return 0
    finally:
        cluster.close()
        if ok and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"[cluster-smoke] logs kept in {base}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
