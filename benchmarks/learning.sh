#!/usr/bin/env bash
# The learning experiment of docs/results.md, end to end (about 1 h per seed on 2 loaded CPU cores):
#   data -> planner demos of TRAINED types only -> eval untrained -> SFT warm start -> eval SFT
#   -> per seed: grpo run, evolving run (same budget) -> transfer: evolving library given to the
#   untrained and to the SFT model -> tables (learning_report.py) and plots (evorl plot).
# Each stage is skipped when its output exists, so an interrupted run continues where it stopped;
# FORCE=1 redoes everything. Knobs: SEEDS="0 1 2", ITERS=4, SFT_EPOCHS=2, SFT_DEMOS_PER_TYPE=4,
# SKIP_UNTRAINED_TRANSFER=1 (library given to the SFT model only), METRICS_PORT, and SETTING:
#   solver-only: SFT (SFT_EPOCHS) on plain solver demos; results in benchmarks/results/learning_solver_sft
#   both-roles (default): the solver-only SFT checkpoint (run that setting first) + BOTH_EPOCHS (1) of SFT
#     where half the solver demos show a teacher skill card and the extractor role is learned
#     (transcript -> teacher skill JSON, role-balanced loss); results in benchmarks/results/learning
set -euo pipefail
cd "$(dirname "$0")/.."
export EVORL_CACHE="${EVORL_CACHE:-$PWD/.cache}" ALFWORLD_DATA="${ALFWORLD_DATA:-$PWD/.cache/alfworld}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}" HF_HUB_OFFLINE=1
EVORL=.venv/bin/evorl PY=.venv/bin/python
CFG=configs/bench_alfworld_easy.yaml
DATA=data/bench/alfworld-easy
SEEDS="${SEEDS:-0}" ITERS="${ITERS:-4}" SFT_EPOCHS="${SFT_EPOCHS:-2}" PER_TYPE="${SFT_DEMOS_PER_TYPE:-4}"
SETTING="${SETTING:-both-roles}"
sft_model() { # sft_model ROOT: the checkpoint `evorl sft` names in ROOT/latest (an HF folder), or nothing
  local d; d=$(cat "$1/latest" 2>/dev/null) && [[ -d $1/$d ]] && echo "$1/$d"; return 0
}
case "$SETTING" in
  both-roles)
    OUT=benchmarks/results/learning SFT_ROOT=data/bench/sft-both SFT_ARGS=(--skill-cards 0.5 --extractor)
    SFT_FROM=$(sft_model data/bench/sft) SFT_EPOCHS="${BOTH_EPOCHS:-1}"
    [[ -n "$SFT_FROM" ]] || { echo "learning.sh: run SETTING=solver-only first (its SFT is this start's base)" >&2; exit 2; } ;;
  solver-only) OUT=benchmarks/results/learning_solver_sft SFT_ROOT=data/bench/sft SFT_ARGS=() SFT_FROM=embedded ;;
  *) echo "learning.sh: SETTING must be both-roles or solver-only, not '$SETTING'" >&2; exit 2 ;;
esac
PORT="${METRICS_PORT:-23816}"  # Ray metrics port of our own: a second local Ray on the default fails to start
mkdir -p "$OUT"
todo() { [[ "${FORCE:-0}" == 1 || ! -s "$1" ]]; }
ev() { # ev LABEL [evorl eval args...]: greedy eval of the whole valid_seen split -> $OUT/eval_LABEL.json
  local label=$1; shift
  if todo "$OUT/eval_$label.json"; then
    echo "== eval $label"
    # one retry: on a shared machine a worker can be OOM-killed by other jobs' memory use
    $EVORL eval --config $CFG --json "$@" cluster.include_dashboard=false cluster.metrics_export_port="$PORT" > "$OUT/eval_$label.json.tmp" ||
      $EVORL eval --config $CFG --json "$@" cluster.include_dashboard=false cluster.metrics_export_port="$PORT" > "$OUT/eval_$label.json.tmp"
    mv "$OUT/eval_$label.json.tmp" "$OUT/eval_$label.json"
  fi
}

todo $DATA/evorl_alfworld.json && $EVORL data alfworld --out $DATA --per-type 8 --valid-per-type 8 \
  --splits train,valid_seen --preset easy --workers 2 --seed 0
todo data/bench/demos_train_all.jsonl && $EVORL data alfworld-demos $DATA/train --out data/bench/demos_train_all.jsonl --workers 2
todo data/bench/demos_trained.jsonl && $PY benchmarks/learning_demos.py data/bench/demos_train_all.jsonl \
  data/bench/demos_trained.jsonl --per-type "$PER_TYPE"

