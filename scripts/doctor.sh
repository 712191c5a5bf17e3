#!/usr/bin/env bash
# Main job: set up .venv (the project + torch 2.11 + torchaudio 2.11) and diagnose this machine.
# Runs the doctor twice: on the real hardware, then with an emulated GB10 (sm_121) so the report
# shows what an affected machine looks like. Exit status: the real doctor's (0: nothing failed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.11.0" "torchaudio==2.11.0" -e .
echo "== python -m blackwell_compat doctor (this machine) =="
status=0
.venv/bin/python -m blackwell_compat doctor || status=$?
echo
echo "== BLACKWELL_COMPAT_EMULATE=sm_121 python -m blackwell_compat doctor --smoke (emulated GB10) =="
BLACKWELL_COMPAT_EMULATE=sm_121 .venv/bin/python -m blackwell_compat doctor --smoke || true
exit "$status"
