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
import sys

from . import _forksafe
from .versions import __version__

TYPE_CHECKING = False  # typing is not loaded at interpreter start-up, where the hook imports this
if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from typing import Any

    from .emulation import emulate
    from .engine import (
        ApplyReport,
        GpuService,
        PatchStatus,
        apply,
        ladder,
        patched,
        revert,
        status,
    )
    from .errors import BlackwellCompatError, BlackwellCompatWarning, ConfigError
    from .probing import GPU, NvrtcInfo, Platform, probe
    from .registry import Patch, PatchContext

_LAZY: dict[str, str] = {
    "apply": "engine",
    "revert": "engine",
    "patched": "engine",
    "status": "engine",
    "ladder": "engine",
    "GpuService": "engine",
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
    "GpuService",
    "NvrtcInfo",
    "Patch",
    "PatchContext",
    "PatchStatus",
    "Platform",
    "__version__",
    "apply",
    "emulate",
    "ladder",
    "patched",
    "probe",
    "revert",
    "status",
]


#: The names whose first use runs the start-up activation the hook armed (it would otherwise
#: wait for ``import torch``): what they answer depends on it.
_START_UP_FIRST = frozenset({"apply", "revert", "patched", "status", "ladder", "probe"})
#: The import that runs what the start-up hook and ``BLACKWELL_COMPAT_EMULATE`` armed.
_TRIGGER = "torch"


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'blackwell_compat' has no attribute {name!r}")
    trigger = sys.modules.get(f"{__name__}.import_trigger")  # armed only if it is imported
    if trigger is not None and name in _START_UP_FIRST:
        trigger.fire(_TRIGGER)
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _honour_environment() -> None:
    """The import's only work: what two variables ask of every process that imports the package.

    Each costs one dictionary lookup when unset (``tests/test_init.py`` holds the import cheap):

    - ``BLACKWELL_COMPAT_EMULATE``: emulation for the whole process.  The architecture (and
      the device of ``BLACKWELL_COMPAT_EMULATE_DEVICE``) is read
      here (the probe reports it from now on); the emulation itself (its kernels) is set up when
      torch is first imported, or at the first use of the API.  A malformed value raises here,
      except under the command line, which reports it as a usage error (one line, exit status 2)
      from ``main()``;
    - the audit's variable (set by ``blackwell-compat audit`` for the processes of the program it
      runs): record into that audit.  A failure to join never stops the program: the audit then
      reports this process as not covered.
    """
    if os.environ.get("BLACKWELL_COMPAT_EMULATE", "").strip():
        # Imported here, not at module level: config and state cost about 10 ms (logging,
        # threading); the emulation itself brings the ops layer, the probe and wrapt (60-160 ms,
        # measured with -X importtime), paid only when torch is imported.
        from . import config, import_trigger, state
        from .errors import ConfigError
        from .invocation import running_the_cli

        try:
            state.env_arch = config.emulated_arch_from_env()
            state.env_device = config.emulated_device_from_env()
        except ConfigError:
            if not running_the_cli():
                raise
            # The command line reports it as a usage error (one line, exit status 2) from
            # main(): it judges the same variable with config.environment_problems.
        else:
            import_trigger.before_import(_TRIGGER, _start_emulation)
    if os.environ.get("_BLACKWELL_COMPAT_AUDIT"):
        try:
            # Only in the audit's processes (the audit module alone: 20-40 ms).
            from .audit import join_from_environment

            join_from_environment()
        except Exception as exc:  # pragma: no cover - reported by the auditing process
            import sys

            print(f"blackwell-compat: audit: this process could not join: {exc}", file=sys.stderr)


def _start_emulation() -> None:
    """Install the emulation's kernels for the architecture read at import (at ``import torch``),
    and the emulated CUDA device once torch is imported when ``BLACKWELL_COMPAT_EMULATE_DEVICE``
    asks for it."""
    from .emulation import sync_device_when_torch_imported, sync_kernels  # see above

    sync_kernels()
    sync_device_when_torch_imported()


# Children of ``os.fork()`` get the package's locks free (see ``_forksafe``).
_forksafe.install()
_honour_environment()
