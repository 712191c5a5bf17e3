"""Run PyTorch models on NVIDIA GPUs whose architecture the installed NVRTC does not know.

``import blackwell_compat`` is deliberately cheap: it imports neither torch nor any target
library, nor the registry's dependencies.  Every public name is resolved on first use.

    import blackwell_compat as bc
    bc.apply()                 # patch what this machine needs
    bc.status()                # what is patched, pending or skipped, and why
    bc.revert()                # undo everything, object identity included
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .emulation import emulate
    from .engine import ApplyReport, PatchStatus, apply, patched, revert, status
    from .errors import BlackwellCompatError, BlackwellCompatWarning, ConfigError
    from .probing import GPU, NvrtcInfo, Platform, probe
    from .registry import Patch, PatchContext

_LAZY: dict[str, str] = {
    "apply": "engine",
    "revert": "engine",
    "patched": "engine",
    "status": "engine",
    "ApplyReport": "engine",
    "PatchStatus": "engine",
    "Patch": "registry",
    "PatchContext": "registry",
    "probe": "probing",
    "Platform": "probing",
    "GPU": "probing",
    "NvrtcInfo": "probing",
    "emulate": "emulation",
    "BlackwellCompatWarning": "errors",
    "BlackwellCompatError": "errors",
    "ConfigError": "errors",
}

__all__ = [
    "GPU",
    "ApplyReport",
    "BlackwellCompatError",
    "BlackwellCompatWarning",
    "ConfigError",
    "NvrtcInfo",
    "Patch",
    "PatchContext",
    "PatchStatus",
    "Platform",
    "__version__",
    "apply",
    "emulate",
    "patched",
    "probe",
    "revert",
    "status",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'blackwell_compat' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _activate_env_emulation() -> None:
    """Honour ``BLACKWELL_COMPAT_EMULATE`` as soon as the package is imported.

    Only when the variable is set: then torch gets the emulation kernels as soon as it is
    imported.  Unset, this costs one dictionary lookup.
    """
    if os.environ.get("BLACKWELL_COMPAT_EMULATE", "").strip():
        from .emulation import activate_from_environment
        from .errors import ConfigError
        from .invocation import running_the_cli

        try:
            activate_from_environment()
        except ConfigError:
            if not running_the_cli():
                raise
            # The CLI reports it as a usage error (one line, exit status 2) from main(): it
            # judges the same variable with config.environment_problems.


def _install_fork_handlers() -> None:
    """Children of ``os.fork()`` get the package's locks free (see ``_forksafe``)."""
    from . import _forksafe

    _forksafe.install()


def _join_audit() -> None:
    """In a process a program under ``audit`` started: record into that audit.

    Only when the audit's variable is set (one dictionary lookup otherwise).  A failure to
    join never stops the program: the audit then reports this process as not covered.
    """
    if os.environ.get("_BLACKWELL_COMPAT_AUDIT"):
        try:
            from .audit import join_from_environment

            join_from_environment()
        except Exception as exc:  # pragma: no cover - reported by the auditing process
            import sys

            print(f"blackwell-compat: audit: this process could not join: {exc}", file=sys.stderr)


_install_fork_handlers()
_activate_env_emulation()
_join_audit()
