"""Run torchaudio's own CUDA test modules three ways and count the outcomes (issue 23, point 4).

On a CPU-only machine torchaudio's ``*_cuda_test.py`` modules skip (``skipIfNoCuda``).  Under the
pytest plugin's emulated CUDA device they run their GPU code path; this tool runs each module

* ``plain``:    no emulation (they skip on a CPU-only machine),
* ``emulated``: ``--blackwell-emulate-device=cuda`` (device tensors fail where the GPU fails),
* ``patched``:  ``--blackwell-emulate-device=cuda --blackwell-compat=on`` (the patches applied),

each in its own ``pytest`` process under a time limit, and prints passed / failed / errors /
skipped per module and mode, then the failures of the emulated modes split into the expected
NVRTC error (``invalid value for --gpu-architecture``) and every other kind (one example each:
these are emulation gaps or real test failures to look at).  A run that dies by a signal or
leaves no report is printed as ``ABORTED``: no test may abort the interpreter.
``--cpu-form-compare MODULE`` adds a ``cpu-form`` run (``--blackwell-emulate=ARCH``, where CPU
tensors fail) of another module, e.g. ``functional_cpu_test.py -k convolve``, to compare it with
the device form.

It needs torchaudio's test sources at the installed torchaudio version (the ``test/`` folder of
pytorch/audio, e.g. ``git archive v2.11.0 test | tar -x -C SRC``) and the two packages its test
harness imports, ``parameterized`` and ``expecttest`` (``scipy`` and ``librosa`` for some
modules).  None of these is a dependency of this project, which is why CI does not run it.

Usage::

    python scripts/torchaudio_cuda_suite.py SRC [--module functional/functional_cuda_test.py ...]
        [-k EXPR] [--timeout 900] [--arch sm_121] [--json OUT.json]
        [--cpu-form-compare functional/functional_cpu_test.py]

``SRC`` holds ``test/torchaudio_unittest`` (or is that ``test`` folder itself).  Without
``--module`` every ``*cuda_test.py`` under it runs.  The child processes use this interpreter;
``CI`` and ``BLACKWELL_COMPAT_*`` are removed from their environment (torchaudio's harness turns
skips into failures when ``CI`` is set).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MODES", "Outcome", "classify", "main", "parse_report", "run_module"]

NVRTC_ARCH = "invalid value for --gpu-architecture"
MODES = {
    "plain": [],
    "emulated": ["--blackwell-emulate-device=cuda"],
    "patched": ["--blackwell-emulate-device=cuda", "--blackwell-compat=on"],
}


@dataclass
class Outcome:
    """The counts of one module in one mode, and the failures' messages by test id."""

    module: str
    mode: str
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    xfailed: int = 0
    seconds: float = 0.0
    status: str = "ok"
    problems: dict[str, str] = field(default_factory=dict)


def classify(text: str) -> str:
    """``nvrtc`` for the expected NVRTC error, else the exception's type and the start of its
    message with numbers blanked (so one kind groups the same error of many parametrisations)."""
    if NVRTC_ARCH in text:
        return "nvrtc"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # pytest's long form marks the raising line with "E   "; its first such line names the error
    marked = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
    head = marked[0] if marked else (lines[-1] if lines else "(no message)")
    head = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", head)
    return head[:140]


def parse_report(report: Path, outcome: Outcome) -> None:
    """Fill ``outcome`` from one pytest JUnit report."""
    root = ET.parse(report).getroot()
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        failure = case.find("failure")
        error = case.find("error")
        if failure is not None:
            outcome.failed += 1
            outcome.problems[test_id] = f"{failure.get('message', '')}\n{failure.text or ''}"
        elif error is not None:
            outcome.errors += 1
            outcome.problems[test_id] = f"{error.get('message', '')}\n{error.text or ''}"
        elif (skipped := case.find("skipped")) is not None:
            # unittest's expectedFailure reaches the report as a skip of type pytest.xfail
            if skipped.get("type") == "pytest.xfail":
                outcome.xfailed += 1
            else:
                outcome.skipped += 1
        else:
            outcome.passed += 1


def _child_env(test_root: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("BLACKWELL_COMPAT_")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(test_root), env.get("PYTHONPATH")]))
    return env


