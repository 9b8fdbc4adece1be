#!/usr/bin/env bash
# System packages the tests need: espeak-ng makes the real speech the fixtures are built from;
# SLURM (slurmctld, slurmd, client) and munge run the single-node cluster of the executor tests;
# libc++1 is what TEN-VAD's library (audiomill[ten-vad]) links against.
set -euo pipefail
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
[ -x /usr/sbin/slurmctld ] || missing+=(slurmctld)
[ -x /usr/sbin/slurmd ] || missing+=(slurmd)
command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
[ -x /usr/sbin/munged ] || missing+=(munge)
ldconfig -p 2>/dev/null | grep -q 'libc++\.so\.1' || missing+=(libc++1)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install these system packages first: ${missing[*]}" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
