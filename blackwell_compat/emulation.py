"""``bc.emulate()``: make CPU tensors fail the way they fail on an affected GPU.

Inside ``with bc.emulate("sm_121"):`` (or with ``BLACKWELL_COMPAT_EMULATE=sm_121`` in the
environment) every op/dtype pair of the Jiterator inventory (:mod:`blackwell_compat.ops.inventory`)
raises, for CPU tensors, the ``RuntimeError`` PyTorch raises on a GPU whose architecture the
loaded NVRTC does not know.  Other ops, other dtypes and empty tensors keep working.  While
emulation is active the probe reports the emulated GPU as affected, so ``bc.apply()`` applies
the op guard, and the guard treats CPU tensors as living on the affected device.

The emulation state lives in :mod:`blackwell_compat.state` (the probe reads it there).  The
dispatcher kernels live in :mod:`blackwell_compat.ops` and are installed when torch is (or gets)
imported, and removed again when the last emulation ends.

Fused kernels of scripted functions (:mod:`blackwell_compat.fused_kernels`) and user Jiterator
kernels (:mod:`blackwell_compat.user_kernels`) fail too, at the call where the GPU would compile
them; this module builds their errors and arms their watches with the dispatcher kernels.

Emulation is process-wide, not per thread: on a real affected GPU every thread fails.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from . import config, emulated_device, fused_kernels, state, user_kernels
from .errors import NVRTC_ARCH_ERROR_LINE, ConfigError
from .fused_kernels import FusedGroup
from .ops import dispatcher, kernel
from .ops.spec import JitCall
from .probing import probe
from .probing.isolation import default_timeout, run_test_child

#: nvrtcResult code for that failure (NVRTC_ERROR_INVALID_OPTION).
NVRTC_ERROR_INVALID_OPTION = 5

# arch@library -> (log, library path) or None when that NVRTC could not reproduce the failure.
# A memo of facts about library files (guarded by state.lock), not process state a test resets.
_compile_cache: dict[str, tuple[str, str] | None] = {}

#: The emulated architecture in force, or ``None`` (see :func:`.state.emulated_arch`).
current_arch = state.emulated_arch
#: Whether emulation is on (called for every intercepted op: no lock on the fast path).
is_active = state.emulation_active
#: In the calling thread only, run the block as if no emulation were active.  For code that
#: stands for work done on the real CPU while the CPU plays the affected GPU: the ``cpu``
#: strategies of the targeted patches compute their reference result inside it.
suspended = state.suspended


def sync_kernels() -> None:
    """Install the emulation kernels the state asks for now, or when torch is imported; remove
    unused ones (the package root calls it at ``import torch`` for
    ``BLACKWELL_COMPAT_EMULATE``, whose architecture it read at import)."""
    dispatcher.ensure_installed_when_torch_imported()
    fused_kernels.sync()
    user_kernels.sync()


def emulate(arch: str = "sm_121", device: str = "cpu") -> AbstractContextManager[str]:
    """Inside the block, Jiterator-bound ops raise the affected GPU's error.

    ``device="cpu"`` (the default, the behaviour every existing suite relies on): CPU tensors
    play the GPU and fail.  ``device="cuda"``: the process gets an emulated CUDA device backed
    by CPU memory (:mod:`blackwell_compat.emulated_device`); only its tensors fail, CPU tensors
    never do, and the program's own GPU code path (``.to("cuda")``, ``torch.cuda.*``) runs.

    Blocks may nest (the innermost arch wins; a ``cpu`` block inside a ``cuda`` one is refused:
    the device's tensors would stay).  The arguments are checked by the call itself, before any
    block is entered: a non-``str`` (``emulate(None)``, ``emulate(123)``) is a ``TypeError``, a
    malformed value a :class:`~blackwell_compat.ConfigError`, both naming the accepted forms.
    """
    normalised = config.parse_arch(arch, source="emulate(arch=...)")
    kind = config.parse_emulated_device(device, source="emulate(device=...)")
    return _emulation(normalised, kind)


@contextmanager
def _emulation(normalised: str, device: str = "cpu") -> Iterator[str]:
    stack = state.emulation_stack
    with state.lock:
        if device == "cpu" and state.device_mode:
            raise ConfigError(
                "emulate(device='cpu') inside emulation with device='cuda': the emulated CUDA "
                "device and its tensors stay until that emulation ends; end it first, or "
                "nest emulate(arch, device='cuda')"
            )
        stack.append(normalised)
        state.device_stack.append(device)
    try:
        sync_kernels()
        emulated_device.sync()
        yield normalised
    finally:
        with state.lock:
            # Remove the innermost occurrence: blocks may nest with the same arch.
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] == normalised and state.device_stack[i] == device:
                    del stack[i]
                    del state.device_stack[i]
                    break
        if "torch" in sys.modules:
            emulated_device.sync()
            dispatcher.sync()
        fused_kernels.sync()
        user_kernels.sync()


def activate_from_environment() -> None:
    """Turn on emulation for the whole process from ``BLACKWELL_COMPAT_EMULATE``."""
    arch = config.emulated_arch_from_env()  # raises ConfigError when malformed
    if arch is None:
        return
    device = config.emulated_device_from_env()
    state.env_arch = arch
    state.env_device = device
    sync_kernels()
    sync_device_when_torch_imported()


def sync_device_when_torch_imported() -> None:
    """Install the emulated CUDA device ``BLACKWELL_COMPAT_EMULATE_DEVICE=cuda`` asks for now
    if torch is imported, else just after ``import torch`` (the device wraps torch)."""
    if state.env_device == "cuda":
        emulated_device.sync()


# -- the error ------------------------------------------------------------------------------------


def _nvrtc_library() -> str | None:
    """The NVRTC library torch would load, as the probe finds it (``None`` if unknown).

    Only a library the probe could read, which means a test process loaded and called it and
    survived, is returned: a crashing, hanging or working-directory library is never loaded here.
    """
    try:
        nvrtc = probe().nvrtc
    except Exception:  # the probe never raises by contract; be safe anyway
        return None
    if not nvrtc.known or nvrtc.crash is not None:
        return None
    return nvrtc.path if isinstance(nvrtc.path, str) else None


def compile_log(arch: str, library: str, *, timeout: float | None = None) -> tuple[int, str]:
    """Compile a tiny program for *arch* with the NVRTC at *library*: ``(result, log)``.

    ``result`` is NVRTC's return code (0 success, 5 ``NVRTC_ERROR_INVALID_OPTION``).  The
    compile runs in the probe's test process (:func:`~blackwell_compat.probing.isolation.
    run_test_child`: own interpreter, time limit), never in this process: a library that passed
    the probe's version and arch calls may still crash or hang when it compiles, and that must
    not take the program down.  Raises ``OSError`` when it could not compile (not an NVRTC
    library, a crash, a signal, a hang).
    """
    limit = default_timeout() if timeout is None else timeout
    outcome = run_test_child("compile", library, limit, arch)
    answer = outcome.result
    if outcome.failure is not None:
        raise OSError(f"the process compiling with {library} {outcome.what_happened()}")
    if answer is None:
        raise OSError(f"the process compiling with {library} gave no answer")
    if "error" in answer:
        raise OSError(str(answer["error"]))
    return int(answer["result"]), str(answer["log"])


def real_nvrtc_log(arch: str, library: str | None = None) -> tuple[str, str] | None:
    """``(log, library)`` when an NVRTC really fails to compile for *arch*, else ``None``.

    Uses *library* or the NVRTC the probe says torch loads.  Cached per arch (and library).
    """
    library = library or _nvrtc_library()
    if not library:
        return None
    key = f"{arch}@{library}"
    with state.lock:
        if key in _compile_cache:
            return _compile_cache[key]
    try:
        result, log_text = compile_log(arch, library)
    except OSError:
        outcome = None
    else:
        failed = result == NVRTC_ERROR_INVALID_OPTION and "gpu-architecture" in log_text
        outcome = (log_text.strip(), library) if failed else None
    with state.lock:
        _compile_cache[key] = outcome
    return outcome


def _nvrtc_log(arch: str) -> tuple[str, str]:
    """``(log, origin)``: the NVRTC log for *arch* and where it came from."""
    real = real_nvrtc_log(arch)
    if real is not None:
        log_text, library = real
        origin = f"log produced by compiling for {arch} with {library}"
    else:
        log_text = NVRTC_ARCH_ERROR_LINE
        origin = (
            f"log reproduced: no installed NVRTC lacks {arch}, so the message is the one "
            "NVRTC 12.8 prints"
        )
    if NVRTC_ARCH_ERROR_LINE not in log_text:
        log_text = f"{log_text}\n{NVRTC_ARCH_ERROR_LINE}".strip()
    return log_text, origin


def _fix_text(arch: str, other: str) -> str:
    return (
        f"Fix: give torch an NVRTC that knows {arch}: `python -m blackwell_compat fetch nvrtc`, "
        "then start the program with `python -m blackwell_compat run -- ...` (or call "
        f"bc.apply() before `import torch`); {other} `python -m blackwell_compat audit` lists "
        "every such call site."
    )


def fused_kernel_error(function: str, group: FusedGroup, arch: str) -> RuntimeError:
    """The ``RuntimeError`` an affected GPU raises when NNC compiles *group* of the scripted
    *function*: NVRTC's log, then ``nvrtc compilation failed:`` and the kernel's name, as
    ``CudaCodeGen`` writes them (the generated CUDA source itself is not reproduced)."""
    log_text, origin = _nvrtc_log(arch)
    where = f" (fused at {group.where})" if group.where else ""
    message = (
        f"{log_text}\n"
        f"nvrtc compilation failed: \n"
        f"fused kernel {group.kernel} ({', '.join(group.ops)}; {group.dtype or 'unknown dtype'})"
        "\n\n"
        f"[blackwell-compat emulation of {arch}] The scripted function {function!r} has a "
        f"fusion group (prim::TensorExprGroup){where} that the TorchScript fuser (NNC) compiles "
        f"at run time with NVRTC, which fails for {arch}. {origin}.\n"
        + _fix_text(
            arch,
            "where that cannot serve, bc.apply() turns the GPU fuser off (the fuser rung: the "
            "function then runs op by op through precompiled kernels).",
        )
    )
    return RuntimeError(message)


def user_kernel_error(call: JitCall, arch: str) -> RuntimeError:
    """The ``RuntimeError`` an affected GPU raises for a user Jiterator kernel
    (``torch.cuda.jiterator._create_jit_fn``): only the NVRTC remedy serves it."""
    log_text, origin = _nvrtc_log(arch)
    message = (
        f"{log_text}\n\n"
        f"[blackwell-compat emulation of {arch}] The Jiterator kernel {call.kernel!r} the "
        f"program wrote (torch.cuda.jiterator._create_jit_fn, dtype {call.dtype}) is compiled "
        f"at run time with NVRTC, which fails for {arch}. {origin}.\n"
        + _fix_text(
            arch,
            "no other rung serves it (the op guard cannot rewrite user C++ code): where the "
            "remedy cannot serve, compute it with torch ops instead.",
        )
    )
    return RuntimeError(message)


def jiterator_error(call: JitCall, arch: str | None = None) -> RuntimeError:
    """The ``RuntimeError`` an affected GPU raises for *call* (emulated on a CPU tensor).

    Its message contains NVRTC's own log line ``nvrtc: error: invalid value for
    --gpu-architecture (-arch)``; where an NVRTC that lacks the arch is installed, the log is
    produced by really compiling with it.
    """
    arch = arch or current_arch() or "sm_121"
    log_text, origin = _nvrtc_log(arch)
    message = (
        f"{log_text}\n\n"
        f"[blackwell-compat emulation of {arch}] The Jiterator kernel {call.kernel!r} "
        f"({call.op}, dtype {call.dtype}) is compiled at run time with NVRTC, which fails for "
        f"{arch}. Source: {call.source}. {origin}.\n"
        f"Fix: give torch an NVRTC that knows {arch}: `python -m blackwell_compat fetch nvrtc`, "
        "then start the program with `python -m blackwell_compat run -- ...` (or call "
        "bc.apply() before `import torch`); where that cannot serve, bc.apply() serves it with "
        "the op guard and the targeted patches. `python -m blackwell_compat audit` lists every "
        "such call site."
    )
    return RuntimeError(message)


# The ops layer never imports this module: it learns the emulated error from here.
kernel.set_emulated_failure(jiterator_error)
fused_kernels.set_failure(fused_kernel_error)
user_kernels.set_failure(user_kernel_error)
