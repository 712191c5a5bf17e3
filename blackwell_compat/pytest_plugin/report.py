"""What the plugin says: the report-header line, the hint on an NVRTC failure, and why a
``requires_affected_gpu`` test skips.  Reads the probe and the emulation, never the engine.

Imported by the hooks on first need (not when the plugin is loaded).
"""

from __future__ import annotations

import pytest

from ..config import emulated_arch_from_env
from ..emulation import current_arch
from ..errors import ConfigError
from ..probing import probe
from ..versions import __version__
from .state import State, get_state


def session_skipped(state: State) -> bool:
    """Whether the session applies nothing: ``--blackwell-compat=off``, or ``auto`` where the
    probe finds no affected GPU and nothing is emulated (the header's note then says so).
    Needs only the probe, so such a run never loads the engine."""
    mode = state.settings.mode
    if mode == "off":
        return True
    if mode == "auto" and state.emulation is None and not probe().affected:
        state.session_note = "auto: no affected GPU here, not applied"
        return True
    return False


def affected_gpu_skip_reason() -> str | None:
    """``None`` when a real (not emulated) affected GPU is present, else why the test skips."""
    platform = probe()
    if any(gpu.affected and not gpu.emulated for gpu in platform.gpus):
        return None
    real = [gpu for gpu in platform.gpus if not gpu.emulated]
    if real:
        found = ", ".join(f"{gpu.name} ({gpu.arch})" for gpu in real)
        where = f"the GPUs here ({found}) are all supported by the loaded NVRTC"
    else:
        where = "no NVIDIA GPU was found"
    return (
        "requires an affected GPU (one whose architecture the loaded NVRTC lacks, e.g. GB10 "
        f"sm_121 with NVRTC 12.8); {where}"
    )


#: What the emulated (and the real) errors of the three kinds of run-time compiled kernels say.
FUSED_MARK = "prim::TensorExprGroup"
USER_MARK = "torch.cuda.jiterator._create_jit_fn"


def _kernel_kind(message: str) -> str:
    """``fused`` (a scripted function's fused kernel), ``user`` (a Jiterator kernel the code
    wrote) or ``op`` (an ATen op's Jiterator kernel), from the error's text."""
    if FUSED_MARK in message or "nvrtc compilation failed" in message:
        return "fused"
    if USER_MARK in message:
        return "user"
    return "op"


def failure_hint(state: State, message: str = "") -> str:
    """The hint for a failure showing the NVRTC error; *message* is the error's text (it says
    whether a fused kernel, a user Jiterator kernel or an op's Jiterator kernel failed)."""
    arch = current_arch() or (state.emulation.arch if state.emulation else None)
    kind = _kernel_kind(message)
    if state.session_applied:
        if kind == "fused":
            return (
                "blackwell-compat's patches were active, yet a scripted function's fused kernel "
                "(the TorchScript fuser) was compiled with NVRTC: neither the NVRTC remedy nor "
                "the fuser rung (the GPU fuser off) serves it here. `python -m blackwell_compat "
                "audit --fix -- <script>` shows which rung serves each fused-kernel site."
            )
        if kind == "user":
            return (
                "blackwell-compat's patches were active, yet a Jiterator kernel your code wrote "
                "(torch.cuda.jiterator._create_jit_fn) was compiled with NVRTC: only the NVRTC "
                "remedy serves those (`python -m blackwell_compat fetch nvrtc`)."
            )
        return (
            "blackwell-compat's patches were active, yet this call still reached a run-time "
            "compiled (Jiterator) kernel: its op or call site is not covered. "
            "`python -m blackwell_compat audit -- <script>` lists such call sites; please report "
            "the op and dtype."
        )
    what = {
        "fused": "a scripted function's fused kernel (the TorchScript fuser), compiled with NVRTC",
        "user": "a Jiterator kernel your code wrote (only the NVRTC remedy serves it)",
        "op": "a Jiterator kernel, compiled with NVRTC",
    }[kind]
    if arch is not None:
        return (
            f"This is the error PyTorch raises on a GPU whose architecture ({arch}, emulated "
            f"here) the installed NVRTC does not know; it came from {what}. Check that "
            "blackwell-compat fixes it: run with --blackwell-compat=on, or mark the test "
            "@pytest.mark.blackwell_compat."
        )
    return (
        "This GPU's architecture is missing from the NVRTC that PyTorch loaded; the error came "
        f"from {what}. `python -m blackwell_compat doctor` says what to install; "
        "--blackwell-compat=on (or blackwell_compat.apply() in your code) works around it."
    )


def _platform_summary() -> str:
    platform = probe()
    real = [gpu for gpu in platform.gpus if not gpu.emulated]
    if real:
        gpus = ", ".join(
            f"{gpu.index}: {gpu.name} {gpu.arch}{' (affected)' if gpu.affected else ''}"
            for gpu in real
        )
    else:
        gpus = "none"
    version = platform.nvrtc.version
    nvrtc = "NVRTC " + (".".join(str(v) for v in version) if version else "not found")
    affected = any(gpu.affected for gpu in real)
    verdict = "affected" if affected else "not affected"
    return f"GPUs: {gpus}; {nvrtc}; {verdict}"


def _patches_summary(state: State) -> str:
    settings = state.settings
    if settings.mode == "off":
        return "patches: off"
    if state.session_note:
        return f"patches: {state.session_note}"
    report = state.session_report
    if report is None:
        return f"patches: {settings.mode}"
    parts = []
    if report.applied:
        parts.append("applied " + ", ".join(report.applied))
    if report.pending:
        parts.append("on import " + ", ".join(report.pending))
    if report.failed:
        parts.append("FAILED " + ", ".join(report.failed))
    skipped = len(report.skipped)
    if skipped:
        parts.append(f"{skipped} skipped")
    forced = " (forced)" if report.forced else ""
    return f"patches {settings.mode}{forced}: " + ("; ".join(parts) or "none selected")


def _emulation_summary(state: State) -> str:
    if state.emulation is not None:
        return f"emulation: {state.emulation.arch} (every test)"
    try:
        env_arch = emulated_arch_from_env()
    except ConfigError as exc:
        return f"emulation: bad BLACKWELL_COMPAT_EMULATE ({exc})"
    if env_arch is not None:
        return f"emulation: {env_arch} (BLACKWELL_COMPAT_EMULATE, whole process)"
    return "emulation: off"


def header_line(config: pytest.Config) -> str:
    """The one report-header line: GPUs, verdict, active patches, emulation."""
    state = get_state(config)
    try:
        platform = _platform_summary()
    except Exception as exc:  # a broken stack must not break the test run
        platform = f"probe failed ({type(exc).__name__}: {exc})"
    return (
        f"blackwell-compat {__version__}: {platform}; {_patches_summary(state)}; "
        f"{_emulation_summary(state)}"
    )
