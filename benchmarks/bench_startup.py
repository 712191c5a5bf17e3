"""Interpreter start-up with blackwell-compat installed and BLACKWELL_COMPAT_AUTO unset.

Two fresh virtual environments of the running interpreter: one with blackwell-compat installed
from a wheel built from this checkout (its start-up hook ``zz_blackwell_compat_autostart.pth``
in site-packages), one without.  Two measurements, taken in alternation so that machine noise
hits both sides alike:

1. end to end: CPU time (user + system, from the kernel) of ``python -c pass``; the figure is
   the median of the ratios of back-to-back pairs;
2. the part that differs: the CPU time ``site.main()`` takes in a fresh interpreter of each venv
   (``python -S`` then ``site.main()``, which is what start-up runs); the median difference is
   the hook's cost, and ``1 + cost / start-up`` the ratio it implies.

The first is the literal comparison but carries the machine's noise (about +-1% on a busy
machine); the second isolates what the package adds.  Both are printed; the target is < 1.02.
For scale it also prints what activation (``BLACKWELL_COMPAT_AUTO=1``) costs per interpreter in
the current environment.

Usage: ``python benchmarks/bench_startup.py [ROUNDS]`` (default 300; needs setuptools and pip
in the running interpreter; works offline).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.02
HOOK = "zz_blackwell_compat_autostart.pth"
SITE_TIMER = (
    "import time\nt = time.process_time()\nimport site\nsite.main()\n"
    "print(time.process_time() - t)\n"
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BLACKWELL_COMPAT_", "_BLACKWELL_COMPAT_", "PIP_"))
    }
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def sh(cmd: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), cwd=cwd)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def build_wheel(work: Path) -> Path:
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "blackwell_compat",
        source / "blackwell_compat",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    code = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    out = sh([sys.executable, "-c", code, str(work / "dist")], cwd=source)
    return work / "dist" / out.strip().splitlines()[-1]


def make_venv(path: Path) -> Path:
    sh([sys.executable, "-m", "venv", "--without-pip", str(path)])
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def start_cost(python: Path, env: dict[str, str], quiet: bool = False) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one ``python -c pass``."""
    stderr = subprocess.DEVNULL if quiet else None
    start = time.perf_counter()
    process = subprocess.Popen([str(python), "-c", "pass"], env=env, stderr=stderr)
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
    else:  # Windows: wall time only
        process.wait()
        wall = cpu = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"{python} -c pass failed with {process.returncode}")
    return wall, cpu


def site_time(python: Path, env: dict[str, str]) -> float:
    out = subprocess.run(
        [str(python), "-S", "-c", SITE_TIMER], env=env, capture_output=True, text=True, check=True
    ).stdout
    return float(out)


def install(wheel: Path, python: Path) -> Path:
    sh([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
        "--no-index", "--disable-pip-version-check", str(wheel)])  # fmt: skip
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(sh([str(python), "-c", code]).strip())
    if not (purelib / HOOK).is_file():
        sys.exit(f"the wheel did not install the start-up hook into {purelib}")
    return purelib


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    env = clean_env()
    with tempfile.TemporaryDirectory(prefix="bc-bench-startup-") as tmp:
        work = Path(tmp)
        wheel = build_wheel(work)
        pythons = {"without": make_venv(work / "without"), "with": make_venv(work / "with")}
        install(wheel, pythons["with"])
        for _ in range(10):  # warm the file-system cache for both
            for python in pythons.values():
                start_cost(python, env)
        starts: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
        sites: dict[str, list[float]] = {"without": [], "with": []}
        for i in range(rounds):
            order = ["without", "with"] if i % 2 == 0 else ["with", "without"]
            for name in order:
                starts[name].append(start_cost(pythons[name], env))
            for name in order:
                sites[name].append(site_time(pythons[name], env))

    version = sys.version.split()[0]
    print(f"python -c pass, {rounds} alternating runs each, same interpreter (Python {version})")
    for label, key in (("without blackwell-compat", "without"), ("installed, AUTO unset", "with")):
        wall = [w for w, _ in starts[key]]
        cpu = [c for _, c in starts[key]]
        print(
            f"  {label:<26} wall {statistics.median(wall) * 1000:6.2f} ms (median)"
            f"  cpu {statistics.median(cpu) * 1000:6.2f} ms (median)"
            f"  site.main() {statistics.median(sites[key]) * 1e6:7.1f} us (median)"
        )
    pairs = [a[1] / b[1] for a, b in zip(starts["with"], starts["without"], strict=True) if b[1]]
    end_to_end = statistics.median(pairs)
    start_up = statistics.median(c for _, c in starts["without"])
    cost = statistics.median(a - b for a, b in zip(sites["with"], sites["without"], strict=True))
    implied = 1 + cost / start_up
    print(f"  hook cost in site.main(): {cost * 1e6:.0f} us per interpreter start")
    print(f"ratio, end to end (median of paired CPU-time ratios): {end_to_end:.4f}")
    verdict = "OK" if implied < TARGET else "ABOVE TARGET"
    print(
        f"ratio, start-up + hook cost over start-up: {implied:.4f}  (target < {TARGET}: {verdict})"
    )

    # For scale: what activation costs per interpreter in this (fully installed) environment.
    me = Path(sys.executable)
    off = [start_cost(me, env)[0] for _ in range(15)]
    on = [start_cost(me, clean_env(BLACKWELL_COMPAT_AUTO="1"), quiet=True)[0] for _ in range(15)]
    print(
        f"for scale, this environment: python -c pass {statistics.median(off) * 1000:.1f} ms, "
        f"with BLACKWELL_COMPAT_AUTO=1 {statistics.median(on) * 1000:.1f} ms (activation: "
        f"+{(statistics.median(on) - statistics.median(off)) * 1000:.0f} ms per interpreter)"
    )


if __name__ == "__main__":
    main()
