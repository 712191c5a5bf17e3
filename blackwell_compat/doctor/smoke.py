"""``doctor --smoke``: tiny real workloads on each GPU, unpatched and patched.

Each (device, mode) pair runs in its own child process with a timeout, so a workload that
crashes the process or hangs the driver becomes a failed result and the doctor goes on.  The
child computes a CPU reference first, then runs every workload on the device and compares; the
error of a failing workload is reported exactly (for the NVRTC failure, its log line).

Modes: ``unpatched`` runs the stack as it is; ``patched`` runs it after
``blackwell_compat.apply(force=True)``, which makes the patches treat the device as affected
even where it is not, so the rewrites are exercised on any GPU; ``remedy`` runs it after a plain
``blackwell_compat.apply()`` called before ``import torch`` (what ``run`` and
``BLACKWELL_COMPAT_AUTO=1`` do), and records which rung served: the doctor runs it instead of
``patched`` when it recommends the NVRTC remedy, so the smoke test proves the step it advises.
Without a GPU, a target ``cpu`` under emulation (``BLACKWELL_COMPAT_EMULATE``) runs the same
workloads on CPU tensors that fail as they would on the emulated GPU: that proves the machinery
on this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NVRTC_ARCH_ERROR_MARK
from .process import emit
from .stack import TorchFacts

if TYPE_CHECKING:
    from ..probing import Platform

PASS = "pass"
FAIL = "fail"
SKIP = "skip"
MODES = ("unpatched", "patched")
REMEDY_MODES = ("unpatched", "remedy")
_CHILD = "blackwell_compat.doctor.smoke"
_NVRTC_MARK = NVRTC_ARCH_ERROR_MARK


# -- workloads (run in the child) -----------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One tiny computation that reaches a Jiterator-compiled kernel on CUDA.

    ``family`` is the op inventory's group (``complex``, ``reduction``, ``real``, ``integer``),
    the library a workload exercises end to end (``torchaudio``) or ``fused`` (a TorchScript
    fused kernel).  ``gpu_only``: it means something on a real GPU only (skipped on the CPU
    target of emulation).
    """

    name: str
    family: str
    op: str
    run: Callable[[Any, str], Any]  # (torch module, device) -> tensor
    needs: str | None = None  # a module the workload imports
    rtol: float = 1e-4
    atol: float = 1e-5
    gpu_only: bool = False


def _gen(torch: Any) -> Any:
    return torch.Generator().manual_seed(1234)


def _stft_abs(torch: Any, device: str) -> Any:
    signal = torch.randn(4000, generator=_gen(torch)).to(device)
    window = torch.hann_window(400).to(device)
    spec = torch.stft(signal, n_fft=400, hop_length=160, window=window, return_complex=True)
    return spec.abs()


def _kaldi_fbank(torch: Any, device: str) -> Any:
    from torchaudio.compliance import kaldi

    wave = torch.randn(1, 8000, generator=_gen(torch)).to(device)
    return kaldi.fbank(wave, num_mel_bins=23, sample_frequency=16000.0, dither=0.0)


def _complex_angle(torch: Any, device: str) -> Any:
    z = torch.randn(257, dtype=torch.complex64, generator=_gen(torch)).to(device)
    return torch.angle(z)


def _complex32_mul(torch: Any, device: str) -> Any:
    gen = _gen(torch)
    a = torch.randn(64, dtype=torch.complex64, generator=gen).to(torch.complex32).to(device)
    b = torch.randn(64, dtype=torch.complex64, generator=gen).to(torch.complex32).to(device)
    return (a * b).to(torch.complex64)


def _lgamma(torch: Any, device: str) -> Any:
    x = (torch.rand(300, generator=_gen(torch)) * 5 + 0.1).to(device)
    return torch.lgamma(x)


def _prod(torch: Any, device: str) -> Any:
    x = (torch.rand(8, 16, generator=_gen(torch)) + 0.5).to(device)
    return torch.prod(x, dim=1)


