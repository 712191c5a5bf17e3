"""What testing native libraries in a child process costs: ``bc.probe()`` and AUTO start-up.

The probe loads NVML and NVRTC only after a child process survived loading and calling them,
and stores that verdict per library file (see ``blackwell_compat/probing/isolation.py``).  This
measures, in fresh interpreters of the running environment, taken in alternation so that machine
noise hits every case alike:

- ``bc.probe()`` (the call alone, after ``import blackwell_compat``): cold (an empty verdict
  store: the test processes run) and warm (verdicts stored);
- ``python -c pass``: plain, ``BLACKWELL_COMPAT_AUTO=false``, and ``BLACKWELL_COMPAT_AUTO=1``
  cold and warm (wall time of the whole interpreter).

Usage: ``python benchmarks/bench_probe_isolation.py [ROUNDS]`` (default 15).  Needs the package
installed in the running interpreter's environment (the start-up hook included).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PROBE = (
    "import time\n"
    "import blackwell_compat as bc\n"
    "t = time.perf_counter()\n"
    "bc.probe()\n"
    "print((time.perf_counter() - t) * 1000)\n"
)


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    scratch = tempfile.mkdtemp(prefix="bc-bench-isolation-")
    try:
        warm = os.path.join(scratch, "warm")
        fresh = iter(range(10**9))

        def cold() -> str:
            return os.path.join(scratch, f"cold-{next(fresh)}")

        python = sys.executable
        wall([python, "-c", PROBE], environment(BLACKWELL_COMPAT_CACHE_DIR=warm))
        probe: dict[str, list[float]] = {"cold": [], "warm": []}
        start: dict[str, list[float]] = {
            "plain": [],
            "AUTO=false": [],
            "AUTO=1 cold": [],
            "AUTO=1 warm": [],
        }
        for _ in range(rounds):
            for case, store in (("cold", cold()), ("warm", warm)):
                out = subprocess.run(
                    [python, "-c", PROBE],
                    env=environment(BLACKWELL_COMPAT_CACHE_DIR=store),
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                probe[case].append(float(out.strip().splitlines()[-1]))
            start["plain"].append(wall([python, "-c", "pass"], environment()))
            start["AUTO=false"].append(
                wall([python, "-c", "pass"], environment(BLACKWELL_COMPAT_AUTO="false"))
            )
            for case, store in (("AUTO=1 cold", cold()), ("AUTO=1 warm", warm)):
                env = environment(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_CACHE_DIR=store)
                start[case].append(wall([python, "-c", "pass"], env))
        print(f"{rounds} rounds, {python}")
        for case, values in probe.items():
            print(
                f"bc.probe() {case:5s}            median {statistics.median(values):7.1f} ms"
                f"  min {min(values):7.1f} ms"
            )
        for case, values in start.items():
            print(
                f"python -c pass {case:12s}  median {statistics.median(values):7.1f} ms"
                f"  min {min(values):7.1f} ms"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
