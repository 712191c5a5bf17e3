"""Add up the JUnit reports the test sessions wrote: ``python junit_summary.py REPORT_DIR``.

Prints one line per report, then the total as its last line, in the plain form
``total: N passed, N failed, N skipped``.  Exit status 1 when ``--require-tests`` is given and
no report exists or no test ran; failures themselves are nox's to report (its exit status).
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def counts(report: Path) -> tuple[int, int, int, float]:
    """(passed, failed, skipped, seconds) of one pytest JUnit report; errors count as failed."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    passed = failed = skipped = 0
    seconds = 0.0
    for suite in suites:
        tests = int(suite.get("tests", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        passed += tests - bad - skip
        failed += bad
        skipped += skip
        seconds += float(suite.get("time", 0.0))
    return passed, failed, skipped, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, help="folder of <session>.xml reports")
    parser.add_argument("--require-tests", action="store_true", help="fail when no test ran")
    args = parser.parse_args(argv)

    reports = sorted(args.reports.glob("*.xml")) if args.reports.is_dir() else []
    total = [0, 0, 0]
    for report in reports:
        try:
            passed, failed, skipped, seconds = counts(report)
        except (ET.ParseError, ValueError) as exc:
            print(f"{report.stem}: unreadable report ({exc})")
            total[1] += 1
            continue
        print(
            f"{report.stem}: {passed} passed, {failed} failed, {skipped} skipped in {seconds:.0f} s"
        )
        total[0] += passed
        total[1] += failed
        total[2] += skipped
    if not reports:
        print(f"no test report under {args.reports}")
    print(f"total: {total[0]} passed, {total[1]} failed, {total[2]} skipped")
    if args.require_tests and total[0] + total[1] == 0:
        print("no test ran", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
