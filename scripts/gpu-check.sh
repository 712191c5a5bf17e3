#!/usr/bin/env bash
# The prepared GPU check: on a machine with an NVIDIA GPU, run every `gpu`-marked test and the
# remedy, fuser and guard benchmarks within 8 minutes, then print one summary. Without an NVIDIA
# GPU it says so and exits 0 at once (CI machines have none).
#
#   bash scripts/gpu-check.sh
#
# The interpreter: $PYTHON, else the tests-full nox environment (.nox/tests-full/bin/python, built
# by `bash scripts/test.sh -s tests-full --install-only`), else python3. It must have torch with
# CUDA, pytest, and transformers for the Llama benchmark. Each step gets a share of the budget
# ($GPU_CHECK_BUDGET_S, default 440 s, which keeps the whole check under 8 minutes with the
# checks around the steps) and is stopped when its share runs out; a step whose file
# is not in this checkout is reported as "missing" (the fuser benchmark, benchmarks/bench_fuser.py,
# comes with the fuser rung). Exit status: 0 when every step that exists passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

budget=${GPU_CHECK_BUDGET_S:-440}
started=$SECONDS
log_dir=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU on this machine (nvidia-smi not found): nothing to check"
    rm -rf "$log_dir"
    exit 0
fi
gpus=$(nvidia-smi -L 2>/dev/null | grep '^GPU ' || true)
if [ -z "$gpus" ]; then
    echo "gpu-check: nvidia-smi lists no GPU on this machine: nothing to check"
    rm -rf "$log_dir"
    exit 0
fi

python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x .nox/tests-full/bin/python ]; then
        python=.nox/tests-full/bin/python
    else
        python=python3
    fi
fi

names=()
states=()
times=()
notes=()

record() { # name state seconds note
    names+=("$1")
    states+=("$2")
    times+=("$3")
    notes+=("$4")
}

# step NAME SHARE_S FILE_THAT_MUST_EXIST COMMAND...: run COMMAND with the smaller of its share and
# the time left; its output goes to the log folder, its last line into the summary.
step() {
    local name=$1 share=$2 needs=$3
    shift 3
    if [ -n "$needs" ] && [ ! -e "$needs" ]; then
        record "$name" missing 0 "$needs is not in this checkout"
        return
    fi
    local left=$((budget - (SECONDS - started)))
    local limit=$((share < left ? share : left))
    if [ "$limit" -le 5 ]; then
        record "$name" "not run" 0 "no time left of the ${budget} s budget"
        return
    fi
    local log="$log_dir/${name// /-}.log" begin=$SECONDS status=0
    echo "gpu-check: $name (at most ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || status=$?
    local took=$((SECONDS - begin)) state=passed
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        state="timed out"
    elif [ "$status" -ne 0 ]; then
        state="failed ($status)"
    fi
    local last
    last=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | cut -c1-150)
    record "$name" "$state" "$took" "$last"
}

torch_says=$("$python" -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.device_count())" 2>&1 | tail -n 1)
case "$torch_says" in
    *" True "*) ;;
    *)
        echo "gpu-check: $(echo "$gpus" | wc -l) GPU(s) here, but $python cannot use them: $torch_says"
        echo "gpu-check summary: FAILED before any step (set PYTHON to an interpreter with a CUDA torch)"
        rm -rf "$log_dir"
        exit 1
        ;;
esac

step "gpu tests" 250 "" "$python" -m pytest -m gpu -q -p no:cacheprovider tests
step "remedy benchmark" 90 benchmarks/bench_llama_decode.py \
    "$python" benchmarks/bench_llama_decode.py --tokens 24 --layers 6 --repeat 3
step "fuser benchmark" 50 benchmarks/bench_fuser.py "$python" benchmarks/bench_fuser.py
step "guard benchmark" 50 benchmarks/bench_guard.py "$python" benchmarks/bench_guard.py --repeat 3

echo
echo "gpu-check summary: $(echo "$gpus" | head -n 1 | cut -c1-80); torch $torch_says; $((SECONDS - started)) s of ${budget} s"
failed=0
for i in "${!names[@]}"; do
    printf '  %-17s %-12s %4s s  %s\n' "${names[$i]}" "${states[$i]}" "${times[$i]}" "${notes[$i]}"
    case "${states[$i]}" in
        passed | missing) ;;
        *) failed=1 ;;
    esac
done
echo "  logs: $log_dir"
if [ "$failed" -ne 0 ]; then
    echo "gpu-check: FAILED"
    exit 1
fi
echo "gpu-check: passed"
