#!/usr/bin/env bash
# GPU smoke run for the `device` machine (torch + transformers + CUDA, no vLLM/Ray): install the
# carried DeepSpeed wheels (.whl/), then the learner step and NCCL broadcast checks of gpu_smoke.py.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
python3 benchmarks/gpu_smoke.py --steps 5 --out "$OUT/learner_gpu_smoke.json" 2>&1 | tee "$OUT/gpu_smoke.log"
