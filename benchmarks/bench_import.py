"""Cost of ``import blackwell_compat`` and of ``bc.apply()`` on a machine with no affected GPU.

Runs each command N times, interleaved so machine noise hits all of them alike, and prints the
median wall time and the difference from ``python -c pass`` (the interpreter's own start-up).
Also reports whether torch got imported.  Usage: ``python benchmarks/bench_import.py [N]``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": "pass",
    "import blackwell_compat": "import blackwell_compat",
    "import + apply()": "import blackwell_compat as bc; bc.apply()",
    "import + apply() + status()": "import blackwell_compat as bc; bc.apply(); bc.status()",
}
TORCH_CHECK = "import sys, blackwell_compat as bc; bc.apply(); print('torch' in sys.modules)"


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, code in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    print(f"{runs} runs each, median wall time (interleaved)")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:<30} {median * 1000:7.1f} ms   +{(median - base) * 1000:6.1f} ms   "
            f"ratio {median / base:5.2f}"
        )
    imported = subprocess.run(
        [sys.executable, "-c", TORCH_CHECK], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    print(f"  torch imported by import + apply(): {imported}")
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import blackwell_compat"],
        capture_output=True,
        text=True,
        env=env,
    ).stderr
    for line in out.splitlines():
        if line.rstrip().endswith("| blackwell_compat"):
            cumulative_us = int(line.split("|")[1])
            print(f"  -X importtime cumulative for blackwell_compat: {cumulative_us / 1000:.2f} ms")


if __name__ == "__main__":
    main()
