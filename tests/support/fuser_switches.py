"""The four fuser switches fused-kernel tests save and restore (CPU fusion, LLVM-only CPU
codegen, the TensorExpr fuser, GPU fusion), read and set as one tuple."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["set_switches", "switches"]

C: Any = torch._C  # private switches, not in torch's stubs on every version


def switches() -> tuple[bool, bool, bool, bool]:
    return (
        C._jit_can_fuse_on_cpu(),
        C._jit_get_te_must_use_llvm_cpu(),
        C._jit_texpr_fuser_enabled(),
        C._jit_can_fuse_on_gpu(),
    )


def set_switches(values: tuple[bool, bool, bool, bool]) -> None:
    cpu, llvm, texpr, gpu = values
    C._jit_override_can_fuse_on_cpu(cpu)
    C._jit_set_te_must_use_llvm_cpu(llvm)
    C._jit_set_texpr_fuser_enabled(texpr)
    C._jit_override_can_fuse_on_gpu(gpu)
