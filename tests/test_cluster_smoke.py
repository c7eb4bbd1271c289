"""The cluster launch mechanics on this machine (scripts/cluster_smoke.py --quick, about 40 s): three
raylets with token authentication, the job API answering 401 without the token, a job submitted with
cluster/runtime_env.yaml and the venv's interpreter, its actors placed on the rollout / learner nodes
by custom resource and importing the uploaded working_dir, the raylets ended by PID.

The full smoke (one quickstart iteration through `ray job submit`, checkpoint, resume) takes 3-6
minutes on 2 cores and needs ~10 GiB of free memory: it is `make cluster-smoke`, not a test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_cluster_launch_mechanics():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cluster_smoke.py"), "--quick", "--wait-memory", "300"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and lines and lines[-1].startswith("cluster-smoke --quick: OK"), (
        out.stdout[-3000:] + out.stderr[-3000:]
    )