def _gcd(torch: Any, device: str) -> Any:
    gen = _gen(torch)
    a = torch.randint(1, 10_000, (200,), generator=gen).to(device)
    b = torch.randint(1, 10_000, (200,), generator=gen).to(device)
    return torch.gcd(a, b)


_GATE = """
def gate(a, b):
    t = a + b
    return torch.tanh(t) * torch.sigmoid(t)
"""


def fused_gate_function(torch: Any) -> Any:
    """The gate, scripted afresh (a new compilation unit: a scripted function keeps the plan
    it was optimised with)."""
    return torch.jit.CompilationUnit(_GATE).gate


def _fused_gate(torch: Any, device: str) -> Any:
    """A scripted WaveNet-style gate called five times: past the profiling runs, torch fuses it
    (``prim::TensorExprGroup``) and compiles the kernel with NVRTC on a GPU."""
    gate = fused_gate_function(torch)
    gen = _gen(torch)
    a = torch.randn(4, 256, generator=gen).to(device)
    b = torch.randn(4, 256, generator=gen).to(device)
    out = gate(a, b)
    for _ in range(4):
        out = gate(a, b)
    return out


WORKLOADS: tuple[Workload, ...] = (
    Workload("stft_abs", "complex", "torch.stft(...).abs() (complex64 abs)", _stft_abs),
    Workload(
        "kaldi_fbank",
        "torchaudio",
        "torchaudio.compliance.kaldi.fbank (rfft then complex abs)",
        _kaldi_fbank,
        needs="torchaudio",
        rtol=1e-3,
        atol=1e-3,
    ),
    Workload("complex_angle", "complex", "torch.angle (complex64)", _complex_angle),
    Workload(
        "complex32_mul",
        "complex",
        "mul (complex32)",
        _complex32_mul,
        rtol=1e-2,
        atol=1e-2,
    ),
    Workload("lgamma", "real", "torch.lgamma (float32)", _lgamma),
    Workload("prod", "reduction", "torch.prod (float32)", _prod),
    Workload("gcd", "integer", "torch.gcd (int64)", _gcd),
    Workload(
        "fused_gate",
        "fused",
        "TorchScript add, tanh, sigmoid, mul called 5 times (one fused kernel on the GPU)",
        _fused_gate,
        gpu_only=True,
    ),
)


