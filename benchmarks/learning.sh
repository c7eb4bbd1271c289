#!/usr/bin/env bash
# The learning experiment (issue #18), every stage: benchmarks/learning.py (see its docstring for the
# stages, knobs and outputs: benchmarks/results/learning/). Arguments go to learning.py, e.g.
#   bash benchmarks/learning.sh --seeds 0 --stages data,start,gonogo
# Stages whose outputs exist are skipped (FORCE=1 redoes them), so an interrupted run continues.
set -euo pipefail
cd "$(dirname "$0")/.."
export EVORL_CACHE="${EVORL_CACHE:-$PWD/.cache}" ALFWORLD_DATA="${ALFWORLD_DATA:-$PWD/.cache/alfworld}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}" HF_HUB_OFFLINE=1
export VLLM_ENABLE_V1_MULTIPROCESSING=0 OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1
exec .venv/bin/python benchmarks/learning.py "$@"