ev untrained
if [[ "${FORCE:-0}" == 1 || -z "$(sft_model $SFT_ROOT)" ]]; then
  $EVORL sft --config $CFG --demos data/bench/demos_trained.jsonl --out $SFT_ROOT --epochs "$SFT_EPOCHS" \
    --batch-turns 16 --lr 1e-4 "${SFT_ARGS[@]}" model.path="$SFT_FROM" cluster.include_dashboard=false cluster.metrics_export_port="$PORT"
  cp $SFT_ROOT/sft_metrics.jsonl "$OUT/sft_metrics.jsonl"
fi
SFT=$(sft_model $SFT_ROOT)
ev sft --checkpoint "$SFT"

for seed in $SEEDS; do
  for mode in evolving grpo; do  # evolving first: the method under test
    run=runs/bench/$SETTING/$mode-seed$seed
    if todo "$OUT/$mode-seed$seed/summary.json"; then
      [[ "${FORCE:-0}" == 1 ]] && rm -rf "$run"
      args=(--config $CFG trainer.mode=$mode trainer.seed=$seed trainer.iterations="$ITERS" model.path="$SFT"
        trainer.run_dir="$run" trainer.checkpoint_every=1 cluster.include_dashboard=false cluster.metrics_export_port="$PORT")
      $EVORL train "${args[@]}" --resume || $EVORL train "${args[@]}" --resume  # a retry resumes
      mkdir -p "$OUT/$mode-seed$seed"
      cp "$run/summary.json" "$run/metrics.jsonl" "$run/config.yaml" "$OUT/$mode-seed$seed/"
      $EVORL plot "$run" | while read -r png; do cp "$png" "$OUT/$mode-seed$seed/"; done
    fi
  done
  lib=runs/bench/$SETTING/evolving-seed$seed/skills
  accepted=$($PY -c "import sys; from skills.library import SkillLibrary; print(len(SkillLibrary.open(sys.argv[1]).with_status('accepted')), flush=True)" "$lib" | tail -1) || true
  # (|| true: the interpreter can abort at exit in a native thread's teardown after printing the count)
  if [[ "$accepted" == 0 ]]; then
    # The gate needs skills.gate_min_trials trials per skill; a short run gives each candidate only
    # k_neighbours x repeats, so the transfer check serves the run's ungated candidates instead.
    echo "seed $seed: no skill passed the gate in this budget; the transfer check gives the model the" \
      "library's candidates (row sft+candidates-seed$seed)" > "$OUT/transfer-seed$seed.txt"
    what=candidates status=accepted,candidate
  else
    echo "seed $seed: $accepted accepted skills (row sft+skills-seed$seed)" > "$OUT/transfer-seed$seed.txt"
    what=skills status=accepted
  fi
  ev "sft+$what-seed$seed" --checkpoint "$SFT" --skills "$lib" --skill-status "$status"
  [[ "${SKIP_UNTRAINED_TRANSFER:-0}" == 1 ]] || ev "untrained+$what-seed$seed" --skills "$lib" --skill-status "$status"
done
SEEDS="$SEEDS" ITERS="$ITERS" SFT_EPOCHS="$SFT_EPOCHS" PER_TYPE="$PER_TYPE" CFG="$CFG" SFT="$SFT" SFT_ARGS="${SFT_ARGS[*]}" SFT_FROM="$SFT_FROM" $PY - "$OUT/meta.json" <<'PYEOF'
import json, os, platform, sys
from datetime import UTC, datetime
from cluster.core.storage import write_json_plain
e = os.environ
write_json_plain(sys.argv[1], {
    "date": datetime.now(UTC).isoformat(timespec="seconds"),
    "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, no GPU",
    "config": e["CFG"], "seeds": e["SEEDS"].split(),
    "start": f"SFT from {e['SFT_FROM']} ({e['SFT_EPOCHS']} epochs, lr 1e-4, 16 demo turns per batch, options '{e['SFT_ARGS']}') on planner "
             f"demos of the 4 trained types ({e['PER_TYPE']} games each); checkpoint {e['SFT']}",
    "budget": f"{e['ITERS']} iterations x batch 2 (grpo: 4 samples per task; evolving: 2 candidates x 2 neighbours)",
})
PYEOF
$PY benchmarks/learning_report.py --results "$OUT"