def condense_error(exc: BaseException) -> str:
    """The exact error, short: PyTorch's NVRTC errors carry the whole generated source."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    chosen = next((line for line in lines if "nvrtc" in line.lower()), None)
    if chosen is None:
        chosen = lines[0] if lines else ""
    return f"{type(exc).__name__}: {chosen}"[:400]


def _compare(torch: Any, result: Any, reference: Any, workload: Workload) -> str | None:
    got = result.detach().cpu()
    if got.shape != reference.shape or got.dtype != reference.dtype:
        return (
            f"result has shape {tuple(got.shape)} {got.dtype}, the CPU reference "
            f"{tuple(reference.shape)} {reference.dtype}"
        )
    try:
        torch.testing.assert_close(
            got, reference, rtol=workload.rtol, atol=workload.atol, equal_nan=True
        )
    except AssertionError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return "differs from the CPU reference: " + "; ".join(lines[:3])
    return None


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def run_workloads(
    device: str,
    mode: str,
    emulate: str | None,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Child side: run every workload on *device* in *mode*; return the record."""
    import warnings

    warnings.simplefilter("ignore")
    record: dict[str, Any] = {"section": "smoke", "device": device, "mode": mode}
    from ..engine import apply, ladder

    if mode == "remedy":
        # As `run` and BLACKWELL_COMPAT_AUTO=1 do: before torch loads its own NVRTC.  The
        # emulated arch, if any, comes from the environment (the emulation must be on when
        # apply() asks which GPUs are affected).
        report = apply()
        record["applied"] = sorted(report.applied + report.pending)
        record["apply_failed"] = dict(report.failed)
        record["rungs"] = [service.rung for service in ladder()]
    import torch

    from ..emulation import emulate as emulate_arch

    chosen = [w for w in WORKLOADS if only is None or w.name in only]
    references: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for workload in chosen:
        if workload.needs and not _importable(workload.needs):
            skipped[workload.name] = f"{workload.needs} is not installed"
            continue
        if workload.gpu_only and not device.startswith("cuda"):
            skipped[workload.name] = "runs on a real GPU only"
            continue
        try:
            references[workload.name] = workload.run(torch, "cpu")
        except Exception as exc:
            skipped[workload.name] = f"the CPU reference failed: {condense_error(exc)}"
    context: AbstractContextManager[Any] = emulate_arch(emulate) if emulate else nullcontext()
    results: list[dict[str, Any]] = []
    with context:
        if mode == "patched":
            report = apply(force=True)
            record["applied"] = sorted(report.applied + report.pending)
            record["apply_failed"] = dict(report.failed)
        for workload in chosen:
            entry: dict[str, Any] = {
                "name": workload.name,
                "family": workload.family,
                "op": workload.op,
            }
            if workload.name in skipped:
                entry.update(status=SKIP, error=skipped[workload.name], seconds=0.0)
                results.append(entry)
                continue
            started = time.monotonic()
            try:
                value = workload.run(torch, device)
                if device.startswith("cuda"):
                    torch.cuda.synchronize(device)
                problem = _compare(torch, value, references[workload.name], workload)
            except Exception as exc:
                entry.update(status=FAIL, error=condense_error(exc))
            else:
                entry.update(status=FAIL if problem else PASS, error=problem)
            entry["seconds"] = round(time.monotonic() - started, 4)
            results.append(entry)
    record["results"] = results
    return record


def child_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blackwell_compat.doctor.smoke")
    parser.add_argument("--device", required=True)
    parser.add_argument("--mode", choices=(*MODES, "remedy"), required=True)
    parser.add_argument("--emulate", default=None)
    parser.add_argument("--only", default=None, help="comma list of workload names")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    only = [n for n in args.only.split(",") if n] if args.only else None
    try:
        record = run_workloads(args.device, args.mode, args.emulate, only)
    except Exception as exc:
        emit(
            {
                "section": "smoke",
                "device": args.device,
                "mode": args.mode,
                "error": condense_error(exc),
            }
        )
        return 1
    emit(record)
    return 0


# -- the doctor's side ----------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeTarget:
    device: str  # "cuda:0" or "cpu"
    label: str
    emulate: str | None = None  # the emulated arch when device is "cpu"

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "label": self.label, "emulate": self.emulate}


@dataclass(frozen=True)
class WorkloadResult:
    name: str
    family: str
    op: str
    status: str
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "op": self.op,
            "status": self.status,
            "error": self.error,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class SmokeRun:
    target: SmokeTarget
    mode: str
    results: tuple[WorkloadResult, ...] = ()
    applied: tuple[str, ...] = ()
    error: str | None = None  # the child failed as a whole (crash, timeout)
    seconds: float = 0.0
    jiterator_kernels: int | None = None  # kernels NVRTC compiled during the run (CUDA)
    rungs: tuple[str, ...] = ()  # remedy mode: the rung that served each GPU (engine.ladder())

    @property
    def failures(self) -> tuple[WorkloadResult, ...]:
        return tuple(r for r in self.results if r.status == FAIL)

    @property
    def ran(self) -> tuple[WorkloadResult, ...]:
        return tuple(r for r in self.results if r.status != SKIP)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.as_dict(),
            "mode": self.mode,
            "results": [r.as_dict() for r in self.results],
            "applied": list(self.applied),
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "jiterator_kernels": self.jiterator_kernels,
            "rungs": list(self.rungs),
        }


