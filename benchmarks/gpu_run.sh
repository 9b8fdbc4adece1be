#!/usr/bin/env bash
# Run on a lent GPU machine, from the repository root, with .device/ carried (see
# gpu_prepare.sh): the GPU tests, then `audiomill bench` for real-size SNAC 24 kHz (random
# weights) and the tiny SNAC. Figures and logs go to $OUT (or /tmp/gpu-out).
#   bash benchmarks/gpu_run.sh [tests|bench|all]
set -uo pipefail
what=${1:-all}
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl \
    || { echo "gpu_run.sh: installing the wheels of .device/whl failed (run gpu_prepare.sh here first)"; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:/tmp/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export AUDIOMILL_SPEECH_DIR="$PWD/.device/speech"  # espeak-ng's speech, saved by gpu_prepare.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
nproc | sed 's/^/cores: /' | tee -a "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"
status=0
if [[ $what == tests || $what == all ]]; then
    python3 -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu-tests.log"
    status=${PIPESTATUS[0]}
fi
if [[ $what == bench || $what == all ]]; then
    # real-size SNAC 24 kHz: end to end against the model ceiling (>= 0.7) and the naive loop (>= 20)
    python3 -m audiomill bench --json --agreement --work-dir /tmp/bench-full > "$out/bench-snac24.json" \
        2> "$out/bench-snac24.log" || status=1
    python3 -m audiomill bench --tiny --json --work-dir /tmp/bench-tiny > "$out/bench-tiny.json" \
        2> "$out/bench-tiny.log" || status=1
    # every clip's codes in full batches against alone, on the GPU (tiny configurations)
    python3 benchmarks/identity.py --devices 0 > "$out/identity.jsonl" 2> "$out/identity.log" || status=1
    cat "$out"/bench-*.json "$out/identity.jsonl"
fi
exit "$status"
