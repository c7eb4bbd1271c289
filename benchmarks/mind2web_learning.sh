#!/usr/bin/env bash
# Mind2Web on the bundled sample (issue #9): the untrained embedded model, then `grpo` and `evolving`
# from it with the same budget (configs/quickstart_mind2web.yaml), each model scored by
# benchmarks/mind2web_model.py (teacher-forced element accuracy, operation F1, step and task success,
# with the random and oracle policies in the same run) -> mind2web_learning_report.py.
# REWARD=progress trains on env.reward=progress (1/n per right step) instead of the paper's task success,
# which a model that never finishes a task cannot learn from; its runs are labelled MODE-progress-seedS.
# Each stage is skipped when its output exists; FORCE=1 redoes all. Knobs: ITERS (3), SEED (0), METRICS_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
export EVORL_CACHE="${EVORL_CACHE:-$PWD/.cache}" ALFWORLD_DATA="${ALFWORLD_DATA:-$PWD/.cache/alfworld}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}" HF_HUB_OFFLINE=1
EVORL=.venv/bin/evorl PY=.venv/bin/python
CFG=configs/quickstart_mind2web.yaml RES=benchmarks/results
ITERS="${ITERS:-3}" SEED="${SEED:-0}" PORT="${METRICS_PORT:-23817}" REWARD="${REWARD:-success}"
TAG=$([[ $REWARD == success ]] || echo "-$REWARD")
todo() { [[ "${FORCE:-0}" == 1 || ! -s "$1" ]]; }

todo $RES/mind2web_model.json && $PY benchmarks/mind2web_model.py --label untrained
for mode in grpo evolving; do
  label=$mode$TAG-seed$SEED run=runs/bench/mind2web/$mode$TAG-seed$SEED
  if todo "$run/summary.json"; then
    [[ "${FORCE:-0}" == 1 ]] && rm -rf "$run"
    # no in-run eval: every model is scored the same way below
    args=(--config $CFG trainer.mode=$mode trainer.seed="$SEED" trainer.iterations="$ITERS" trainer.run_dir="$run"
      env.reward="$REWARD" trainer.checkpoint_every=1 env.eval_splits=[] cluster.include_dashboard=false cluster.metrics_export_port="$PORT")
    $EVORL train "${args[@]}" --resume || $EVORL train "${args[@]}" --resume  # a retry resumes
  fi
  todo "$RES/mind2web_model_$label.json" && $PY benchmarks/mind2web_model.py --run "$run" --label "$label"
done
$PY benchmarks/mind2web_learning_report.py