def run_module(
    test_root: Path, module: str, mode: str, extra: list[str], timeout: float, keyword: str | None
) -> Outcome:
    """Run one module in one mode in its own pytest process; never raises for a bad run."""
    outcome = Outcome(module=module, mode=mode)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += ["--rootdir", str(test_root), f"--junitxml={report}", "-o", "junit_family=xunit1"]
        cmd += extra + (["-k", keyword] if keyword else [])
        cmd.append(str(test_root / "torchaudio_unittest" / module))
        start = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                cwd=test_root,
                env=_child_env(test_root),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            outcome.status = f"TIMEOUT after {timeout:.0f} s"
            outcome.seconds = time.monotonic() - start
            return outcome
        outcome.seconds = time.monotonic() - start
        if proc.returncode < 0 or proc.returncode >= 128:
            outcome.status = f"ABORTED (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
        elif not report.exists():
            tail = (proc.stdout + proc.stderr).strip()[-300:]
            outcome.status = f"NO REPORT (exit {proc.returncode}): {tail}"
        if report.exists():
            parse_report(report, outcome)
    return outcome


def _find_root(src: Path) -> Path:
    for candidate in (src / "test", src):
        if (candidate / "torchaudio_unittest").is_dir():
            return candidate
    raise SystemExit(f"{src}: no test/torchaudio_unittest folder (torchaudio's test sources)")


def _print_table(outcomes: list[Outcome]) -> None:
    head = f"{'module':58} {'mode':9} {'pass':>5} {'fail':>5} {'err':>4} {'skip':>5}"
    print(f"{head} {'xfail':>5} {'sec':>7}  status")
    for o in outcomes:
        print(
            f"{o.module:58} {o.mode:9} {o.passed:5} {o.failed:5} {o.errors:4} {o.skipped:5} "
            f"{o.xfailed:5} {o.seconds:7.1f}  {o.status}"
        )
    totals: dict[str, Counter[str]] = {}
    for o in outcomes:
        c = totals.setdefault(o.mode, Counter())
        c.update(passed=o.passed, failed=o.failed, errors=o.errors, skipped=o.skipped)
        c.update(xfailed=o.xfailed)
    for mode, c in totals.items():
        print(
            f"{'TOTAL':58} {mode:9} {c['passed']:5} {c['failed']:5} {c['errors']:4} "
            f"{c['skipped']:5} {c['xfailed']:5}"
        )


def _print_breakdown(outcomes: list[Outcome]) -> None:
    for mode in [m for m in dict.fromkeys(o.mode for o in outcomes) if m != "plain"]:
        kinds: Counter[str] = Counter()
        example: dict[str, str] = {}
        for o in (o for o in outcomes if o.mode == mode):
            for test_id, text in o.problems.items():
                kind = classify(text)
                kinds[kind] += 1
                example.setdefault(kind, f"{o.module} {test_id}")
        print(f"\n{mode}: {sum(kinds.values())} failed or errored, by kind")
        for kind, n in kinds.most_common():
            print(f"  {n:5}  {kind}\n         e.g. {example[kind]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="folder with torchaudio's test/ sources")
    parser.add_argument("--module", action="append", help="path under torchaudio_unittest")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression for every run")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--mode", action="append", choices=list(MODES), help="default: all")
    parser.add_argument("--arch", default="sm_121", help="architecture of the cpu-form run")
    parser.add_argument("--cpu-form-compare", metavar="MODULE", help="also run MODULE in cpu form")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    args = parser.parse_args(argv)

    root = _find_root(args.src)
    base = root / "torchaudio_unittest"
    modules = args.module or sorted(str(p.relative_to(base)) for p in base.rglob("*cuda_test.py"))
    outcomes: list[Outcome] = []
    for module in modules:
        for mode in args.mode or list(MODES):
            outcome = run_module(root, module, mode, MODES[mode], args.timeout, args.keyword)
            outcomes.append(outcome)
            print(
                f"{module} [{mode}]: {outcome.passed} passed, {outcome.failed} failed, "
                f"{outcome.errors} errors, {outcome.skipped} skipped, {outcome.xfailed} xfailed, "
                f"{outcome.status}",
                file=sys.stderr,
                flush=True,
            )
    if args.cpu_form_compare:
        extra = [f"--blackwell-emulate={args.arch}"]
        outcomes.append(
            run_module(root, args.cpu_form_compare, "cpu-form", extra, args.timeout, args.keyword)
        )
    print()
    _print_table(outcomes)
    _print_breakdown(outcomes)
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    return 1 if any(o.status.startswith(("ABORTED", "NO REPORT")) for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
