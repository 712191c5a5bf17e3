"""The ``fuser`` patch: the fuser rung of the remedy ladder (docs/remedies.md).

Where the NVRTC remedy does not serve an affected GPU, fused TorchScript kernels would be
compiled with torch's NVRTC and fail; this patch turns GPU fusion off with torch's own switch
(:mod:`blackwell_compat.remedies.fuser` says which, and why), so scripted functions run op by op
through precompiled kernels and their Jiterator ops reach the op guard.  A patch, so that it
waits for ``import torch``, honours ``exclude``/``BLACKWELL_COMPAT_DISABLE`` and shows in
``status()`` and ``list`` like the others.
"""

from __future__ import annotations

import types

from .. import state as process_state
from ..errors import logger
from ..remedies import fuser
from ..toolkit import Patch, PatchContext

__all__ = ["FuserPatch"]


class FuserPatch(Patch):
    name = "fuser"
    summary = (
        "fuser rung: TorchScript's fused GPU kernels are not compiled for GPUs the installed "
        "NVRTC does not know (GPU fusion off; scripted functions run op by op)"
    )
    distribution = "torch"
    supported = ">=2.6,<2.16"  # the switches measured in scripts/fuser_switches.py
    modules = ("torch",)
    requires_affected = True
    docs = "docs/remedies.md"

    def check(self, module: types.ModuleType) -> list[str]:
        """The switch, its getter and the plan reader this torch must have."""
        return fuser.missing_switches(module)

    def apply(self, module: types.ModuleType, ctx: PatchContext) -> None:
        emulating = process_state.emulated_arch() is not None
        result = fuser.activate(module, emulating=emulating)
        ctx.on_revert(lambda: _restore(module), "give GPU fusion back to the user's setting")
        ctx.note(result.describe())


def _restore(module: types.ModuleType) -> None:
    for message in fuser.deactivate(module):
        logger.warning("revert: %s", message)
