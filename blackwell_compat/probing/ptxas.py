"""Which ``ptxas`` Triton (``torch.compile``'s GPU backend) will use, and which archs it takes.

Triton compiles its kernels to PTX and hands them to ``ptxas`` with ``--gpu-name=sm_XYa``
(the arch-specific name for compute capability 9.0 and newer).  A ``ptxas`` older than the GPU
rejects that name, and ``torch.compile`` fails although eager PyTorch works.

Nothing here imports triton: its location comes from ``importlib.util.find_spec`` and the
tools are run as subprocesses with a timeout.  Resolution mirrors Triton's own: the path in
``TRITON_PTXAS_PATH`` (``TRITON_PTXAS_BLACKWELL_PATH`` for the separate Blackwell tool that
Triton 3.5+ bundles, used for compute capability 10.0 and newer) when it runs, else the
binary bundled with triton.
"""

from __future__ import annotations

import glob
import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .. import children, trusted
from ..config import arch_to_capability
from .locate import is_working_directory

PTXAS_ENV = "TRITON_PTXAS_PATH"
PTXAS_BLACKWELL_ENV = "TRITON_PTXAS_BLACKWELL_PATH"

# A kernel that does nothing: PTX ISA 7.0 and sm_52 are accepted by every ptxas since CUDA 11.0,
# and a PTX target older than --gpu-name is allowed, so only the GPU name decides.
_TRIVIAL_PTX = """\
.version 7.0
.target sm_52
.address_size 64

.visible .entry blackwell_compat_probe()
{
\tret;
}
"""

_EXE = ".exe" if os.name == "nt" else ""


@dataclass(frozen=True)
class PtxasProbe:
    """One ``ptxas`` binary and what it made of each GPU name it was asked about."""

    path: str
    role: str  # "ptxas" or "ptxas-blackwell"
    source: str  # how it was chosen, in words
    version: str | None = None  # "12.8"
    accepts: Mapping[str, bool] = field(default_factory=dict)  # "sm_121a" -> accepted
    errors: Mapping[str, str] = field(default_factory=dict)  # "sm_121a" -> ptxas's message
    error: str | None = None  # the binary could not be run at all

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "role": self.role,
            "source": self.source,
            "version": self.version,
            "accepts": dict(self.accepts),
            "errors": dict(self.errors),
            "error": self.error,
        }


@dataclass(frozen=True)
class TritonFacts:
    """Triton's install and the ``ptxas`` it uses per GPU arch."""

    installed: bool
    version: str | None = None
    location: str | None = None
    tools: tuple[PtxasProbe, ...] = ()
    uses: Mapping[str, str] = field(default_factory=dict)  # "sm_121" -> role of the tool used
    alternatives: tuple[PtxasProbe, ...] = ()  # other ptxas binaries found, tried when needed
    error: str | None = None

    def tool(self, role: str) -> PtxasProbe | None:
        for probe in self.tools:
            if probe.role == role:
                return probe
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "installed": self.installed,
            "version": self.version,
            "location": self.location,
            "tools": [t.as_dict() for t in self.tools],
            "uses": dict(self.uses),
            "alternatives": [t.as_dict() for t in self.alternatives],
            "error": self.error,
        }


def triton_gpu_name(arch: str) -> str:
    """The ``--gpu-name`` Triton passes for *arch*: ``sm_121`` -> ``sm_121a``, ``sm_86`` stays."""
    major, minor = arch_to_capability(arch)
    return f"sm_{major}{minor}{'a' if major >= 9 else ''}"


def _run(argv: Sequence[str], timeout: float) -> tuple[int | None, str]:
    """``(exit status, output)`` of a tool; ``(None, why)`` when it timed out, could not be
    started or was killed by a signal."""
    outcome = children.run(argv, timeout=timeout)
    if outcome.timed_out:
        return None, f"timed out after {timeout:g} s"
    if not outcome.started or outcome.returncode is None:
        return None, str(outcome.start_error)
    if outcome.returncode < 0:
        return None, str(outcome.failure())
    return outcome.returncode, outcome.stdout_text + outcome.stderr.decode("utf-8", "replace")


