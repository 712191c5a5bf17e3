"""``audit [--fix] [--json] [--arch ARCH] [--device DEV] -- script.py [args]``

Runs the program on the CPU as if on an affected GPU (:mod:`blackwell_compat.audit`) and lists
every call site that reaches a Jiterator kernel, grouped by site with counts.  The program runs
to its end: each recorded call is computed with PyTorch's CPU kernel.

Output: the program's own stdout and stderr pass through unchanged; the report goes to stderr
(text), or to stdout with ``--json``, in which case the program's stdout (file descriptor 1
itself, so child processes and C code included) is passed through on stderr so that stdout
holds only the JSON document.

Exit status: 1 when a call site would fail on the emulated GPU (after ``--fix``: when one is
left); else 3 when a process of the program could not be audited; else the program's own exit
code; 2 for a usage error (nothing is run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import ConfigError


def add_parser(subparsers: Any) -> None:
    from . import program_name

    parser = subparsers.add_parser(
        "audit",
        help="run a program on the CPU as if on an affected GPU and list every Jiterator call",
        description=(
            "Run a Python program on the CPU under emulation of a GPU the installed NVRTC does "
            "not know, and list every call site that reaches a Jiterator kernel (op, dtype, "
            "shapes, the first frame outside torch), grouped by site with counts. The program "
            "runs to its end with correct results, so one run finds every site. See "
            "docs/audit.md for how to read the report."
        ),
        epilog=(
            f"Examples: {program_name()} audit -- infer.py --text hello; "
            f"{program_name()} audit --fix --json -m mypackage.cli. "
            "Exit status: 1 when a call site would fail on the emulated GPU (after --fix: "
            "when one remains); else 3 when a process of the program could not be audited; "
            "else the program's own exit code; 2 for a usage error."
        ),
    )
    parser.add_argument(
        "--fix",
        action="store_true",
        help="apply the patches first (the op guard included) and report what remains",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout (the program's stdout goes to stderr)",
    )
    parser.add_argument(
        "--arch",
        default="sm_121",
        help="the GPU architecture to emulate (default sm_121, DGX Spark / GB10)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        type=str.lower,
        choices=("cpu", "cuda"),
        help=(
            "the device that plays the GPU: 'cpu' (default: CPU tensors fail, for programs that "
            "run on the CPU) or 'cuda' (an emulated CUDA device backed by CPU memory: the "
            'program\'s own GPU path runs, `.to("cuda")` and torch.cuda included, and only its '
            "tensors fail; use it for a GPU program)"
        ),
    )
    parser.add_argument(
        "-m",
        dest="module",
        metavar="MODULE",
        help="run a module (like python -m MODULE) instead of a script",
    )
    parser.add_argument(
        "program",
        nargs=argparse.REMAINDER,
        metavar="-- SCRIPT [ARGS...]",
        help="the script to run and its arguments, after '--'",
    )


def target_from(args: argparse.Namespace) -> Any:
    from ..audit import Target

    rest = list(args.program)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.module:
        return Target("module", args.module, tuple(rest))
    if not rest:
        raise ConfigError("audit: give a script to run (audit -- script.py [args]) or -m MODULE")
    return Target("script", rest[0], tuple(rest[1:]))


class _ReportStdout:
    """While the program runs, file descriptor 1 is stderr, for it and every process it starts:
    output written below Python (``os.write(1, ...)``, C code, child processes) cannot get into
    the JSON document, which goes to the real stdout when the program ends (or calls
    ``os._exit``)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.saved: int | None = None

    def __enter__(self) -> _ReportStdout:
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (tests capture it)
            return self
        sys.stdout.flush()
        sys.stderr.flush()
        self.fd, self.saved = fd, os.dup(fd)
        os.dup2(sys.stderr.fileno(), fd)
        return self

    def restore(self) -> None:
        if self.fd is not None and self.saved is not None:
            sys.stdout.flush()
            os.dup2(self.saved, self.fd)
            os.close(self.saved)
            self.fd = self.saved = None

    def __exit__(self, *exc: object) -> None:
        self.restore()


def run(args: argparse.Namespace) -> int:
    # Imported here, as the doctor is: the parser loads every command module (about 100 ms).
    from .. import audit

    target = target_from(args)
    # The streams as they are now: the program's own replace sys.stdout/sys.stderr meanwhile,
    # and a report made when the program calls os._exit is written from inside it.
    real_stdout, real_stderr = sys.stdout, sys.stderr
    if args.json:
        redirect = _ReportStdout()

        def emit_json(report: Any) -> None:
            redirect.restore()
            print(json.dumps(report.as_dict(), indent=2), file=real_stdout, flush=True)

        with redirect:
            report = audit.run(
                target,
                arch=args.arch,
                fix=args.fix,
                device=args.device,
                stdout=sys.stderr,
                on_exit=emit_json,
            )
        emit_json(report)
    else:

        def emit_text(report: Any) -> None:
            real_stdout.flush()
            print(audit.render(report), file=real_stderr, flush=True)

        report = audit.run(
            target, arch=args.arch, fix=args.fix, device=args.device, on_exit=emit_text
        )
        emit_text(report)
    return report.exit_status
