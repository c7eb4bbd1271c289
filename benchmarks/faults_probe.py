"""Probe every reliability scenario of issue #21 against the real stack on loopback; PASS or FAIL each.

    .venv/bin/python benchmarks/faults_probe.py [--deadline-s 1800]

Real Ray (local, loopback), real rollout workers with the vLLM engine, a real DeepSpeed learner group,
real checkpoints, a real Ray Serve app queried over HTTP and with the official `openai` client. Envs
are scripted (a slow env, a hanging env) where the scenario is about the worker, not about ALFWorld.
Each scenario records what it saw; the whole probe stops by itself at `--deadline-s`.
Writes benchmarks/results/faults.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

from common import machine, write

RESULTS: list[dict] = []


def scenario(name: str):
    def wrap(fn):
        def run(*a, **k):
            t0 = time.time()
            try:
                seen = fn(*a, **k)
                RESULTS.append(
                    {"scenario": name, "result": "PASS", "seen": seen, "s": round(time.time() - t0, 1)}
                )
            except Exception as e:  # a probe reports, it does not stop
                RESULTS.append({"scenario": name, "result": "FAIL", "seen": f"{type(e).__name__}: {e}"[:600],
                                "trace": traceback.format_exc()[-1500:], "s": round(time.time() - t0, 1)})  # fmt: skip
            print(f"[faults] {RESULTS[-1]['result']} {name}: {RESULTS[-1]['seen']}", flush=True)

        return run

    return wrap


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


# ---- scripted envs (the workers import this module by value) -----------------------------------
class SlowEnv:
    """Never won; each step takes 0.2 s, so a kill lands mid-batch. Task text "hang": its first step
    does not return for 10 minutes (the worker is killed first, at the pool's shutdown)."""

    def __init__(self, max_steps: int = 3) -> None:
        self.max_steps, self.n, self.task = max_steps, 0, None

    def _obs(self, text: str):
        from envs.base import Observation

        return Observation(text, ["look", "wait"], "leave the room", "fake")

    def reset(self, task):
        self.n, self.task = 0, task
        return self._obs("A closed room.")

    def step(self, action):
        from envs.base import StepResult

        if self.task.text == "hang":
            time.sleep(600)
        self.n += 1
        time.sleep(0.2)
        return StepResult(self._obs("Nothing."), 0.0, self.n >= self.max_steps, False)

    def close(self) -> None:
        pass


def slow_env_factory(env_cfg):
    return SlowEnv(env_cfg.max_steps)


def tasks(n: int, text: str = "leave the room"):
    from cluster.core.records import EpisodeJob, TaskSpec

    return [EpisodeJob(TaskSpec(f"t{i}", "fake", "fake", text, f"ref{i}")) for i in range(n)]


def kill_after(ray, name: str, delay_s: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ray.kill(ray.get_actor(name), no_restart=True)
                return
            except ValueError:
                time.sleep(0.2)

    t = threading.Thread(target=run)
    t.start()
    return t


# ---- scenarios -----------------------------------------------------------------------------------
@scenario(
    "stale policies: a worker killed after a push is replaced on the pushed weights; other versions dropped"
)
def policy_versions(ray, cfg, learners):
    from actors.pool import RolloutPool
    from cluster.core.generation import GenParams
    from cluster.trainer import Trainer

    pool = RolloutPool(cfg, "probe-rollout", 1, env_factory=slow_env_factory)
    try:
        ref = learners.weights_ref()
        pool.load_weights(ref, 3)
        killer = kill_after(ray, "probe-rollout-0", 1.5)
        eps = pool.play(tasks(6), GenParams(max_tokens=8))
        killer.join()
        versions = sorted({e.policy_version for e in eps} | {t.policy_version for e in eps for t in e.traces})
        check(
            pool.restarts == 1 and versions == [3] and pool.versions() == [3],
            f"restarts {pool.restarts}, versions {versions}",
        )
        t = Trainer.__new__(Trainer)
        t.cfg, t.policy_version, t.iteration = cfg, 3, 0
        stale = [*eps[0].traces, *eps[1].traces]
        stale[0].policy_version = 2
        stats: dict = {}
        kept = t.current(stale, stats)
        check(stats["learner/stale_traces_dropped"] == 1 and len(kept) == len(stale) - 1, str(stats))
        return f"1 kill mid-play: replacement loaded version 3 before work; episodes {versions}; a version-2 trace dropped and counted"
    finally:
        pool.shutdown()


@scenario("hung env step: the episode is cut and counted failed, the others in its chunk go on")
def hung_step(ray, cfg):
    from dataclasses import replace

    from actors.pool import RolloutPool
    from cluster.core.generation import GenParams

    c = replace(cfg, rollout=replace(cfg.rollout, step_timeout_s=2.0))
    pool = RolloutPool(c, "probe-hang", 1, env_factory=slow_env_factory)
    try:
        jobs = tasks(3)
        jobs[1] = tasks(1, "hang")[0]
        t0 = time.monotonic()
        eps = pool.play(jobs, GenParams(max_tokens=8))
        dt = time.monotonic() - t0
        check([e.failed for e in eps] == [False, True, False], str([(e.failed, e.error) for e in eps]))
        check(
            "step_timeout_s" in eps[1].error and pool.restarts == 0 and dt < 60, f"{eps[1].error}, {dt:.0f} s"
        )
        return f"episode 2 failed ({eps[1].error[:60]}...), episodes 1 and 3 finished {eps[0].steps} steps; no worker replaced; {dt:.0f} s"
    finally:
        pool.shutdown()


@scenario(
    "restart budget per worker per call: losing two workers once each does not stop a call (max_restarts=1)"
)
def budget_per_worker(ray, cfg):
    from dataclasses import replace

    from actors.pool import RolloutPool
    from cluster.core.generation import GenParams

    c = replace(cfg, rollout=replace(cfg.rollout, max_restarts=1, envs_per_worker=3))
    pool = RolloutPool(c, "probe-budget", 2, env_factory=slow_env_factory)
    try:
        k0, k1 = kill_after(ray, "probe-budget-0", 1.5), kill_after(ray, "probe-budget-1", 1.5)
        t0 = time.monotonic()
        eps = pool.play(tasks(12), GenParams(max_tokens=8))
        k0.join(), k1.join()
        check(
            len(eps) == 12 and not any(e.failed for e in eps) and pool.restarts == 2,
            f"restarts {pool.restarts}",
        )
        return f"12/12 episodes after 2 kills (one per worker), restarts {pool.restarts}, {time.monotonic() - t0:.0f} s (start-up not charged to the call)"
    finally:
        pool.shutdown()


@scenario(
    "checkpoints: every file (weights, DeepSpeed shards) checksummed; a torn newest one is skipped by resume and serve"
)
def checkpoints(ray, cfg, learners, tmp: Path):
    from cluster.checkpoint import CheckpointManager, resolve_model_dir

    run = tmp / "ckpt-run"
    ckpt = CheckpointManager(run / "checkpoints", keep=3)
    ckpt.save(1, learners, {"iteration": 1})
    ckpt.save(2, learners, {"iteration": 2})
    manifest = json.loads((run / "checkpoints/iter-00002/MANIFEST.json").read_text())["payload"]["files"]
    shards = [f["path"] for f in manifest if f["path"].startswith("model/deepspeed/")]
    check(
        any(p.endswith("model.safetensors") for p in (f["path"] for f in manifest)) and shards,
        "weights or shards not listed",
    )
    w = run / "checkpoints/iter-00002/model/model.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    folder, state = ckpt.latest()
    served = resolve_model_dir(run)
    check(folder.name == "iter-00001" and served.parent.name == "iter-00001", f"{folder}, {served}")
    return f"manifest lists {len(manifest)} files ({len(shards)} DeepSpeed shard files); a flipped byte in iter-00002's weights: resume and serve take iter-00001"


@scenario(
    "run folders: a used folder is refused; a resume without a checkpoint starts clean; keep-last never deletes the new one"
)
def run_folders(tmp: Path):
    from cluster.checkpoint import CheckpointManager
    from cluster.core.config import ConfigError, load_config
    from cluster.metrics import Metrics, read_metrics
    from cluster.run import prepare_run_dir
    from tests.test_faults_storage import FakeLearners

    run = tmp / "used"
    cfg = load_config(None, [f"trainer.run_dir={run}"])
    for it in (5, 6):
        CheckpointManager(run / "checkpoints", 1).save(it, FakeLearners(), {"iteration": it})
    try:
        prepare_run_dir(cfg, False, False)
        raise AssertionError("a used run folder was accepted")
    except ConfigError as e:
        refused = str(e)
    fresh = CheckpointManager(run / "checkpoints", 1)
    shutil.rmtree(run / "checkpoints")
    (run / "skills").mkdir(parents=True)
    prepare_run_dir(cfg, True, False)
    check(not (run / "skills").exists(), "the killed run's skills survived a resume without a checkpoint")
    for it in (5, 6):
        fresh.save(it, FakeLearners(), {"iteration": it})
    fresh.save(1, FakeLearners(), {"iteration": 1})
    check((run / "checkpoints/iter-00001").is_dir(), "keep-last deleted the checkpoint just written")
    m = Metrics(run, use_ray=False, use_tensorboard=False)
    for i in (1, 2, 3):
        m.log(i, {"x": i})
    Metrics(run, use_ray=False, use_tensorboard=False, resumed_at=1).log(2, {"x": 20})
    rows = [(r["iteration"], r["x"]) for r in read_metrics(run)]
    check(rows == [(1, 1.0), (2, 20.0)], str(rows))
    return f"refused: '{refused[:70]}...'; clean restart; iter-00001 kept beside 5, 6; metrics {rows}"


@scenario(
    "bad input: deep nesting, a Parquet bomb, malformed skill imports and a full disk give named errors"
)
def bad_input(tmp: Path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cluster.core.config import ConfigError, load_config
    from cluster.core.storage import (
        CorruptFileError,
        DiskFullError,
        append_line,
        read_json,
        read_parquet,
        write_json,
    )
    from cluster.serving.api import RequestError, decode_body
    from skills.importer import read_skills

    seen = []
    deep = tmp / "deep.yaml"
    deep.write_text("trainer: " + "[" * 20000 + "]" * 20000)
    deep_json = tmp / "state.json"
    deep_json.write_text('{"payload": ' + "[" * 9999 + "]" * 9999 + "}")
    for label, fn, exc in (
        ("config", lambda: load_config(deep), ConfigError),
        ("state", lambda: read_json(deep_json), CorruptFileError),
        ("serve body", lambda: decode_body(b"[" * 5000 + b"]" * 5000, 10**6), RequestError),
    ):  # fmt: skip
        try:
            fn()
            raise AssertionError(f"{label}: deep nesting accepted")
        except exc as e:
            seen.append(f"{label}: {str(e)[:40]}")
    bomb = tmp / "bomb.parquet"
    arr = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(2_000_000, dtype=np.int32)), pa.array(["a" * 1000])
    )
    pq.write_table(pa.table({"x": arr}), bomb, compression="zstd", write_statistics=False)
    try:
        read_parquet(bomb)
        raise AssertionError("a Parquet bomb was read")
    except CorruptFileError:
        seen.append(f"Parquet bomb of {bomb.stat().st_size} bytes refused before decoding")
    (tmp / "bad.json").write_text('{"name": "x", "status": "accepted", "workflow": 3}')
    reasons = [r.reason for r in read_skills(tmp / "bad.json")]
    check(reasons and all(reasons), str(reasons))
    seen.append(f"skill import refused: {reasons[0]}")
    mnt = tmp / "small"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        == 0
    ):
        try:
            write_json(mnt / "state.json", {"ok": 1})
            append_line(mnt / "metrics.jsonl", '{"iteration": 1}')
            for fn in (lambda: write_json(mnt / "state.json", {"x": "y" * 200_000}),
                       lambda: append_line(mnt / "metrics.jsonl", "z" * 200_000)):  # fmt: skip
                try:
                    fn()
                    raise AssertionError("a write on a full disk succeeded")
                except DiskFullError:
                    pass
            check(read_json(mnt / "state.json") == {"ok": 1} and (mnt / "metrics.jsonl").read_text() == '{"iteration": 1}\n',
                  "a full disk damaged the previous version")  # fmt: skip
            check(
                sorted(p.name for p in mnt.iterdir()) == ["metrics.jsonl", "state.json"],
                "a fragment was left behind",
            )
            seen.append("full disk (64 KiB tmpfs): DiskFullError, previous versions intact, no fragment")
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
    else:
        seen.append("full disk: not probed (no tmpfs mount: not root)")
    return "; ".join(seen)


