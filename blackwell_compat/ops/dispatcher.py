"""The dispatcher registration shared by the op guard and emulation.

``torch.library`` refuses a second Python kernel for the same op and dispatch key, so the guard
and the emulation cannot each register their own.  This module owns the only registration of the
kernel (:mod:`.kernel`) and keeps it matching what the process state needs: ``CUDA`` while the
guard is on, ``CPU`` while emulation is active.

Two registrations exist, chosen by the installed torch:

``backend`` (torch >= 2.9)
    The kernel is registered at the backend keys, ``CPU`` (needed while emulation is active) and
    ``CUDA`` (needed while the guard is applied).  The original kernel is captured with
    ``torch.library.get_kernel`` and called with ``call_boxed``.
``backend-select`` (older torch, no ``get_kernel``)
    The kernel is registered at ``BackendSelect``, the dispatch key every call passes through
    just below autograd and just above the backend kernels (it is in the default included
    set, also under ``inference_mode``).  The original kernel is reached by re-dispatching to
    the keys after ``BackendSelect``.  One registration serves every device.

Either way the kernel sits in the dispatcher: every thread and every C++ call site goes through
it, and composite ops reach it after they decomposed, so it sees exactly the kernels that would
run on the device.  Nothing is thread-local except the "calling an original kernel" depth
(:func:`blackwell_compat.state.bypass`) that keeps recursion out of the original kernels.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import state
from ..errors import ConfigError, logger
from ..state import bypass, bypassing
from .discovery import overload_specs
from .kernel import make_kernel
from .originals import original_for
from .spec import MODE_EMULATE, MODE_GUARD, JitCall, OverloadSpec

__all__ = [
    "BACKEND",
    "BACKEND_SELECT",
    "MODE_EMULATE",
    "MODE_GUARD",
    "REGISTRATIONS",
    "JitCall",
    "OverloadSpec",
    "bypass",
    "bypassing",
    "disable_guard",
    "enable_guard",
    "ensure_installed_when_torch_imported",
    "guard_enabled",
    "installed_keys",
    "overload_specs",
    "registration",
    "set_recorder",
    "set_registration",
    "status",
    "sync",
]

BACKEND = "backend"
BACKEND_SELECT = "backend-select"
#: The ways of registering the kernel (see the module docstring).
REGISTRATIONS = (BACKEND, BACKEND_SELECT)

_hook_registered = False

# key ("CPU", "CUDA" or "BackendSelect") -> installed registration
_installed: dict[str, _Registration] = {}


def guard_enabled() -> bool:
    return state.guard_enabled


def registration() -> str:
    """The registration in use (see the module docstring)."""
    if state.registration_override is not None:
        return state.registration_override
    import torch  # torch is imported lazily throughout the package (import cost)

    return BACKEND if hasattr(torch.library, "get_kernel") else BACKEND_SELECT


def set_registration(name: str | None) -> None:
    """Force a registration (tests, diagnostics); ``None`` goes back to automatic.

    Re-registers whatever is installed.  ``backend`` needs torch >= 2.9.
    """
    if name is not None and name not in REGISTRATIONS:
        raise ConfigError(f"unknown dispatcher registration {name!r}; use one of {REGISTRATIONS}")
    with state.lock:
        if name == BACKEND:
            import torch

            if not hasattr(torch.library, "get_kernel"):
                raise ConfigError(
                    f"the {BACKEND!r} registration needs torch.library.get_kernel "
                    f"(torch >= 2.9); torch {torch.__version__} has none"
                )
        _uninstall_all()
        state.registration_override = name
        sync()


def enable_guard() -> None:
    """Turn the op guard on (called by the ``torch`` patch) and register what it needs."""
    with state.lock:
        state.guard_enabled = True
        sync()


def disable_guard() -> None:
    """Turn the op guard off and remove the registrations only it needed."""
    with state.lock:
        state.guard_enabled = False
        sync()


def set_recorder(recorder: Callable[[JitCall], None] | None) -> Callable[[JitCall], None] | None:
    """Record calls instead of raising under emulation (``audit``); returns the previous one.

    While a recorder is set, an emulated call is reported to it and then computed with the
    original kernel, so the program continues with the correct result.  Calls rewritten by
    the guard are reported too, with ``mode="guard"``.
    """
    with state.lock:
        previous = state.recorder
        state.recorder = recorder
        return previous


# -- installation -------------------------------------------------------------------------------


def ensure_installed_when_torch_imported() -> None:
    """Register what the current state needs now if torch is imported, else when it is."""
    global _hook_registered
    if "torch" in sys.modules:
        sync()
        return
    with state.lock:
        if _hook_registered:
            return
        _hook_registered = True
    import wrapt  # only when torch is not imported yet (import cost)

    def on_torch(module: types.ModuleType) -> None:
        global _hook_registered
        _hook_registered = False
        try:
            sync()
        except Exception as exc:  # never break `import torch`
            logger.warning("blackwell-compat: installing the dispatcher kernels failed: %s", exc)

    wrapt.register_post_import_hook(on_torch, "torch")


def _wanted_keys() -> set[str]:
    cpu = state.emulation_active()
    cuda = state.guard_enabled
    if registration() == BACKEND_SELECT:
        return {"BackendSelect"} if (cpu or cuda) else set()
    keys = set()
    if cpu:
        keys.add("CPU")
    if cuda:
        keys.add("CUDA")
    return keys


def sync() -> None:
    """Make the installed registrations match what the guard and emulation need.

    Does nothing before torch is imported (the post-import hook calls it later).
    """
    if "torch" not in sys.modules:
        return
    with state.lock:
        wanted = _wanted_keys()
        for key in list(_installed):
            if key not in wanted:
                _installed.pop(key).destroy()
        for key in sorted(wanted):
            if key not in _installed:
                _installed[key] = _Registration.create(key)


def _uninstall_all() -> None:
    with state.lock:
        for key in list(_installed):
            _installed.pop(key).destroy()


state.on_reset(_uninstall_all)


def installed_keys() -> list[str]:
    with state.lock:
        return sorted(_installed)


def status() -> dict[str, Any]:
    """What is registered, for ``status()`` notes, the doctor and tests."""
    with state.lock:
        result: dict[str, Any] = {
            "guard": state.guard_enabled,
            "emulation": state.emulated_arch(),
            "keys": {key: len(reg.specs) for key, reg in _installed.items()},
        }
        if "torch" in sys.modules:
            result["registration"] = registration()
        problems = [p for reg in _installed.values() for p in reg.problems]
        if problems:
            result["problems"] = problems
        return result


@dataclass
class _Registration:
    """The ``torch.library.Library`` holding the kernels for one dispatch key."""

    key: str
    library: Any
    specs: list[OverloadSpec] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, key: str) -> _Registration:
        import torch

        library_type: Any = torch.library.Library
        library = library_type("aten", "IMPL")
        reg = cls(key=key, library=library)
        with warnings.catch_warnings():
            # Overriding a backend kernel makes torch warn once per process; the override is
            # the whole point, and revert() removes it again.
            warnings.filterwarnings("ignore", message=".*[Oo]verrid.*")
            for spec in overload_specs():
                try:
                    original = original_for(spec, key)
                    if original is None:
                        continue
                    library.impl(spec.impl_name, make_kernel(spec, original), key, with_keyset=True)
                except Exception as exc:  # one odd overload must not block the rest
                    reg.problems.append(f"{spec.qualified} at {key}: {type(exc).__name__}: {exc}")
                    continue
                reg.specs.append(spec)
        if reg.problems:
            logger.warning(
                "blackwell-compat: %d overload(s) could not be intercepted at %s: %s",
                len(reg.problems),
                key,
                "; ".join(reg.problems[:5]),
            )
        logger.debug("registered %d kernels at %s", len(reg.specs), key)
        return reg

    def destroy(self) -> None:
        try:
            self.library._destroy()
        except Exception as exc:  # pragma: no cover - torch internals
            logger.warning("blackwell-compat: removing the %s kernels failed: %s", self.key, exc)
