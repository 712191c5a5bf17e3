"""What an audit report holds: the target, call sites, op uses, and the report itself."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

TAIL_CHARS = 4000
#: Set, for the program's processes, to the spool directory they write their records to.
AUDIT_VARIABLE = "_BLACKWELL_COMPAT_AUDIT"
#: Exit status when no site fails but a process of the program could not be audited.
EXIT_INCOMPLETE = 3


@dataclass(frozen=True)
class Target:
    """What to run: a script path or a module name, and its arguments."""

    kind: str  # "script" or "module"
    name: str
    args: tuple[str, ...] = ()

    def describe(self) -> str:
        head = f"-m {self.name}" if self.kind == "module" else self.name
        return " ".join([head, *self.args])


@dataclass(frozen=True)
class Site:
    """Where the program called into torch: the first frame outside torch and this library."""

    file: str
    line: int
    function: str
    code: str = ""

    def describe(self) -> str:
        return f"{short_path(self.file)}:{self.line} in {self.function}"


#: :attr:`OpUse.op` of a fused kernel (a scripted function's ``prim::TensorExprGroup``).
FUSED_OP = "prim::TensorExprGroup"
#: :attr:`OpUse.op` of a kernel the program wrote (``torch.cuda.jiterator._create_jit_fn``).
USER_OP = "torch.cuda.jiterator"
#: :attr:`OpUse.mode` -> what serves the call (``served_by`` in the JSON report).
RUNGS = {"emulate": "unserved", "guard": "guard", "fuser": "fuser", "remedy": "remedy"}
#: ``served_by`` -> the STATUS column of the text report.
STATUS = {"unserved": "FAIL", "guard": "guarded", "fuser": "fuser", "remedy": "remedy"}


@dataclass
class OpUse:
    """One op/dtype/mode at one site, with how often and on which shapes.

    Three kinds: an inventory op (``aten::abs.out``), a fused kernel (:data:`FUSED_OP`:
    ``entry`` is the scripted function, ``kernel`` NNC's name, ``fused_ops`` its ATen ops)
    and a user Jiterator kernel (:data:`USER_OP`: ``entry`` and ``kernel`` its name).
    """

    op: str
    entry: str
    dtype: str
    kernel: str
    source: str
    mode: str
    count: int = 0
    shapes: list[list[list[int]]] = field(default_factory=list)
    fused_ops: list[str] = field(default_factory=list)

    @property
    def failing(self) -> bool:
        return self.mode == "emulate"

    @property
    def kind(self) -> str:
        """``op``, ``fused`` or ``user``."""
        return {FUSED_OP: "fused", USER_OP: "user"}.get(self.op, "op")

    @property
    def served_by(self) -> str:
        """What serves it: ``unserved``, ``guard`` (the op guard), ``fuser`` (the GPU fuser
        is off: the fuser rung or the user's switch) or ``remedy`` (the NVRTC remedy)."""
        return RUNGS.get(self.mode, self.mode)


@dataclass
class SiteReport:
    site: Site
    uses: dict[tuple[str, str, str, str], OpUse] = field(default_factory=dict)
    """(op, dtype, mode, kernel) -> use: one fused kernel per group of a function."""
    stack: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(u.count for u in self.uses.values())

    @property
    def failing(self) -> bool:
        return any(u.failing for u in self.uses.values())

    @property
    def status(self) -> str:
        """``FAIL`` if a use fails, else what serves its uses (``guarded``, ``fuser``,
        ``remedy``, joined by ``+`` when several rungs serve the one site)."""
        if self.failing:
            return "FAIL"
        served = {STATUS.get(u.served_by, u.served_by) for u in self.uses.values()}
        return "+".join(sorted(served)) or "guarded"


@dataclass
class AuditReport:
    target: Target
    arch: str
    fix: bool
    sites: list[SiteReport]
    exit_code: int
    error: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    patches: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    processes: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    """The device that played the GPU: ``cpu`` (CPU tensors) or ``cuda`` (the emulated CUDA
    device: only its tensors)."""

    @property
    def uncovered(self) -> list[str]:
        """Processes of the program whose calls are not in the report (empty: all covered)."""
        return list(self.processes.get("uncovered", []))

    @property
    def failing_sites(self) -> list[SiteReport]:
        return [s for s in self.sites if s.failing]

    @property
    def guarded_sites(self) -> list[SiteReport]:
        return [s for s in self.sites if not s.failing]

    @property
    def exit_status(self) -> int:
        """1 when a site would fail on the GPU; else :data:`EXIT_INCOMPLETE` when a process of
        the program could not be audited; else the program's own exit code."""
        if self.failing_sites:
            return 1
        if self.uncovered:
            return EXIT_INCOMPLETE
        return self.exit_code

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": "blackwell-compat audit",
            "version": _library_version(),
            "arch": self.arch,
            "device": self.device,
            "fix": self.fix,
            "target": {
                "kind": self.target.kind,
                "name": self.target.name,
                "args": list(self.target.args),
            },
            "program": {
                "exit_code": self.exit_code,
                "error": self.error,
                "stdout_tail": self.stdout_tail,
                "stderr_tail": self.stderr_tail,
                "seconds": round(self.seconds, 3),
            },
            "patches": self.patches,
            "processes": self.processes,
            "sites": sites_as_dicts(self.sites),
            "summary": {
                "sites": len(self.sites),
                "failing_sites": len(self.failing_sites),
                "guarded_sites": len(self.guarded_sites),
                "calls": sum(s.calls for s in self.sites),
            },
            "exit_status": self.exit_status,
        }


def _library_version() -> str:
    """This library's version, from its distribution's metadata (written from ``__version__``):
    the audit never imports the package root, which itself imports the audit to join it."""
    # Imported here: importlib.metadata costs about 70 ms to import (measured with -X importtime),
    # which every process an audit starts would pay at the package import.
    from importlib import metadata

    try:
        return metadata.version("blackwell-compat")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from an uninstalled tree
        return "unknown"


def sites_as_dicts(sites: list[SiteReport]) -> list[dict[str, Any]]:
    return [
        {
            "file": s.site.file,
            "line": s.site.line,
            "function": s.site.function,
            "code": s.site.code,
            "calls": s.calls,
            "failing": s.failing,
            "stack": s.stack,
            "ops": [
                {
                    "op": u.op,
                    "entry": u.entry,
                    "dtype": u.dtype,
                    "kernel": u.kernel,
                    "source": u.source,
                    "mode": u.mode,
                    "count": u.count,
                    "shapes": u.shapes,
                    "kind": u.kind,
                    "served_by": u.served_by,
                    "fused_ops": u.fused_ops,
                }
                for u in s.uses.values()
            ],
        }
        for s in sites
    ]


def short_path(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith(".." + os.sep + "..") else relative
