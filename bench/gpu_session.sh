#!/usr/bin/env bash
# Every GPU check and benchmark of the K2 engine in one device call, from the repository root:
#
#   bash bench/gpu_session.sh "$OUT"                  # tests, kernels, layer, e2e
#   bash bench/gpu_session.sh "$OUT" kernels layer    # some of them
#
# Needs only the GPU image's python3 (torch, triton, pytest; transformers for one e2e row).
# Each step's log (and bench JSON) lands in the folder given; each prints "== STEP exit N".
# Step limits add up to 570 s, inside a 600 s call; on an H200 the whole run is about 6 min.
set -u
out=${1:?usage: bash bench/gpu_session.sh OUT_DIR [tests] [kernels] [layer] [e2e]}
shift
steps=${*:-tests kernels layer e2e}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
declare -A limit=([tests]=110 [kernels]=160 [layer]=100 [e2e]=200)
$py -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'
for step in $steps; do
  if [ "$step" = tests ]; then
    timeout "${limit[$step]}" $py bench/k2_gpu.py tests >"$out/tests.log" 2>&1
  else
    timeout "${limit[$step]}" $py bench/k2_gpu.py "$step" --json "$out/$step.json" >"$out/$step.txt" 2>"$out/$step.log"
  fi
  echo "== $step exit $?"
done
