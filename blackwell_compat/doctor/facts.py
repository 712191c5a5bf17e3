"""Facts the doctor's checks judge, gathered in one place.

:func:`gather` reads the real machine: the probe (in process: it never imports torch, and NVML
and NVRTC are retested in child processes with a timeout first), torch and torchaudio (in a
child process with a timeout, started with ``-P`` in an empty folder), Triton's ``ptxas``
(subprocesses with a timeout), the patch table, the environment and, on request, the smoke
workloads.  Every fact type is plain data, so tests build :class:`Facts` for fake machines
without touching this one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import versions
from ..config import ALL_VARIABLES
from ..probing import (
    DriverInfo,
    Platform,
    build_platform,
    current_system,
    read_versions,
    retest,
)
from ..probing.ptxas import TritonFacts, probe_triton
from ..remedies import nvrtc as nvrtc_remedy
from ..remedies.fetch import FetchError, package_for
from ..remedies.nvrtc import RemedyState
from ..remedies.ptxas import triton_accepts_release
from .hints import BLACKWELL_ARCHS, cuda_major
from .process import ChildResult, Timeouts, child_env, module_argv, run_child
from .smoke import SmokeReport, run_smoke, targets_for
from .stack import TorchaudioFacts, TorchDevice, TorchFacts

if TYPE_CHECKING:
    from ..engine import Evaluation

__all__ = [
    "Facts",
    "TorchDevice",
    "TorchFacts",
    "TorchaudioFacts",
    "gather",
    "gpu_archs",
    "probe_stack",
    "stack_facts_from",
]

_STACK_CHILD = "blackwell_compat.doctor.stack_child"


@dataclass(frozen=True)
class Facts:
    """Everything the checks look at."""

    platform: Platform
    torch: TorchFacts
    torchaudio: TorchaudioFacts
    triton: TritonFacts
    env: Mapping[str, str] = field(default_factory=dict)
    patches: Sequence[Evaluation] | None = None
    """The engine's evaluations of the patches; ``None``: the check evaluates them live."""
    smoke: SmokeReport | None = None
    probe_error: str | None = None
    remedy: RemedyState | None = None
    """What the NVRTC remedy would do here (:func:`blackwell_compat.remedies.nvrtc.plan`);
    ``None``: not asked (no affected GPU, or facts built by hand)."""
    ptxas_releases: Mapping[str, tuple[bool, str]] = field(default_factory=dict)
    """``{"12.9": (False, "this triton refuses ptxas 12.9: ...")}``: whether the installed
    Triton accepts a ptxas of each release (the ptxas remedy's gate), asked only when Triton's
    own ptxas rejects a GPU here; empty: not asked."""
    ptxas_fetch_release: str | None = None
    """The ptxas release ``fetch ptxas`` would put in the cache for this torch (``12.9``)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "torch": self.torch.as_dict(),
            "torchaudio": self.torchaudio.as_dict(),
            "triton": self.triton.as_dict(),
            "smoke": self.smoke.as_dict() if self.smoke is not None else None,
        }


def probe_stack(
    timeout: float, env: Mapping[str, str] | None = None
) -> tuple[TorchFacts, TorchaudioFacts, ChildResult]:
    """Ask torch and torchaudio about themselves in a child process."""
    # The child must see torch as the user's programs do, without this library's emulation or
    # start-up activation changing what it loads.
    environment = child_env(env, drop=ALL_VARIABLES)
    result = run_child(module_argv(_STACK_CHILD), timeout=timeout, env=environment)
    return (*stack_facts_from(result, env), result)


def stack_facts_from(
    result: ChildResult, env: Mapping[str, str] | None = None
) -> tuple[TorchFacts, TorchaudioFacts]:
    """Turn the child's records (or its failure) into facts."""
    torch_rec = result.record("torch")
    audio_rec = result.record("torchaudio")
    if torch_rec is not None:
        torch_facts = TorchFacts.from_record(torch_rec)
    else:
        version = versions.installed_version("torch")
        torch_facts = TorchFacts(
            installed=version is not None,
            version=version,
            error=f"the torch probe failed: {result.error or 'it reported nothing'}",
        )
    if audio_rec is not None:
        audio_facts = TorchaudioFacts.from_record(audio_rec)
    elif torch_rec is None or torch_facts.error:
        # The child died (or torch did not import) before torchaudio was tried: that says
        # nothing about torchaudio, so it is reported as not checked, with what was tried.
        version = versions.installed_version("torchaudio")
        why = (
            torch_facts.error
            if torch_rec is not None
            else f"the child process that imports torch {result.error or 'reported nothing'}"
        )
        audio_facts = TorchaudioFacts(
            installed=version is not None,
            version=version,
            tried=False,
            error=(
                f"not checked: torchaudio is loaded after torch, and {why}"
                if version is not None
                else None
            ),
        )
    else:
        version = versions.installed_version("torchaudio")
        audio_facts = TorchaudioFacts(
            installed=version is not None,
            version=version,
            native_loaded=False if version is not None else None,
            error=(
                f"loading torchaudio failed: {result.error or 'it reported nothing'}"
                if version is not None
                else None
            ),
        )
    return torch_facts, audio_facts


