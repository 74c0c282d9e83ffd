#!/bin/bash
# One device session's worth of GPU work, run from the root of a copy of the repository on the GPU machine:
#   install the carried wheels (.whl) and the project (no network there), then, with logs under $OUT:
#   the PRG's equality check and throughput, the CUDA engine tests, the per-round costs of each PRG path, and one
#   secure BERT-base-shaped forward per PRG path.
# Usage (device tool): bash benchmarks/gpu/session.sh   (with $OUT set and .whl carried)
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WHL=${WHL:-.whl}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl \
  && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 || {
  echo "project install failed"; tail -20 "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 benchmarks/gpu/prg.py "$OUT" 2>&1 | tee "$OUT/prg.log" | tail -25
python3 -m pytest -q -p no:cacheprovider -m cuda tests/mpc tests/approx tests/nn 2>&1 | tee "$OUT/cuda_tests.log" | tail -15
python3 benchmarks/gpu/rounds.py "$OUT" --device cuda 2>&1 | tee "$OUT/rounds.log" | tail -10
python3 benchmarks/gpu/forward.py "$OUT" --device cuda --repeat 2 --prg host,default 2>&1 | tee "$OUT/forward.log" | tail -10
