"""The ptxas remedy: point Triton at a ``ptxas`` that knows the GPU.

``torch.compile`` hands its kernels to Triton, which assembles them with ``ptxas
--gpu-name=sm_XYa``.  A ``ptxas`` older than the GPU rejects that name, and every compiled
kernel fails although eager PyTorch works.  Triton reads the path of the tool from a variable
(Triton >= 3.6: ``TRITON_PTXAS_BLACKWELL_PATH`` for compute capability >= 10, else
``TRITON_PTXAS_PATH``; older Triton: ``TRITON_PTXAS_PATH`` for every GPU) each time it looks
the tool up, so setting it in ``os.environ`` before the first compile serves this process, and
every child started afterwards inherits it.

Nothing is overridden: a variable the user set stays as it is (the report says so), and
:func:`revert` puts back exactly what :func:`activate` changed.  Candidates, first that fits
wins (docs/remedies.md):

1. ``BLACKWELL_COMPAT_PTXAS``: a ``ptxas`` file or a folder holding ``ptxas`` or
   ``bin/ptxas`` (when set, the only candidate: an explicit choice is not silently replaced);
2. the project's cache (``python -m blackwell_compat fetch ptxas``), newest first;
3. CUDA toolkits (``CUDA_HOME``, ``CUDA_PATH``, ``CUDA_ROOT``, ``PATH``, ``/usr/local/cuda*``)
   and NVIDIA wheels on ``sys.path`` (``nvidia/cuda_nvcc/bin/ptxas``, ``nvidia/cu13/bin/ptxas``);
4. the other binaries bundled with Triton (its ``ptxas-blackwell`` or ``ptxas``).

A candidate fits when it assembles a trivial kernel for both ``sm_XY`` and ``sm_XYa`` (older
Triton passes the plain name) and the installed Triton accepts its release: Triton 3.2 refuses
any ``ptxas`` newer than 12.6 ("Triton only support CUDA 10.0 or higher"), which a child process
asks Triton itself about.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import children, config
from .. import state as process_state
from ..config import parse_arch
from ..probing.ptxas import (
    PTXAS_BLACKWELL_ENV,
    PTXAS_ENV,
    PtxasProbe,
    find_ptxas_binaries,
    probe_tool,
    probe_triton,
    triton_gpu_name,
)
from . import cache

USER_VARIABLE = config.PTXAS
"""A ``ptxas`` (file, or folder holding ``ptxas`` or ``bin/ptxas``) the remedy should use; an
absolute path (a relative one is a ``ConfigError``)."""

_EXE = ".exe" if os.name == "nt" else ""
_TIMEOUT = 30.0


@dataclass(frozen=True)
class PtxasReport:
    """What the remedy did for one GPU arch, and why (not)."""

    arch: str
    active: bool
    reason: str
    variable: str | None = None
    """The variable Triton reads for this arch (``TRITON_PTXAS_BLACKWELL_PATH``)."""
    path: str | None = None
    """The capable ``ptxas`` now in that variable (or the one that already served)."""
    version: str | None = None
    source: str | None = None
    rejected: tuple[str, ...] = field(default_factory=tuple)
    """Candidates passed over, each ``path: why``."""

    def as_dict(self) -> dict[str, object]:
        return {
            "arch": self.arch,
            "active": self.active,
            "reason": self.reason,
            "variable": self.variable,
            "path": self.path,
            "version": self.version,
            "source": self.source,
            "rejected": list(self.rejected),
        }


# Serialises activate/revert.  The variables this module set (with the value it set) and its
# reports live in blackwell_compat.state; these names are the same dicts.  Only ever an unset
# variable is set, so reverting means removing it again (when it still holds our value).
_lock = threading.Lock()
_set_by_us: dict[str, str] = process_state.ptxas_set
_reports: dict[str, PtxasReport] = process_state.ptxas_reports


def gpu_names(arch: str) -> list[str]:
    """The names a Triton may pass for *arch*: ``sm_121a`` (Triton >= 3.3) and ``sm_121``."""
    names = [triton_gpu_name(arch), parse_arch(arch)]
    return list(dict.fromkeys(names))


def _user_candidates(path: str) -> list[str]:
    """The file named by ``BLACKWELL_COMPAT_PTXAS``, or the ptxas inside the folder it names."""
    if os.path.isdir(path):
        return [
            os.path.join(path, "ptxas" + _EXE),
            os.path.join(path, "bin", "ptxas" + _EXE),
        ]
    return [path]


def candidates(
    env: Mapping[str, str] | None = None, triton_dir: str | None = None
) -> list[tuple[str, str]]:
    """``(path, source)`` of every ``ptxas`` worth trying, in the documented order, each an
    absolute path.  ``ConfigError`` when ``BLACKWELL_COMPAT_PTXAS`` is relative."""
    environ = os.environ if env is None else env
    chosen = config.absolute_path(USER_VARIABLE, environ)
    if chosen is not None:
        return [(path, USER_VARIABLE) for path in _user_candidates(chosen)]
    found: list[tuple[str, str]] = []
    for folder in cache.ptxas_dirs():
        found.append((str(folder / "bin" / ("ptxas" + _EXE)), f"the cache ({folder})"))
    for path in find_ptxas_binaries(environ):
        found.append((path, "found on this machine"))
    if triton_dir is not None:
        for binary in ("ptxas-blackwell", "ptxas"):
            for sub in (("backends", "nvidia", "bin"), ("third_party", "cuda", "bin")):
                path = os.path.join(triton_dir, *sub, binary + _EXE)
                found.append((path, "bundled with triton"))
    unique: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path, source in found:
        if not os.path.isabs(path):
            continue  # it would name a file of the working directory
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        unique.append((path, source))
    return unique


_TRITON_CHECK = """\
import os, sys
sys.path.insert(0, sys.argv[1])
try:
    import triton
    from triton.backends.nvidia.compiler import ptx_get_version
