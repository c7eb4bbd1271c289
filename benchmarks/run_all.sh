#!/usr/bin/env bash
# `make bench`: every benchmark small enough for 2 CPU cores (about 25 minutes there), then the tables
# (benchmarks/results/*.md, docs/results.md and the README "Results" section, between their markers).
# The learning experiment (about 1 h per seed) is separate: benchmarks/learning.sh; its committed
# results are re-tabulated here. SKIP="trl scaling ..." leaves named steps out; LEARNING=1 also runs it.
set -uo pipefail
cd "$(dirname "$0")/.."
export EVORL_CACHE="${EVORL_CACHE:-$PWD/.cache}" ALFWORLD_DATA="${ALFWORLD_DATA:-$PWD/.cache/alfworld}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}" HF_HUB_OFFLINE=1
export VLLM_ENABLE_V1_MULTIPROCESSING=0 OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1
PY=.venv/bin/python EVORL=.venv/bin/evorl
DATA=data/bench/alfworld-easy
failed=()
step() { # step NAME CMD...: run one benchmark, keep going when it fails, report at the end
  local name=$1; shift
  if [[ " ${SKIP:-} " == *" $name "* ]]; then echo "== $name: skipped (SKIP)"; return; fi
  echo "== $name: $*"; local t0=$SECONDS
  if "$@"; then echo "== $name: ok in $((SECONDS - t0)) s"; else echo "== $name: FAILED"; failed+=("$name"); fi
}
data() { # the generated easy games and planner demos the learning, TRL and scaling benchmarks use
  [[ -s $DATA/evorl_alfworld.json ]] || $EVORL data alfworld --out $DATA --per-type 8 --valid-per-type 8 \
    --splits train,valid_seen --preset easy --workers 2 --seed 0 || return 1
  [[ -s data/bench/demos_train_all.jsonl ]] || $EVORL data alfworld-demos $DATA/train \
    --out data/bench/demos_train_all.jsonl --workers 2 || return 1
  $PY benchmarks/learning_demos.py data/bench/demos_train_all.jsonl data/bench/demos_trained.jsonl --per-type 4
}

step data data
step rollout $PY benchmarks/rollout_throughput.py
step learner $PY benchmarks/learner_step.py
step alfworld_env $PY benchmarks/alfworld_env.py
step mind2web_loader $PY benchmarks/mind2web_loader.py
step mind2web_model $PY benchmarks/mind2web_model.py
step trl $PY benchmarks/trl_grpo.py
step scaling $PY benchmarks/rollout_scaling.py
[[ "${LEARNING:-0}" == 1 ]] && step learning bash benchmarks/learning.sh
if [[ -s benchmarks/results/learning/meta.json ]]; then
  step learning_tables $PY benchmarks/learning_report.py
  step iteration_breakdown $PY benchmarks/iteration_breakdown.py
fi
[[ -s benchmarks/results/mind2web_learning.json ]] &&  # its training runs: benchmarks/mind2web_learning.sh
  step mind2web_learning_tables $PY benchmarks/mind2web_learning_report.py
step tables $PY benchmarks/write_tables.py
if ((${#failed[@]})); then echo "make bench: failed steps: ${failed[*]}"; exit 1; fi
echo "make bench: all steps ok; tables in docs/results.md and benchmarks/results/"
