"""``audit``: run a program on the CPU as if on an affected GPU and list every Jiterator call site.

The program runs in this interpreter under :func:`blackwell_compat.emulate` with a recorder in
the dispatcher (:func:`blackwell_compat.ops.dispatcher.set_recorder`): every call that would compile
a Jiterator kernel on the emulated GPU is recorded (op, dtype, shapes, the first stack frame
outside torch and blackwell-compat) and then computed with PyTorch's own CPU kernel, so the
program continues with the correct result and one run lists every site.

With ``fix=True`` the patches are applied first (``bc.apply()``, the op guard included); calls
the guard rewrites are reported as *guarded*, and whatever still reaches a Jiterator kernel is
reported as *failing*.

The program's output goes where it would go (see :mod:`blackwell_compat.cli.audit_cmd` for the
``--json`` case); its exit code, an uncaught exception and the tail of its output are part of
the report.

Every process of the program is audited, and the report is one: a child made by ``os.fork``
(a ``fork`` pool worker included) keeps recording, and Python interpreters the program starts
(``spawn``/``forkserver`` workers, ``subprocess`` of Python) inherit ``BLACKWELL_COMPAT_EMULATE``
and :data:`AUDIT_VARIABLE`, and join through the package import that the start-up hook makes.
Each process other than the auditing one writes what it saw to a spool directory (at once for
every new call site, so a worker that is killed still leaves its sites; at exit, ``os._exit``
included, with the final counts), and the auditing process merges them.  A Python process the
program started that did not join (an environment without these variables, an interpreter
without the hook) is counted and named: the report then says it is incomplete and the exit
status is :data:`EXIT_INCOMPLETE` unless a failing site already makes it 1.

The package: :mod:`.model` (what a report holds), :mod:`.recorder` (the dispatcher's records,
by call site), :mod:`.processes` (the program's other processes and the spool),
:mod:`.runner` (running the program) and :mod:`.render` (the text report).
"""

from __future__ import annotations

from .model import (
    AUDIT_VARIABLE,
    EXIT_INCOMPLETE,
    TAIL_CHARS,
    AuditReport,
    OpUse,
    Site,
    SiteReport,
    Target,
)
from .processes import join_from_environment
from .recorder import Recorder
from .render import render
from .runner import check_target, run

__all__ = [
    "AUDIT_VARIABLE",
    "EXIT_INCOMPLETE",
    "TAIL_CHARS",
    "AuditReport",
    "OpUse",
    "Recorder",
    "Site",
    "SiteReport",
    "Target",
    "check_target",
    "join_from_environment",
    "render",
    "run",
]