except Exception as exc:
    print("unknown: cannot ask this triton (%s: %s)" % (type(exc).__name__, exc))
    sys.exit(0)
where = os.path.realpath(os.path.dirname(triton.__file__ or "."))
if where != os.path.realpath(sys.argv[3]):
    print("unknown: the triton imported is %s, not %s" % (where, sys.argv[3]))
    sys.exit(0)
try:
    ptx_get_version(sys.argv[2])
except Exception as exc:
    print("refused: %s" % (exc,))
    sys.exit(0)
print("ok")
"""


def triton_accepts_release(
    triton_dir: str, version: str, timeout: float = _TIMEOUT
) -> tuple[bool, str]:
    """Ask the installed Triton, in a child process, whether it works with ptxas *version*.

    Triton derives the PTX version it emits from the ptxas release; Triton 3.2 raises for any
    release newer than 12.6.  A Triton that cannot be asked (no such function) is given the
    benefit of the doubt: ``(True, "unknown: ...")``.
    """
    parent = os.path.dirname(os.path.abspath(triton_dir))
    done = children.run(
        children.python_argv(
            "-c", children.guarded_code(_TRITON_CHECK), parent, version, triton_dir
        ),
        timeout=timeout,
        env=children.helper_env(),
        guarded=True,
    )
    if done.timed_out:
        return False, f"asking triton about ptxas {version} timed out after {timeout:g} s"
    if not done.started:
        return False, f"asking triton about ptxas {version} failed: {done.start_error}"
    text = done.stdout.decode("utf-8", "replace").strip()
    last = text.splitlines()[-1] if text else ""
    if done.returncode != 0 or not last:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        return False, f"asking triton about ptxas {version} failed: {tail[0]}"
    if last == "ok":
        return True, "ok"
    if last.startswith("refused: "):
        return False, f"this triton refuses ptxas {version}: {last[len('refused: ') :]}"
    return True, last


def _fits(probe: PtxasProbe, names: list[str]) -> str | None:
    """Why *probe* does not serve *names*, or None when it does."""
    if probe.error is not None:
        return probe.error
    tried = [n for n in names if n in probe.accepts]
    if not tried:
        return "not tried on " + ", ".join(names)
    refused = [n for n in tried if not probe.accepts[n]]
    if refused:
        shown = "; ".join(f"{n}: {probe.errors.get(n, 'rejected')}" for n in refused)
        return f"ptxas {probe.version} rejects {shown}"
    return None


def _variable_for(role: str) -> str:
    return PTXAS_BLACKWELL_ENV if role == "ptxas-blackwell" else PTXAS_ENV


def activate(
    arch: str,
    *,
    triton_dir: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = _TIMEOUT,
    refresh: bool = False,
) -> PtxasReport:
    """Make the ptxas Triton will run for *arch* one that accepts it; never raises for what it
    finds (a bad *arch* is a ConfigError/TypeError from :func:`parse_arch`).

    *env* is where candidates are looked up (default ``os.environ``); the variable is always
    set in ``os.environ``, so that this process and its children see it.  The answer is kept
    per arch (``apply()`` asks again on every call): *refresh* tests again.
    """
    arch = parse_arch(arch, source="ptxas remedy arch")
    names = gpu_names(arch)
    with _lock:
        known = _reports.get(arch)
        if known is not None and not refresh and triton_dir is None and env is None:
            still = known.variable is None or (
                os.environ.get(known.variable) == _set_by_us.get(known.variable)
            )
            if still:
                return known
        facts = probe_triton(
            [arch], triton_dir=triton_dir, timeout=timeout, search_alternatives=False
        )
        if not facts.installed or facts.location is None:
            return _remember(PtxasReport(arch, False, "Triton is not installed: nothing to do"))
        role = facts.uses.get(arch, "ptxas")
        variable = _variable_for(role)
        current = facts.tool(role)
        if current is not None and _fits(current, names) is None:
            ours = variable in _set_by_us and _set_by_us[variable] == os.environ.get(variable)
            return _remember(
                PtxasReport(
                    arch,
                    ours,
                    (
                        f"set {variable} earlier; ptxas {current.version} accepts {names[0]}"
                        if ours
                        else f"the ptxas Triton runs ({current.source}) already accepts "
                        + ", ".join(names)
                    ),
                    variable,
                    current.path,
                    current.version,
                    current.source,
                )
            )
        why_current = _fits(current, names) if current is not None else "no ptxas found"
        user_value = os.environ.get(variable)
        if user_value is not None and _set_by_us.get(variable) != user_value:
            return _remember(
                PtxasReport(
                    arch,
                    False,
                    (
                        f"{variable}={user_value!r} was set by the user and is not overridden; "
                        f"the ptxas Triton runs does not serve {names[0]} ({why_current})"
                    ),
                    variable,
                )
            )
        if variable in _set_by_us and user_value is None:
            # It was ours and someone removed it since: respect that; say what happened.
            return _remember(
                PtxasReport(
                    arch,
                    False,
                    (
                        f"{variable}, which the remedy had set to {_set_by_us[variable]!r}, "
                        "was removed from the environment since; it is not set again in this "
                        f"process (revert() and apply() set it again); the ptxas Triton runs "
                        f"does not serve {names[0]} ({why_current})"
                    ),
                    variable,
                )
            )
        if variable in _set_by_us:
            # Ours, but it does not serve this arch (another GPU's choice): keep it, say so.
            return _remember(
                PtxasReport(
                    arch,
                    False,
                    f"{variable} was set for another GPU and its ptxas does not serve "
                    f"{names[0]} ({why_current})",
                    variable,
                )
            )
        rejected: list[str] = []
        asked: dict[str, tuple[bool, str]] = {}
        for path, source in candidates(env, facts.location):
            if current is not None and os.path.realpath(path) == os.path.realpath(current.path):
                continue
            if not os.path.isfile(path) or not os.access(path, os.X_OK):
                if source == USER_VARIABLE:
                    rejected.append(f"{path}: not an executable file")
                continue
            probe = probe_tool(path, role, source, names, timeout)
            why = _fits(probe, names)
            if why is None and probe.version is not None:
                if probe.version not in asked:
                    asked[probe.version] = triton_accepts_release(
                        facts.location, probe.version, timeout
                    )
                ok, answer = asked[probe.version]
                why = None if ok else answer
            if why is not None:
                rejected.append(f"{path}: {why}")
                continue
            path = os.path.abspath(path)  # every candidate is absolute; Triton gets no other
            os.environ[variable] = path
            _set_by_us[variable] = path
            return _remember(
                PtxasReport(
                    arch,
                    True,
                    (
                        f"the ptxas triton {facts.version or '(version unknown)'} would run "
                        f"does not serve {names[0]} ({why_current}); {variable} now names "
                        f"ptxas {probe.version} ({source})"
                    ),
                    variable,
                    path,
                    probe.version,
                    source,
                    tuple(rejected),
                )
            )
        hint = "python -m blackwell_compat fetch ptxas"
        return _remember(
            PtxasReport(
                arch,
                False,
                (
                    f"the ptxas Triton runs does not serve {names[0]} ({why_current}) and no "
                    f"capable ptxas that this Triton accepts was found; `{hint}` puts one in "
                    "the cache"
                ),
                variable,
                rejected=tuple(rejected),
            )
        )


def _remember(report: PtxasReport) -> PtxasReport:
    _reports[report.arch] = report
    return report


def active() -> list[PtxasReport]:
    """The reports of archs served by a variable this module set (and still holds)."""
    with _lock:
        return [
            r
            for r in _reports.values()
            if r.active
            and r.variable is not None
            and _set_by_us.get(r.variable) is not None
            and os.environ.get(r.variable) == _set_by_us[r.variable]
        ]


def reports() -> list[PtxasReport]:
    """The last report of every arch :func:`activate` was asked about."""
    with _lock:
        return list(_reports.values())


def revert() -> list[str]:
    """Remove the variables this module set; one line per variable saying what happened.

    A variable changed since (by the user or a library) is left with its new value.
    """
    lines: list[str] = []
    with _lock:
        for variable, value in list(_set_by_us.items()):
            now = os.environ.get(variable)
            if now == value:
                del os.environ[variable]
                lines.append(f"{variable} removed (it named {value})")
            else:
                lines.append(f"{variable} left as it is: changed since it was set ({now!r})")
            del _set_by_us[variable]
        _reports.clear()
    return lines


def activate_for(archs: list[str]) -> list[PtxasReport]:
    """:func:`activate` for each arch of the real GPUs (caller: ``apply()``, and so the start-up
    hook and ``run``); whatever goes wrong becomes a report, never an exception."""
    done = []
    for arch in dict.fromkeys(archs):
        try:
            done.append(activate(arch))
        except Exception as exc:  # a remedy must never stop apply() or the start-up hook
            done.append(_remember(PtxasReport(arch, False, f"failed: {type(exc).__name__}: {exc}")))
    return done
