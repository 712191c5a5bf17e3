"""The public toolkit for patch authors: everything a built-in or third-party patch uses.

A targeted patch says *what* to rewrite and *what it relies on*, and the toolkit does the rest::

    from blackwell_compat.toolkit import DeclaredPatch, Expect, Rewrite

    class AcmePatch(DeclaredPatch):
        name = "acme"
        ...
        declarations = (Rewrite(Expect("acme.dsp", "energy", names=("abs",)), rewrite=real_energy),)

- **Declarations** (:class:`DeclaredPatch`, :class:`Rewrite`, :class:`Expect`): the target
  and its drift expectation (an :class:`Expect`), the replacement or how to build it, the
  deciding argument, the strategies.
- **Router** (:func:`route`, :func:`served`): calls on a served device take the rewrite, every
  other call the original.
- **Drift checks** (:mod:`blackwell_compat.toolkit.drift`): parameters, referenced names,
  defaults, literal constants, versions of other distributions.
- **CPU round trip** (:func:`call_on_cpu`, :func:`move_tensors`, :func:`map_tensors`,
  :func:`outside_emulation`).
- **In-place code swap** (:func:`swap_code`, :func:`is_swapped`; what
  ``PatchContext.replace_function`` uses).
- **Scoped torch.load allow-list** (:mod:`blackwell_compat.toolkit.safe_globals`).
- For a patch that keeps its own ``apply``: :class:`Patch` and :class:`PatchContext`.

This module and the names it exports are public API: third-party patches may rely on them.
"""

from __future__ import annotations

from ..inplace import CodeSwap, InPlaceUnsupported, copy_function, is_swapped, swap_code
from . import drift, safe_globals
from .declare import DeclaredPatch, Rewrite
from .drift import (
    AS_REWRITE,
    Expect,
    class_problems,
    constants_problems,
    defaults_problems,
    function_problems,
    parameter_names,
    referenced_names,
    version_problems,
)
from .patch import Patch, PatchContext
from .roundtrip import call_on_cpu, map_tensors, move_tensors, outside_emulation
from .router import Selector, route, served, served_device

__all__ = [
    "AS_REWRITE",
    "CodeSwap",
    "DeclaredPatch",
    "Expect",
    "InPlaceUnsupported",
    "Patch",
    "PatchContext",
    "Rewrite",
    "Selector",
    "call_on_cpu",
    "class_problems",
    "constants_problems",
    "copy_function",
    "defaults_problems",
    "drift",
    "function_problems",
    "is_swapped",
    "map_tensors",
    "move_tensors",
    "outside_emulation",
    "parameter_names",
    "referenced_names",
    "route",
    "safe_globals",
    "served",
    "served_device",
    "swap_code",
    "version_problems",
]