def gpu_archs(platform: Platform) -> list[str]:
    """The archs of every GPU on the platform (emulated included), in order, once each."""
    return list(dict.fromkeys(gpu.arch for gpu in platform.gpus))


def gather(
    *,
    smoke: bool = False,
    timeouts: Timeouts | None = None,
    env: Mapping[str, str] | None = None,
    platform: Platform | None = None,
) -> Facts:
    """Read the real machine.  Never raises for what it finds (failures become facts)."""
    limits = timeouts or Timeouts()
    environ = dict(os.environ if env is None else env)
    probe_error: str | None = None
    if platform is None:
        platform, probe_error = _probe_platform(limits.tool)

    stack: dict[str, Any] = {}

    def run_stack() -> None:
        try:
            stack["value"] = probe_stack(limits.facts, environ)
        except Exception as exc:  # pragma: no cover - run_child does not raise
            stack["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=run_stack, name="blackwell-compat-doctor-stack")
    worker.start()
    archs = gpu_archs(platform) or list(BLACKWELL_ARCHS)
    try:
        triton = probe_triton(archs, env=environ, timeout=limits.tool)
    except Exception as exc:
        triton = TritonFacts(installed=True, error=f"{type(exc).__name__}: {exc}")
    worker.join()
    if "value" in stack:
        torch_facts, audio_facts, _ = stack["value"]
    else:
        torch_facts = TorchFacts(installed=False, error=stack.get("error"))
        audio_facts = TorchaudioFacts(installed=False)

    releases, fetch_release = _ptxas_gate(triton, torch_facts, limits.tool)
    remedy = None
    if platform.affected:
        # Which NVRTC the remedy would load (candidates tested in child processes): the
        # doctor's first fix when there is one, `fetch nvrtc` when there is none.
        remedy = nvrtc_remedy.plan(platform)
    smoke_report = None
    if smoke:
        targets = targets_for(platform, torch_facts)
        # The rung the doctor recommends is the one the smoke test runs: the NVRTC remedy when
        # it found a capable library (the NVRTC check's step), else the patches.
        recommends_remedy = remedy is not None and remedy.status == nvrtc_remedy.AVAILABLE
        smoke_report = run_smoke(
            targets, torch_facts, timeout=limits.smoke, env=environ, remedy=recommends_remedy
        )
    return Facts(
        platform=platform,
        torch=torch_facts,
        torchaudio=audio_facts,
        triton=triton,
        env=environ,
        patches=None,
        smoke=smoke_report,
        probe_error=probe_error,
        remedy=remedy,
        ptxas_releases=releases,
        ptxas_fetch_release=fetch_release,
    )


def _ptxas_gate(
    triton: TritonFacts, torch_facts: TorchFacts, timeout: float
) -> tuple[dict[str, tuple[bool, str]], str | None]:
    """Ask the installed Triton (in child processes) whether it accepts the ptxas releases the
    Triton check could advise: the capable alternatives found here and the one ``fetch ptxas``
    would cache.  Only when Triton's own ptxas rejects a GPU (else nothing is advised)."""
    major = cuda_major(torch_facts.cuda)
    fetch_release = None
    if major is not None:
        try:
            version = package_for("ptxas", major)[1]
        except FetchError:  # a CUDA major fetch knows no ptxas for
            version = ""
        fetch_release = ".".join(version.split(".")[:2]) or None
    rejected = any(not all(t.accepts.values()) or t.error for t in triton.tools)
    if not triton.installed or triton.location is None or not rejected:
        return {}, fetch_release
    releases = [a.version for a in triton.alternatives if a.version and not a.error]
    answers: dict[str, tuple[bool, str]] = {}
    for release in dict.fromkeys([*releases, fetch_release]):
        if release:
            answers[release] = triton_accepts_release(triton.location, release, timeout)
    return answers, fetch_release


def _probe_platform(timeout: float | None = None) -> tuple[Platform, str | None]:
    """``bc.probe()`` with every native library tested afresh in a child process (stored
    verdicts ignored); should it ever raise, an empty platform that says why."""
    try:
        return retest(timeout), None
    except Exception as exc:
        error = f"the platform probe raised {type(exc).__name__}: {exc}"
        try:
            found: dict[str, str | None] = read_versions()
        except Exception:
            found = {}
        platform = build_platform(
            driver=DriverInfo(available=False, error=error),
            versions=found,
            system=current_system(),
        )
        return platform, error