def tool_version(path: str, timeout: float = 30.0) -> tuple[str | None, str | None]:
    """``(version, error)`` from ``ptxas --version`` (``release 12.8``)."""
    code, text = _run([path, "--version"], timeout)
    if code is None:
        return None, text
    match = re.search(r"release (\d+\.\d+)", text)
    if code != 0 or match is None:
        last = text.strip().splitlines()[-1:] or [f"exit status {code}"]
        return None, f"'{path} --version' did not report a release: {last[0]}"
    return match.group(1), None


def probe_tool(
    path: str, role: str, source: str, gpu_names: Iterable[str], timeout: float = 30.0
) -> PtxasProbe:
    """Run *path* on a trivial PTX for each GPU name; never raises."""
    version, error = tool_version(path, timeout)
    if error is not None:
        return PtxasProbe(path=path, role=role, source=source, error=error)
    accepts: dict[str, bool] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bc-ptxas-") as tmp:
        src = os.path.join(tmp, "probe.ptx")
        with open(src, "w", encoding="ascii") as handle:
            handle.write(_TRIVIAL_PTX)
        for name in dict.fromkeys(gpu_names):
            out = os.path.join(tmp, f"{name}.cubin")
            code, text = _run([path, f"--gpu-name={name}", src, "-o", out], timeout)
            accepts[name] = code == 0
            if code != 0:
                lines = [line.strip() for line in text.splitlines() if line.strip()]
                errors[name] = lines[-1] if lines else f"exit status {code}"
    return PtxasProbe(
        path=path, role=role, source=source, version=version, accepts=accepts, errors=errors
    )


def _search_path() -> list[str]:
    """``sys.path`` without the working directory: binaries the doctor runs are never taken
    from there (``python -m`` puts it first, where a planted ``./triton`` would win)."""
    return [entry for entry in sys.path if not is_working_directory(entry)]


def _triton_dir() -> str | None:
    try:
        spec = importlib.machinery.PathFinder.find_spec("triton", _search_path())
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(next(iter(spec.submodule_search_locations)))


def triton_location() -> str | None:
    """The folder of the ``triton`` package Python would import here (nothing is imported);
    ``None`` when Triton is not installed."""
    return _triton_dir()


def _bundled(triton_dir: str, binary: str) -> str:
    for sub in (("backends", "nvidia", "bin"), ("third_party", "cuda", "bin")):
        candidate = os.path.join(triton_dir, *sub, binary + _EXE)
        if os.path.exists(candidate):
            return candidate
    return os.path.join(triton_dir, "backends", "nvidia", "bin", binary + _EXE)


def _knows_blackwell_tool(triton_dir: str) -> bool:
    """Whether this triton picks a separate ``ptxas-blackwell`` for sm_100 and newer."""
    knobs = os.path.join(triton_dir, "knobs.py")
    try:
        with open(knobs, encoding="utf-8", errors="replace") as handle:
            return "ptxas-blackwell" in handle.read()
    except OSError:
        return False


def _resolve(
    binary: str, env_var: str, triton_dir: str, env: Mapping[str, str], timeout: float
) -> tuple[str, str]:
    """Triton's choice: the env path when it runs, else the bundled binary."""
    bundled = _bundled(triton_dir, binary)
    override = env.get(env_var)
    if override and not os.path.isabs(override):
        return bundled, (
            f"bundled with triton ({env_var}={override!r} is a relative path, which names a "
            "file of the working directory: blackwell-compat does not run it; give an "
            "absolute path)"
        )
    if override:
        version, error = tool_version(override, timeout)
        if error is None and version is not None:
            return override, f"from {env_var}"
        return bundled, (
            f"bundled with triton ({env_var}={override!r} is set but does not run: {error}; "
            "Triton falls back to its own binary)"
        )
    return bundled, "bundled with triton"


