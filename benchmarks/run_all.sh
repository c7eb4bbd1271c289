#!/usr/bin/env bash
# `make bench`: every benchmark small enough for 2 CPU cores, then the tables (benchmarks/results/*.md,
# docs/results.md and the README "Results" section, between their markers). Time per step: see
# docs/results.md (each step also prints its own). The learning experiment (benchmarks/learning.py,
# hours) runs only with LEARNING=1; the time breakdown of its training runs is re-tabulated whenever
# they exist (runs/learning/). SKIP="trl scaling ..." leaves named steps out; a failed step does not
# stop the others, and the script exits 1 naming every failed step.
# Not here: benchmarks/soak.py (about 2 h), benchmarks/gpu_smoke.sh (the GPU machine).
set -uo pipefail
cd "$(dirname "$0")/.."
export EVORL_CACHE="${EVORL_CACHE:-$PWD/.cache}" ALFWORLD_DATA="${ALFWORLD_DATA:-$PWD/.cache/alfworld}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}" HF_HUB_OFFLINE=1
export VLLM_ENABLE_V1_MULTIPROCESSING=0 OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=1
PY=.venv/bin/python EVORL=.venv/bin/evorl
DATA=data/bench/alfworld-easy  # env.data_dir of configs/bench_alfworld_easy.yaml
failed=()
step() { # step NAME CMD...: run one benchmark, keep going when it fails, report at the end
  local name=$1; shift
  if [[ " ${SKIP:-} " == *" $name "* ]]; then echo "== $name: skipped (SKIP)"; return; fi
  echo "== $name: $*"; local t0=$SECONDS
  if "$@"; then echo "== $name: ok in $((SECONDS - t0)) s"; else echo "== $name: FAILED"; failed+=("$name"); fi
}
data() { # the generated easy games of the bench config (train + valid_seen), once
  [[ -s $DATA/evorl_alfworld.json ]] || $EVORL data alfworld --out $DATA --per-type 8 --valid-per-type 8 \
    --splits train,valid_seen --preset easy --workers 2 --seed 0
}

step data data
step weight_sync $PY benchmarks/weight_sync.py
step rollout $PY benchmarks/rollout_constrained.py
step learner $PY benchmarks/learner_step.py
step iteration_cost $PY benchmarks/iteration_cost.py
step iteration_cost_evolving $PY benchmarks/iteration_cost.py --mode evolving
step overlap $PY benchmarks/overlap.py
step quickstart $PY benchmarks/quickstart.py
step faults $PY benchmarks/faults_probe.py
if [[ -f benchmarks/trl_multiturn.py ]]; then
  step trl $PY benchmarks/trl_multiturn.py
else
  echo "== trl: skipped (benchmarks/trl_multiturn.py does not exist yet)"
fi
step scaling $PY benchmarks/rollout_scaling.py
step serve $PY benchmarks/serve_latency.py
step skills_format $PY benchmarks/skills_format_rate.py
step alfworld_env $PY benchmarks/alfworld_env.py
step mind2web_loader $PY benchmarks/mind2web_loader.py
[[ "${LEARNING:-0}" == 1 ]] && step learning bash benchmarks/learning.sh
runs=()  # the learning experiment's ALFWorld training runs (benchmarks/learning.py stage runs)
for d in runs/learning/alfworld-*-seed*; do [[ -s $d/metrics.jsonl ]] && runs+=("$d"); done
# without them, the quickstart's run (step quickstart above): 3 evolving iterations that all train
((${#runs[@]})) || { [[ -s runs/bench-quickstart/metrics.jsonl ]] && runs+=(runs/bench-quickstart); }
if ((${#runs[@]})); then
  step iteration_breakdown $PY benchmarks/iteration_breakdown.py "${runs[@]}"
else
  echo "== iteration_breakdown: skipped (no trained run: LEARNING=1 or the quickstart step makes one)"
fi
step tables $PY benchmarks/write_tables.py
if ((${#failed[@]})); then echo "make bench: failed steps: ${failed[*]}"; exit 1; fi
echo "make bench: all steps ok; tables in docs/results.md and benchmarks/results/"