@dataclass(frozen=True)
class SmokeReport:
    runs: tuple[SmokeRun, ...] = ()
    skipped: str | None = None  # why nothing ran
    targets: tuple[SmokeTarget, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "targets": [t.as_dict() for t in self.targets],
            "runs": [r.as_dict() for r in self.runs],
        }


def targets_for(platform: Platform, torch_facts: TorchFacts) -> list[SmokeTarget]:
    """Every CUDA device torch sees, plus the CPU when emulation is on."""
    targets = [
        SmokeTarget(device=f"cuda:{d.index}", label=f"cuda:{d.index} {d.name} ({d.arch})")
        for d in torch_facts.devices
    ]
    if platform.emulated_arch:
        arch = platform.emulated_arch
        targets.append(SmokeTarget(device="cpu", label=f"CPU emulating {arch}", emulate=arch))
    return targets


def _count_files(folder: str) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _run_one(
    target: SmokeTarget,
    mode: str,
    timeout: float,
    env: Mapping[str, str] | None,
    only: Sequence[str] | None,
) -> SmokeRun:
    from ..config import AUTO, EMULATE
    from .process import child_env, module_argv, run_child

    cache = tempfile.mkdtemp(prefix="bc-smoke-kernels-")
    try:
        extra = {"PYTORCH_KERNEL_CACHE_PATH": cache}
        by_env = mode == "remedy" and target.emulate is not None
        if by_env:
            extra[EMULATE] = str(target.emulate)  # on from the start, as under `run`
        environment = child_env(env, drop=(EMULATE, AUTO, "USE_PYTORCH_KERNEL_CACHE"), set_=extra)
        args = ["--device", target.device, "--mode", mode]
        if target.emulate and not by_env:
            args += ["--emulate", target.emulate]
        if only:
            args += ["--only", ",".join(only)]
        child = run_child(module_argv(_CHILD, *args), timeout=timeout, env=environment)
        kernels = _count_files(cache) if target.device.startswith("cuda") else None
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    record = child.record("smoke")
    if record is None or "results" not in record:
        why = (record or {}).get("error") or child.error or "the child reported nothing"
        return SmokeRun(
            target=target,
            mode=mode,
            error=str(why),
            seconds=child.seconds,
            jiterator_kernels=kernels,
        )
    results = tuple(
        WorkloadResult(
            name=str(r.get("name")),
            family=str(r.get("family")),
            op=str(r.get("op")),
            status=str(r.get("status")),
            error=r.get("error"),
            seconds=float(r.get("seconds") or 0.0),
        )
        for r in record["results"]
    )
    error = None
    if child.error is not None:
        error = f"the child process {child.error} after reporting"
    failed = record.get("apply_failed") or {}
    if failed:
        listing = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
        error = f"apply() reported failures: {listing}" + (f"; {error}" if error else "")
    return SmokeRun(
        target=target,
        mode=mode,
        results=results,
        applied=tuple(record.get("applied") or ()),
        error=error,
        seconds=child.seconds,
        jiterator_kernels=kernels,
        rungs=tuple(str(r) for r in record.get("rungs") or ()),
    )


def run_smoke(
    targets: Sequence[SmokeTarget],
    torch_facts: TorchFacts,
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    only: Sequence[str] | None = None,
    remedy: bool = False,
) -> SmokeReport:
    """Run the workloads on each target, unpatched then patched (*remedy*: then through the
    NVRTC remedy, the rung the doctor recommends), each in its own child."""
    if not torch_facts.installed:
        return SmokeReport(skipped="torch is not installed", targets=tuple(targets))
    if not targets:
        return SmokeReport(
            skipped=(
                "no CUDA device visible to torch; set BLACKWELL_COMPAT_EMULATE=sm_121 to run "
                "the workloads on CPU tensors under emulation"
            )
        )
    modes = REMEDY_MODES if remedy else MODES
    runs = [_run_one(target, mode, timeout, env, only) for target in targets for mode in modes]
    return SmokeReport(runs=tuple(runs), targets=tuple(targets))


if __name__ == "__main__":
    sys.exit(child_main())
