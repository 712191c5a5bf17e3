#!/usr/bin/env bash
# The project's test command (the README's `bash scripts/test.sh`, also what CI runs through
# .ci/run). On a fresh machine it builds everything it needs: a small virtualenv with nox in
# .nox/_bootstrap, then nox builds one pinned virtualenv per session (requirements/) and runs
# the default sessions: lint (ruff and the documentation site), typecheck, tests-oldest-torch,
# tests-newest-torch, tests-full, tests-tts022, tests-packaging.
# Arguments go to nox: `bash scripts/test.sh -s tests-full -- -k fbank`.
# Exit status: non-zero when any session fails, or when no test report was written at all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=""
for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then
        python=$candidate
        break
    fi
done
if [ -z "$python" ]; then
    echo "scripts/test.sh: no python3.11 or python3 on PATH" >&2
    exit 2
fi

boot=.nox/_bootstrap
if [ ! -x "$boot/bin/python" ]; then
    "$python" -m venv "$boot"
fi
"$boot/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements/nox.txt

rm -rf .nox/_reports
status=0
"$boot/bin/nox" "$@" || status=$?

echo "scripts/test.sh: nox finished in ${SECONDS} s with exit status ${status}"

# Last lines: the test counts of every session's JUnit report, then the total.
summary_args=(.nox/_reports)
if [ "$#" -eq 0 ]; then
    summary_args+=(--require-tests)  # the default sessions must have run tests
fi
"$boot/bin/python" scripts/junit_summary.py "${summary_args[@]}" || status=$((status == 0 ? 1 : status))
exit "$status"
