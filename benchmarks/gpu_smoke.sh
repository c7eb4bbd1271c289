#!/usr/bin/env bash
# GPU smoke run for the `device` machine (torch + transformers + CUDA, no vLLM/Ray): install the
# carried DeepSpeed wheels (.whl/, when there are any), then every part of gpu_smoke.py (learner step,
# shared-prompt packing, weight broadcast, ZeRO-3 send); extra arguments go to gpu_smoke.py.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
else
  echo "gpu_smoke.sh: no .whl/*.whl carried: without DeepSpeed the step and zero3 parts are skipped" >&2
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -c "import deepspeed; print('deepspeed', deepspeed.__version__)" || true
python3 benchmarks/gpu_smoke.py --steps 5 --out "$OUT/learner_gpu_smoke.json" "$@" 2>&1 | tee "$OUT/gpu_smoke.log"
exit "${PIPESTATUS[0]}"