def probe_triton(
    archs: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    triton_dir: str | None = None,
    timeout: float = 30.0,
    search_alternatives: bool = True,
) -> TritonFacts:
    """Find the ``ptxas`` Triton uses for each arch in *archs* and test it; never raises."""
    from ..versions import installed_version

    environ = os.environ if env is None else env
    location = triton_dir if triton_dir is not None else _triton_dir()
    version = installed_version("triton") or installed_version("pytorch-triton")
    if location is None:
        return TritonFacts(installed=False, version=version)
    two_tools = _knows_blackwell_tool(location)
    plan: dict[str, tuple[str, str]] = {}  # role -> (binary, env var)
    uses: dict[str, str] = {}
    for arch in archs:
        major, _ = arch_to_capability(arch)
        if two_tools and major >= 10:
            plan["ptxas-blackwell"] = ("ptxas-blackwell", PTXAS_BLACKWELL_ENV)
            uses[arch] = "ptxas-blackwell"
        else:
            plan["ptxas"] = ("ptxas", PTXAS_ENV)
            uses[arch] = "ptxas"
    if not plan:
        plan["ptxas"] = ("ptxas", PTXAS_ENV)
    tools: list[PtxasProbe] = []
    for role, (binary, env_var) in sorted(plan.items()):
        path, source = _resolve(binary, env_var, location, environ, timeout)
        names = [triton_gpu_name(a) for a in archs if uses.get(a) == role]
        tools.append(probe_tool(path, role, source, names, timeout))
    alternatives: tuple[PtxasProbe, ...] = ()
    rejected = sorted(
        {name for t in tools for name, ok in t.accepts.items() if not ok}
        | {triton_gpu_name(a) for a in archs if _tool_failed(tools, uses.get(a))}
    )
    if search_alternatives and rejected:
        used = {os.path.realpath(t.path) for t in tools}
        found = []
        bundled = [_bundled(location, b) for b in ("ptxas-blackwell", "ptxas")]
        for path in [*find_ptxas_binaries(environ), *bundled]:
            if not os.path.isfile(path) or not os.access(path, os.X_OK):
                continue
            if os.path.realpath(path) in used:
                continue
            found.append(probe_tool(path, "ptxas", "found on this machine", rejected, timeout))
        alternatives = tuple(found)
    return TritonFacts(
        installed=True,
        version=version,
        location=location,
        tools=tuple(tools),
        uses=uses,
        alternatives=alternatives,
    )


def _tool_failed(tools: Sequence[PtxasProbe], role: str | None) -> bool:
    return any(t.role == role and t.error is not None for t in tools)


def find_ptxas_binaries(env: Mapping[str, str] | None = None) -> list[str]:
    """Other ``ptxas`` binaries on this machine: CUDA toolkits, ``PATH`` and pip wheels, by
    absolute paths only (a relative ``CUDA_HOME`` and empty or relative ``PATH`` entries,
    which mean the working directory, are skipped)."""
    environ = os.environ if env is None else env
    candidates: list[str] = []
    roots, _ = trusted.toolkit_roots(environ)  # relative ones name the working directory
    for _, root in roots:
        candidates.append(os.path.join(root, "bin", "ptxas" + _EXE))
    on_path = trusted.find_tool("ptxas" + _EXE, environ.get("PATH", ""))
    if on_path:
        candidates.append(on_path)
    if os.name == "posix":
        candidates += sorted(glob.glob("/usr/local/cuda*/bin/ptxas"), reverse=True)
        candidates.append("/opt/cuda/bin/ptxas")
    for entry in _search_path():
        if not entry or not os.path.isabs(entry) or not os.path.isdir(entry):
            continue
        for sub in ("cuda_nvcc", "cu13", "cu12"):
            candidates.append(os.path.join(entry, "nvidia", sub, "bin", "ptxas" + _EXE))
    result: list[str] = []
    seen: set[str] = set()
    for path in candidates:
        real = os.path.realpath(path)
        if real in seen or not os.path.isfile(path) or not os.access(path, os.X_OK):
            continue
        seen.add(real)
        result.append(path)
    return result
