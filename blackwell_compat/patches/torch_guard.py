"""The ``torch`` patch: the op guard.

For every op/dtype of the Jiterator inventory, a Jiterator-free implementation is installed in
PyTorch's dispatcher for tensors on an affected CUDA device (and for CPU tensors while emulation
is active).  It is a dispatcher kernel, so every thread and every C++ call site is covered; it
is not a thread-local mode and it does not spoof the compute capability.  Other dtypes and
devices reach PyTorch's own kernels unchanged.  See ``docs/op-guard.md``.
"""

from __future__ import annotations

import types

from ..toolkit import Patch, PatchContext


class TorchGuardPatch(Patch):
    name = "torch"
    summary = (
        "op guard: Jiterator-free rewrites of every op PyTorch compiles with NVRTC at run time, "
        "for tensors on GPUs the installed NVRTC does not know"
    )
    distribution = "torch"
    supported = ">=2.6"
    modules = ("torch",)
    requires_affected = True
    docs = "docs/op-guard.md"

    def check(self, module: types.ModuleType) -> list[str]:
        """The dispatcher hooks the guard needs, for the strategy this torch gets."""
        problems = []
        library = getattr(module, "library", None)
        if library is None or not hasattr(library, "Library"):
            problems.append("torch.library.Library is missing")
        c = getattr(module, "_C", None)
        for name in (
            "_dispatch_has_kernel_for_dispatch_key",
            "DispatchKey",
            "DispatchKeySet",
        ):
            if not hasattr(c, name):
                problems.append(f"torch._C.{name} is missing")
        if library is not None and not hasattr(library, "get_kernel"):
            # Older torch: kernels go to BackendSelect and re-dispatch below it.
            if not hasattr(c, "_dispatch_keyset_full_after"):
                problems.append(
                    "torch._C._dispatch_keyset_full_after is missing (needed without "
                    "torch.library.get_kernel, i.e. before torch 2.9)"
                )
        return problems

    def apply(self, module: types.ModuleType, ctx: PatchContext) -> None:
        from ..ops import dispatcher as dispatch
        from ..ops import rewrites

        dispatch.enable_guard()
        ctx.on_revert(dispatch.disable_guard, "remove the op guard's dispatcher kernels")
        specs = dispatch.overload_specs()
        entries = sorted({spec.entry.name for spec in specs})
        rewrite = rewrites.ROUTE_REWRITE
        round_trips = [name for name in entries if rewrites.route_for(name) != rewrite]
        ctx.note(
            f"dispatcher registration {dispatch.registration()!r}: {len(specs)} overloads of "
            f"{len(entries)} ops intercepted"
        )
        if round_trips:
            ctx.note("computed on the CPU (no exact rewrite): " + ", ".join(round_trips))
        problems = dispatch.status().get("problems")
        if problems:
            ctx.note(f"{len(problems)} overload(s) could not be intercepted: {problems[0]}")
