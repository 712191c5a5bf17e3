"""``doctor [--json] [--smoke]``: is this machine affected, why, and what fixes it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

DEFAULT_TIMEOUT = 120.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return value


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="diagnose this machine: affected GPUs, NVRTC, torch, patches, and the fix",
        description=(
            "Check the NVIDIA driver, the GPUs, torch's compiled archs, the NVRTC torch loads "
            "(whether PyTorch's run-time compiled kernels work on each GPU), torchaudio, "
            "Triton's ptxas, the patches and this library's environment variables, and say "
            "what to install. Risky probes run in child processes with a timeout."
        ),
        epilog=(
            "Exit status: 0 nothing failed (a machine without an NVIDIA GPU is fine), "
            "1 a check failed (for example an affected GPU), 2 usage error."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=(
            "also run tiny real workloads on each GPU, unpatched and patched (on CPU under "
            "emulation when BLACKWELL_COMPAT_EMULATE is set)"
        ),
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"limit for each child process (default {DEFAULT_TIMEOUT:g}; smoke runs get twice it)",
    )
    parser.add_argument(
        "--schema",
        action="store_true",
        help="print the JSON Schema of the --json output and exit",
    )


def _write(text: str) -> None:
    try:
        try:
            sys.stdout.write(text)
        except UnicodeEncodeError:  # a terminal that cannot show "…"
            encoding = sys.stdout.encoding or "ascii"
            sys.stdout.write(text.encode(encoding, "replace").decode(encoding))
        sys.stdout.flush()
    except BrokenPipeError:  # `doctor | head`: the reader left, nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def run(args: argparse.Namespace) -> int:
    # The doctor is imported here: it costs about 250 ms to import (measured with
    # -X importtime), which every other command would pay, since the parser loads this module.
    from ..doctor.render import load_schema, render_json, render_text

    if args.schema:
        _write(json.dumps(load_schema(), indent=2) + "\n")
        return 0
    from ..doctor import diagnose
    from ..doctor.process import Timeouts

    timeout = float(args.timeout)
    timeouts = Timeouts(facts=timeout, smoke=2 * timeout, tool=min(timeout, 30.0))
    if not args.json and sys.stderr.isatty():
        print(
            "blackwell-compat: examining this machine (torch runs in a child process)...",
            file=sys.stderr,
        )
    try:
        report = diagnose(smoke=bool(args.smoke), timeouts=timeouts)
    except Exception as exc:  # the doctor must answer, whatever the stack looks like
        traceback.print_exc(file=sys.stderr)
        print(
            f"blackwell-compat doctor: internal error: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 1
    _write(render_json(report) if args.json else render_text(report))
    return report.exit_code
