"""``scripts/gpu-check.sh``: without an NVIDIA GPU it says so and exits 0 at once; with one it
runs its steps within their time shares and prints one summary.

The machines the suite runs on have no GPU, so the GPU path runs against stand-ins: an
``nvidia-smi`` that lists a GPU and a ``PYTHON`` that answers the torch check and plays each
step (passing, failing or hanging, as the test asks), in a copy of the script's checkout whose
``benchmarks/`` the test controls.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"

FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$FAKE_LOG"
case "$*" in
    *"import torch"*) echo "$FAKE_TORCH" ;;
    *"-m pytest -m gpu"*) echo "7 passed, 2 deselected in 3.10s"; exit "${FAKE_TESTS_RC:-0}" ;;
    *bench_llama_decode*) echo "remedy / plain 1.00x"; exit 0 ;;
    *bench_fuser*) echo "fused / eager 1.02x"; exit 0 ;;
    *bench_guard*) sleep "${FAKE_GUARD_SLEEP:-0}"; echo "guard / plain 1.18x"; exit 0 ;;
esac
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def base_path() -> str:
    """Folders of the system's own tools, none of which holds an nvidia-smi."""
    folders = [d for d in ("/usr/local/bin", "/usr/bin", "/bin") if os.path.isdir(d)]
    found = shutil.which("nvidia-smi", path=os.pathsep.join(folders))
    assert found is None, f"this test needs a machine without nvidia-smi, found {found}"
    return os.pathsep.join(folders)


def run(script: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_without_nvidia_smi_it_says_so_and_exits_0_at_once():
    started = time.monotonic()
    done = run(SCRIPT, {"PATH": base_path(), "HOME": os.environ.get("HOME", "/")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "gpu-check: no NVIDIA GPU on this machine (nvidia-smi not found): nothing to check"
    )
    assert time.monotonic() - started < 5


def test_an_nvidia_smi_that_lists_no_gpu_is_no_gpu(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    executable(tools / "nvidia-smi", "#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    env = {"PATH": f"{tools}{os.pathsep}{base_path()}"}
    done = run(SCRIPT, env)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == "gpu-check: nvidia-smi lists no GPU on this machine: nothing to check"
    )


@pytest.fixture
def gpu_machine(tmp_path):
    """A copy of the checkout's script with benchmarks the test chooses, an nvidia-smi that
    lists a GPU and a stand-in interpreter; returns (script, env, log of the interpreter)."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, checkout / "scripts" / "gpu-check.sh")
    (checkout / "benchmarks").mkdir()
    for name in ("bench_llama_decode.py", "bench_guard.py"):
        (checkout / "benchmarks" / name).write_text("# played by the stand-in interpreter\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    executable(
        tools / "nvidia-smi",
        "#!/bin/sh\necho 'GPU 0: NVIDIA GB10 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n",
    )
    python = executable(tools / "fake-python", FAKE_PYTHON)
    log = tmp_path / "python.log"
    env = {
        "PATH": f"{tools}{os.pathsep}{base_path()}",
        "PYTHON": str(python),
        "FAKE_LOG": str(log),
        "FAKE_TORCH": "2.11.0+cu130 True 1",
        "TMPDIR": str(tmp_path),
    }
    return checkout / "scripts" / "gpu-check.sh", env, log


def summary(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("gpu-check summary:"))
    return lines[start:]


def test_with_a_gpu_it_runs_every_step_and_prints_one_summary(gpu_machine):
    script, env, log = gpu_machine
    done = run(script, env)
    assert done.returncode == 0, done.stdout + done.stderr
    head, *rows, logs, verdict = summary(done.stdout)
    assert head.startswith("gpu-check summary: GPU 0: NVIDIA GB10 (UUID: GPU-0000")
    assert "torch 2.11.0+cu130 True 1;" in head and "of 440 s" in head
    assert [row.split()[:3] for row in rows] == [
        ["gpu", "tests", "passed"],
        ["remedy", "benchmark", "passed"],
        ["fuser", "benchmark", "missing"],
        ["guard", "benchmark", "passed"],
    ]
    assert rows[0].endswith("7 passed, 2 deselected in 3.10s")
    assert rows[1].endswith("remedy / plain 1.00x") and rows[3].endswith("guard / plain 1.18x")
    assert rows[2].endswith("benchmarks/bench_fuser.py is not in this checkout")
    assert logs.startswith("  logs: ") and verdict == "gpu-check: passed"
    calls = log.read_text().splitlines()
    assert calls[1] == "-m pytest -m gpu -q -p no:cacheprovider tests"
    assert [c.split()[0] for c in calls[2:]] == [
        "benchmarks/bench_llama_decode.py",
        "benchmarks/bench_guard.py",
    ]


def test_the_fuser_benchmark_runs_when_it_is_there(gpu_machine):
    script, env, _ = gpu_machine
    (script.parent.parent / "benchmarks" / "bench_fuser.py").write_text("# stand-in\n")
    done = run(script, env)
    assert done.returncode == 0, done.stdout
    rows = summary(done.stdout)[1:5]
    assert rows[2].split()[:3] == ["fuser", "benchmark", "passed"]
    assert rows[2].endswith("fused / eager 1.02x")


def test_a_failing_step_fails_the_check(gpu_machine):
    script, env, _ = gpu_machine
    done = run(script, dict(env, FAKE_TESTS_RC="1"))
    assert done.returncode == 1
    rows = summary(done.stdout)
    assert rows[1].split()[:4] == ["gpu", "tests", "failed", "(1)"]
    assert rows[-1] == "gpu-check: FAILED"


def test_a_step_that_hangs_is_stopped_within_the_budget(gpu_machine):
    script, env, _ = gpu_machine
    started = time.monotonic()
    done = run(script, dict(env, FAKE_GUARD_SLEEP="600", GPU_CHECK_BUDGET_S="20"), timeout=90)
    assert done.returncode == 1
    assert time.monotonic() - started < 45  # 20 s of budget, at most 10 s more to kill
    rows = summary(done.stdout)
    assert rows[4].split()[:4] == ["guard", "benchmark", "timed", "out"], rows
    assert "of 20 s" in rows[0]


def test_an_interpreter_without_a_cuda_torch_is_a_failure_named_at_once(gpu_machine):
    script, env, _ = gpu_machine
    done = run(script, dict(env, FAKE_TORCH="2.11.0+cpu False 0"))
    assert done.returncode == 1
    assert "cannot use them: 2.11.0+cpu False 0" in done.stdout
    assert "set PYTHON to an interpreter with a CUDA torch" in done.stdout
