#!/usr/bin/env bash
# Main job: set up .venv (the project + torch 2.11 + torchaudio 2.11 + numpy) and diagnose this
# machine.
# Note: this diagnoses a fresh torch 2.11 in .venv, not the torch of your own environment; for
# that, run `blackwell-compat doctor` (or `python -m blackwell_compat doctor`) there.
# Runs the doctor twice: on the real hardware, then with an emulated GB10 (sm_121) to show what
# an affected machine's report looks like. Exit status: the first (real) doctor's (0: nothing
# failed); the emulated run's failure is expected and does not count.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# numpy: without it every `import torch` warns "Failed to initialize NumPy" (same pin as
# requirements/full.txt).
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.11.0" "torchaudio==2.11.0" \
    "numpy==2.4.6" -e .
echo "== 1/2: this machine: python -m blackwell_compat doctor =="
status=0
.venv/bin/python -m blackwell_compat doctor || status=$?
echo
echo "== 2/2: demonstration on an emulated GB10 (sm_121): what an affected machine reports =="
echo "== BLACKWELL_COMPAT_EMULATE=sm_121 python -m blackwell_compat doctor --smoke =="
BLACKWELL_COMPAT_EMULATE=sm_121 .venv/bin/python -m blackwell_compat doctor --smoke || true
echo
echo "scripts/doctor.sh: exit status ${status}, this machine's doctor (1/2); done in ${SECONDS} s"
exit "$status"
