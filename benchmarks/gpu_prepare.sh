#!/usr/bin/env bash
# Run here, before a lent GPU machine is used: fetch into .device/ (git-ignored) what that
# machine lacks and cannot download (it reaches nothing): Python 3.12 wheels of the audio
# and codec packages, and espeak-ng's speech for the fixtures and the bench corpus (espeak-ng
# itself needs PulseAudio and X libraries that machine lacks). Then, with the
# device tool:  run(command="bash benchmarks/gpu_run.sh", carry=[".device"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .device && mkdir -p .device/whl
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .device/whl snac==1.2.1 soundfile==0.14.0 soxr==1.1.0
PYTHONPATH=src python3 -c "from audiomill.corpus import save_speech; save_speech('.device/speech')"
du -sh .device/whl .device/speech
