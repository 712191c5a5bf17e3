"""``benchmarks/bench_fuser.py`` runs, with tiny sizes, and its figures hold together.

The figures themselves (time ratios) depend on the machine and are not asserted; the kernel
counts are: the WaveNet gate is 4 ops unfused (add, tanh, sigmoid, mul) and 2 fused (the add,
which a slice separates from the rest, and one fusion group).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_fuser.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(ROOT),
        check=False,
    )


@pytest.mark.slow
def test_runs_with_tiny_sizes_and_counts_the_kernels() -> None:
    done = _run("--rounds", "1", "--calls", "1", "--size", "2", "--cpu-only", "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)["results"]["cpu"]
    gate, step = figures["wavenet gate"], figures["robotics step"]
    assert (gate["kernels_unfused"], gate["kernels_fused"]) == (4, 2)
    assert (gate["fusion_groups_unfused"], gate["fusion_groups_fused"]) == (0, 1)
    assert step["fusion_groups_unfused"] == 0 and step["fusion_groups_fused"] == 8
    assert step["kernels_fused"] < step["kernels_unfused"]
    for f in (gate, step):
        assert f["fused_us"] > 0 and f["unfused_us"] > 0
        assert f["fused_over_unfused"] == pytest.approx(f["fused_us"] / f["unfused_us"])


@pytest.mark.slow
def test_the_text_report_and_bad_arguments() -> None:
    done = _run("--rounds", "1", "--calls", "1", "--size", "1", "--cpu-only")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("CPU (stand-in: CPU fusion on, no LLVM), size 1")
    assert "fused / unfused" in lines[2] and "kernels per call: fused 2" in lines[2]
    bad = _run("--size", "0")
    assert bad.returncode == 2 and "--size must be a positive integer, got 0" in bad.stderr
