"""What blackwell-compat's start-up hook costs an interpreter, off and on (issue 22, point 1).

Run it with the interpreter of an environment that has blackwell-compat (its start-up hook
``zz_blackwell_compat_autostart.pth``) and torch installed, e.g. the ``tests-full`` session's.
Every figure comes from runs taken in pairs (plain, then the variant, then the variant first in
the next pair), so that the noise of a shared machine hits both sides alike; the targets are
judged on the median of the paired ratios (or differences), the medians are printed too.
Times are CPU times (user + system of the process and the children it waited for, from the
kernel), which a busy machine disturbs much less than wall time; wall-time medians are printed
next to them.  Every interpreter may write bytecode caches (``PYTHONDONTWRITEBYTECODE`` is
removed), and a few runs of each kind come first, so that both sides start from cached bytecode.

1. Hook unset: ``python -c pass`` in two fresh virtual environments of the base interpreter,
   one with blackwell-compat installed from a wheel built from this checkout, one without
   (also the CPU time of ``site.main()`` alone in each).  Target: < 1.02.
2. ``BLACKWELL_COMPAT_AUTO=1`` in a process that never imports torch: ``python -c pass``,
   AUTO=1 over plain.  Target: <= 1.15.
3. ``import torch``, AUTO=1 over plain, on a machine with no affected GPU.  Target: <= 1.05.
4. An affected GPU (``BLACKWELL_COMPAT_EMULATE=sm_121``) served by the NVRTC remedy from the
   project's cache (``fetch nvrtc`` into a temporary cache folder): ``import torch`` with AUTO=1,
   minus plain ``import torch``, with the stored verdicts warm.  Target: <= 150 ms.
5. Cold: the same three AUTO=1 runs with the verdict store deleted before each run (the first
   start after an install or an upgrade: the NVML and NVRTC test processes run).

Usage: ``python benchmarks/bench_startup.py [--rounds 100] [--torch-rounds 21]
[--cold-rounds 5] [--wheel NVRTC_WHEEL]``.  Needs setuptools and pip in the running interpreter;
``fetch nvrtc`` downloads NVIDIA's wheel with pip unless ``--wheel`` names it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOOK = "zz_blackwell_compat_autostart.pth"
SITE_TIMER = (
    "import time\nt = time.process_time()\nimport site\nsite.main()\n"
    "print(time.process_time() - t)\n"
)
TARGET_HOOK_OFF = 1.02
TARGET_PASS = 1.15
TARGET_TORCH = 1.05
TARGET_SERVED_MS = 150.0
STORE = "native-verdicts-v1.json"
Samples = list[tuple[float, float]]
"""(wall, CPU) seconds of each run."""
LADDER = (
    "import torch, blackwell_compat as bc; "
    "print('; '.join(f'{g.gpu}: {g.rung}: {g.why}' for g in bc.ladder()) "
    "or 'no GPU, real or emulated: nothing to serve')"
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BLACKWELL_COMPAT_", "_BLACKWELL_COMPAT_", "PIP_"))
    }
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # interpreters start from cached bytecode, as users'
    env.update(extra)
    return env


def sh(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        cmd, capture_output=True, text=True, env=clean_env() if env is None else env, cwd=cwd
    )
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def run_once(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system, children included) of one command."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr.read()
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
    else:  # Windows: wall time only
        process.wait()
        wall = cpu = time.perf_counter() - start
    if process.returncode != 0 or b"Warning" in stderr:
        sys.exit(
            f"{' '.join(command)} failed or warned (exit {process.returncode}):\n"
            + stderr.decode("utf-8", "replace")
        )
    return wall, cpu


# -- 1. hook unset: with and without the package ----------------------------------------------


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


def site_time(python: Path, env: dict[str, str]) -> float:
    out = subprocess.run(
        [str(python), "-S", "-c", SITE_TIMER], env=env, capture_output=True, text=True, check=True
    ).stdout
    return float(out)


def install(wheel: Path, python: Path) -> None:
    sh([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
        "--no-index", "--disable-pip-version-check", str(wheel)])  # fmt: skip
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(sh([str(python), "-c", code]).strip())
    if not (purelib / HOOK).is_file():
        sys.exit(f"the wheel did not install the start-up hook into {purelib}")


def hook_unset(rounds: int) -> None:
    env = clean_env()
    with tempfile.TemporaryDirectory(prefix="bc-bench-startup-") as tmp:
        work = Path(tmp)
        wheel = build_wheel(work)
        pythons = {"without": make_venv(work / "without"), "with": make_venv(work / "with")}
        install(wheel, pythons["with"])
        for _ in range(10):  # warm the file-system cache for both
            for python in pythons.values():
                run_once([str(python), "-c", "pass"], env)
        starts: dict[str, Samples] = {"without": [], "with": []}
        sites: dict[str, list[float]] = {"without": [], "with": []}
        for i in range(rounds):
            order = ["without", "with"] if i % 2 == 0 else ["with", "without"]
            for name in order:
                starts[name].append(run_once([str(pythons[name]), "-c", "pass"], env))
            for name in order:
                sites[name].append(site_time(pythons[name], env))
    print(f"1. hook unset: python -c pass in two fresh venvs, {rounds} alternating runs each")
    for label, key in (("without blackwell-compat", "without"), ("installed, AUTO unset", "with")):
        print(
            f"   {label:<26} {describe(starts[key])}"
            f"  site.main() {statistics.median(sites[key]) * 1e6:7.1f} us"
        )
    start_up = statistics.median(c for _, c in starts["without"])
    cost = statistics.median(a - b for a, b in zip(sites["with"], sites["without"], strict=True))
    implied = 1 + cost / start_up
    print(f"   hook cost in site.main(): {cost * 1e6:.0f} us per interpreter start")
    print(
        f"   ratio (start-up + hook cost) / start-up: {implied:.4f}  "
        f"(target < {TARGET_HOOK_OFF}: {verdict(implied < TARGET_HOOK_OFF)})"
    )


# -- 2 to 5: AUTO=1 in this environment -------------------------------------------------------


def describe(samples: Samples) -> str:
    wall = statistics.median(w for w, _ in samples) * 1000
    cpu = statistics.median(c for _, c in samples) * 1000
    return f"cpu {cpu:8.1f} ms  wall {wall:8.1f} ms"


def verdict(ok: bool) -> str:
    return "OK" if ok else "ABOVE TARGET"


def alternate(
    rounds: int,
    command: list[str],
    plain: dict[str, str],
    variant: dict[str, str],
    before_variant: Callable[[], None] | None = None,
) -> tuple[Samples, Samples]:
    """*rounds* pairs of runs of *command*, one in each environment, alternating which goes
    first."""
    a: Samples = []
    b: Samples = []
    for i in range(rounds):
        for side in ("plain", "variant") if i % 2 == 0 else ("variant", "plain"):
            if side == "plain":
                a.append(run_once(command, plain))
            else:
                if before_variant is not None:
                    before_variant()
                b.append(run_once(command, variant))
    return a, b


def ratio_line(name: str, plain: Samples, variant: Samples) -> float:
    """Prints the medians and two ratios; returns the median of the ratios of the pairs run
    back to back (CPU time), the figure least disturbed by a machine whose load drifts."""
    cpu_ratio = statistics.median(c for _, c in variant) / statistics.median(c for _, c in plain)
    wall_ratio = statistics.median(w for w, _ in variant) / statistics.median(w for w, _ in plain)
    paired = statistics.median(v[1] / p[1] for p, v in zip(plain, variant, strict=True))
    print(f"   plain      {describe(plain)}")
    print(f"   {name:<10} {describe(variant)}")
    print(
        f"   {name}/plain: median of paired cpu ratios {paired:.3f}; ratio of medians: "
        f"cpu {cpu_ratio:.3f}, wall {wall_ratio:.3f}"
    )
    return paired


def added_line(name: str, plain: Samples, variant: Samples) -> float:
    """Prints the medians and what *variant* adds; returns the median of the paired CPU-time
    differences, in ms."""
    cpu = (statistics.median(c for _, c in variant) - statistics.median(c for _, c in plain)) * 1000
    wall = (
        statistics.median(w for w, _ in variant) - statistics.median(w for w, _ in plain)
    ) * 1000
    paired = statistics.median(v[1] - p[1] for p, v in zip(plain, variant, strict=True)) * 1000
    print(f"   plain      {describe(plain)}")
    print(f"   {name:<10} {describe(variant)}")
    print(
        f"   added by {name}: median of paired cpu differences {paired:+.1f} ms; difference of "
        f"medians: cpu {cpu:+.1f} ms, wall {wall:+.1f} ms"
    )
    return paired


def fetch_nvrtc(cache: Path, wheel: str | None) -> None:
    command = [sys.executable, "-m", "blackwell_compat", "fetch", "nvrtc"]
    if wheel:
        command += ["--wheel", wheel]
    sh(command, env=clean_env(BLACKWELL_COMPAT_CACHE_DIR=str(cache)))


def with_auto(args: argparse.Namespace) -> None:
    python = [sys.executable]
    with tempfile.TemporaryDirectory(prefix="bc-bench-cache-") as tmp:
        cache = Path(tmp)
        os.chmod(cache, 0o700)
        store = cache / STORE

        def forget() -> None:
            store.unlink(missing_ok=True)

        plain = clean_env(BLACKWELL_COMPAT_CACHE_DIR=str(cache))
        auto = clean_env(BLACKWELL_COMPAT_CACHE_DIR=str(cache), BLACKWELL_COMPAT_AUTO="1")
        served = dict(auto, BLACKWELL_COMPAT_EMULATE="sm_121")
        fetch_nvrtc(cache, args.wheel)
        print("   what serves (bc.ladder() after import torch):")
        for env in (auto, served):  # fill the verdict store, and show what serves
            answer = subprocess.run(
                [*python, "-c", LADDER], env=env, capture_output=True, text=True, check=True
            )
            emulated = "BLACKWELL_COMPAT_EMULATE" in env
            label = "emulated sm_121" if emulated else "AUTO=1, no emulation"
            print(f"   - {label}: {answer.stdout.strip()}")
            if answer.stderr.strip():
                print(f"     stderr: {answer.stderr.strip()}")
        passing = [*python, "-c", "pass"]
        importing = [*python, "-c", "import torch"]
        for env in (plain, auto):
            for _ in range(3):
                run_once(passing, env)
                run_once(importing, env)

        print(f"2. python -c pass, AUTO=1 vs plain, {args.rounds} alternating runs each")
        a, b = alternate(args.rounds, passing, plain, auto)
        ratio = ratio_line("AUTO=1", a, b)
        print(f"   target <= {TARGET_PASS}: {verdict(ratio <= TARGET_PASS)}")

        n = args.torch_rounds
        print(f"3. import torch, AUTO=1 vs plain, no affected GPU, {n} alternating runs each")
        a, b = alternate(n, importing, plain, auto)
        ratio = ratio_line("AUTO=1", a, b)
        print(f"   target <= {TARGET_TORCH}: {verdict(ratio <= TARGET_TORCH)}")

        print(
            f"4. import torch, AUTO=1 with an emulated sm_121 served by the NVRTC remedy from the "
            f"cache (warm), vs plain, {n} alternating runs each"
        )
        a, b = alternate(n, importing, plain, served)
        added = added_line("served", a, b)
        print(f"   target <= {TARGET_SERVED_MS:.0f} ms: {verdict(added <= TARGET_SERVED_MS)}")

        c = args.cold_rounds
        print(f"5. cold (verdict store deleted before each run), {c} alternating runs each")
        print("   python -c pass:")
        a, b = alternate(c, passing, plain, auto, forget)
        ratio_line("AUTO=1", a, b)
        print("   import torch, no affected GPU:")
        a, b = alternate(c, importing, plain, auto, forget)
        ratio_line("AUTO=1", a, b)
        print("   import torch, emulated sm_121 served from the cache:")
        a, b = alternate(c, importing, plain, served, forget)
        added_line("served", a, b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="runs of python -c pass")
    parser.add_argument("--torch-rounds", type=int, default=21, help="runs of import torch")
    parser.add_argument("--cold-rounds", type=int, default=5, help="runs with no stored verdicts")
    parser.add_argument("--wheel", help="NVIDIA's NVRTC wheel for `fetch nvrtc --wheel`")
    parser.add_argument("--skip-hook-unset", action="store_true", help="leave out part 1")
    args = parser.parse_args()
    version = sys.version.split()[0]
    print(
        f"bench_startup: Python {version}, {sys.executable}, {os.cpu_count()} CPUs; medians of "
        "alternating runs (CPU time = user + system, children included)"
    )
    if not args.skip_hook_unset:
        hook_unset(args.rounds)
    with_auto(args)


if __name__ == "__main__":
    main()
