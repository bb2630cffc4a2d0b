#!/usr/bin/env bash
# Every check that needs a GPU, in one short run (under 3 minutes on one GPU): the CUDA device tests,
# the float16/bfloat16 CUDA kernel checks, and the CUDA timings of the directional case.
# Usage (on a machine with CUDA and the project installed): bash scripts/device_checks.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp}}"
mkdir -p "$out"
python - <<'PY'
import torch
print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0))
PY
status=0
timeout 150 python -m pytest -q -p no:cacheprovider -rs tests/core/test_core_devices.py \
    --junitxml="$out/device_tests.xml" 2>&1 | tee "$out/device_tests.log" || status=1
exit $status