def _http(url: str, body=None, token: str | None = None, timeout: float = 180, chunked: bool = False):
    data = body if isinstance(body, bytes | type(None)) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
        data = iter([data[i : i + 4096] for i in range(0, len(data), 4096)])
    req = urllib.request.Request(
        url, data=data, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@scenario(
    "serve: auth, a bounded queue (503), a request deadline (504), 4xx for bad fields, chunked limits, the OpenAI surface, /health"
)
def serving(ray, tmp: Path):
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import openai
    from ray import serve

    from cluster.core.config import load_config
    from cluster.core.model_store import resolve_model
    from cluster.serving.app import start

    token = "probe-token-0123456789abcdef"
    (tmp / "token").write_text(token)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(None, [f"serve.port={port}", "engine.kv_cache_gib=0.5", "model.max_model_len=1536",
                             f"serve.token_file={tmp / 'token'}", "serve.max_queue=2", "serve.request_timeout_s=8",
                             "serve.max_request_chars=20000"])  # fmt: skip
    url = start(cfg, resolve_model("embedded"), None)
    seen = []
    try:
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        code, _ = _http(f"{url}/v1/chat/completions", chat)
        check(code == 401, f"no token: {code}")
        seen.append("no token: 401")
        bad = [({**chat, "temperature": 3}, 422), ({**chat, "temperature": float("nan")}, 422), ({**chat, "seed": 2**70}, 422),
               (b'{"messages": ' + b"[" * 200 + b"]" * 200 + b"}", 400), ({**chat, "stream": True}, 400)]  # fmt: skip
        codes = [_http(f"{url}/v1/chat/completions", b, token)[0] for b, _ in bad]
        check(codes == [c for _, c in bad], f"bad fields: {codes}")
        seen.append(f"bad fields -> {codes}")
        big = {"task": "x", "observation": "y" * 30000, "admissible_actions": ["look"]}
        code, _ = _http(f"{url}/act", big, token, chunked=True)
        check(code == 413, f"chunked oversize: {code}")
        seen.append("chunked 30 kB body: 413")
        slow = {
            "model": "m",
            "messages": [{"role": "user", "content": "Tell a very long story."}],
            "max_tokens": 1024,
        }
        with ThreadPoolExecutor(5) as ex:
            codes = list(ex.map(lambda _: _http(f"{url}/v1/chat/completions", slow, token)[0], range(5)))
        check(503 in codes and 504 in codes, f"overload codes {codes}")
        seen.append(f"5 concurrent long requests -> {sorted(codes)} (queue 2, deadline 8 s)")
        # the engine finishes what it had started (bounded by max_tokens), then serves again
        t0 = time.monotonic()
        while _http(f"{url}/v1/chat/completions", chat, token)[0] != 200:
            check(time.monotonic() - t0 < 300, "the replica did not come back within 300 s")
            time.sleep(5)
        seen.append(f"serving again {time.monotonic() - t0:.0f} s later")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=120)
        models = [m.id for m in client.models.list()]
        ans = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
        )
        try:
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], stream=True
            )
            raise AssertionError("stream=True was accepted")
        except openai.BadRequestError:
            pass
        check(models and ans.choices[0].message.content is not None, "openai client")
        seen.append(f"openai client: models {models}, a completion, stream=True -> 400")
        code, health = _http(f"{url}/health")
        check(code == 200 and health["policy_version"] == 0, str(health))
        seen.append(f"/health (no token): policy_version {health['policy_version']}")
        return "; ".join(seen)
    finally:
        serve.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deadline-s", type=int, default=1800)
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("probe deadline")))
    signal.alarm(args.deadline_s)
    import ray
    from ray import cloudpickle

    from cluster.core.config import load_config
    from cluster.placement import init_ray
    from learner.group import LearnerGroup

    info = machine()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import benchmarks/
    cfg = load_config(None, ["env.max_steps=3", "rollout.envs_per_worker=3", "rollout.max_restarts=2",
                             "engine.kv_cache_gib=0.25", "model.max_model_len=1024", "cluster.include_dashboard=false",
                             "cluster.metrics_export_port=0", "learner.kl_coef={solver: 0.0, extractor: 0.0}",
                             "learner.num_cpus_per_learner=0.5", "rollout.num_cpus_per_worker=0.5"])  # fmt: skip
    init_ray(cfg)
    tmp = Path(tempfile.mkdtemp(prefix="faults-"))
    try:
        learners = LearnerGroup(cfg)
        try:
            policy_versions(ray, cfg, learners)
            checkpoints(ray, cfg, learners, tmp)
        finally:
            learners.shutdown()
        hung_step(ray, cfg)
        budget_per_worker(ray, cfg)
        run_folders(tmp)
        bad_input(tmp)
        serving(ray, tmp)
    except TimeoutError as e:
        RESULTS.append({"scenario": "probe", "result": "FAIL", "seen": str(e)})
    finally:
        signal.alarm(0)
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    passed = sum(r["result"] == "PASS" for r in RESULTS)
    md = "\n".join([
        "# Fault probe (issue #21)", "",
        f"{info['date']}, {info['cpus']} CPU cores, load {info['load_average_1m']}; `benchmarks/faults_probe.py` against the "
        f"real stack on loopback (Ray, vLLM rollout workers, a DeepSpeed learner group, checkpoints, Ray Serve). "
        f"**{passed}/{len(RESULTS)} PASS.**", "",
        "| scenario | result | what the probe saw | s |", "|---|---|---|---|",
        *(f"| {r['scenario']} | {r['result']} | {r['seen']} | {r.get('s', '')} |" for r in RESULTS),
    ])  # fmt: skip
    write("faults", {"machine": info, "results": RESULTS, "passed": passed, "total": len(RESULTS)}, md)
    sys.exit(0 if passed == len(RESULTS) else 1)


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[1])
    main()
