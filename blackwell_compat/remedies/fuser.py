"""The fuser rung: keep TorchScript's fused GPU kernels from being compiled with an NVRTC that
does not know the GPU, so scripted functions run op by op through precompiled kernels.

Under the profiling executor, elementwise chains of a ``@torch.jit.script`` function become
fusion groups (``prim::TensorExprGroup``) whose CUDA kernels torch compiles with NVRTC at run
time: on a GPU the installed NVRTC does not list, the call fails.  The switch used is torch's
own ``torch._C._jit_override_can_fuse_on_gpu(False)`` (read back with
``torch._C._jit_can_fuse_on_gpu()``), chosen after measuring every candidate in torch 2.6, 2.11
and 2.15 (``scripts/fuser_switches.py``, docs/fuser-switches.md): it only concerns GPU tensors
(CPU fusion and the TensorExpr fuser stay as the user set them), it covers the NNC fuser and the
legacy one, and emulation reads the same live switch.  No switch reaches a plan already
optimised: its fusion group stays, and this module says so (``late``).

The user's own setting is never overridden: GPU fusion already off is left off ("already off
by the user"); one turned back on after the rung is left on at revert.  All of this process's
rung state is the one :class:`FuserState` object in :mod:`blackwell_compat.state`.
"""

from __future__ import annotations

import sys
import threading
import types
from dataclasses import dataclass, replace
from typing import Any

from .. import state as process_state

__all__ = [
    "ALREADY_OFF",
    "APPLIED",
    "COST",
    "FUSION_KINDS",
    "GETTER",
    "INACTIVE",
    "REVERTED",
    "SWITCH",
    "TURNED_ON",
    "FuserState",
    "activate",
    "deactivate",
    "gpu_fusion_on",
    "late_groups",
    "missing_switches",
    "off_why",
    "state",
]

SWITCH = "_jit_override_can_fuse_on_gpu"
"""The switch the rung turns (``torch._C``), with ``False``."""
GETTER = "_jit_can_fuse_on_gpu"
"""Its getter (``torch._C``): what torch, and emulation, read."""
FUSION_KINDS = ("prim::TensorExprGroup", "prim::FusionGroup", "prim::CudaFusionGroup")
"""The fusion-group nodes whose kernels torch compiles at run time (NNC, legacy, nvFuser)."""
COST = "fused kernels run op by op; see benchmarks/bench_fuser.py"

INACTIVE = "inactive"
"""The rung has not run in this process."""
APPLIED = "applied"
"""GPU fusion turned off by the rung (it was on)."""
ALREADY_OFF = "already-off"
"""GPU fusion was off when the rung ran: nothing was changed."""
TURNED_ON = "turned-on-by-user"
"""The rung turned GPU fusion off and the user (or a ``torch.jit.fuser`` block) turned it on."""
REVERTED = "reverted"
"""``revert()`` ran: the user's setting is back (or was left as the user changed it)."""

_lock = threading.RLock()


@dataclass(frozen=True)
class FuserState:
    """What the fuser rung did in this process (one object; replaced, never mutated)."""

    status: str = INACTIVE
    reason: str = "the fuser rung has not run in this process"
    before: bool | None = None
    """``torch._C._jit_can_fuse_on_gpu()`` when the rung ran: the user's own setting."""
    late: tuple[str, ...] = ()
    """Fusion groups of plans already optimised when the rung ran (it cannot reach them)."""
    cuda_initialised: bool = False
    """CUDA was initialised when the rung ran: scripted functions may have run on the GPU."""

    def describe(self) -> str:
        """One line: what the rung did, what it costs, and what it could not reach."""
        line = self.reason
        if self.late:
            line += (
                "; too late for plans optimised before it: "
                + "; ".join(self.late)
                + " (a plan keeps the fusion groups it was optimised with; re-create the "
                "scripted function or apply() before its first calls)"
            )
        elif self.cuda_initialised and self.status in (APPLIED, TURNED_ON):
            line += (
                "; CUDA was initialised before it: a scripted function optimised on the GPU "
                "before apply() keeps its fusion (none seen in the last plan run here)"
            )
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "before": self.before,
            "late": list(self.late),
            "cuda_initialised": self.cuda_initialised,
        }


def state() -> FuserState:
    """The rung's state in this process, with the live switch read again: a setting the user
    changed after the rung is reported as the user's (:data:`TURNED_ON`)."""
    current = process_state.fuser_rung
    if not isinstance(current, FuserState):
        return FuserState()
    if current.status == APPLIED and gpu_fusion_on() is True:
        return replace(
            current,
            status=TURNED_ON,
            reason=(
                f"GPU fusion turned back on after apply() (torch._C.{GETTER}() is True): left "
                "as the user set it; fused kernels compile with torch's NVRTC again"
            ),
        )
    return current


def _set(new: FuserState) -> FuserState:
    with process_state.lock:
        process_state.fuser_rung = new
    return new


def _torch(module: types.ModuleType | None) -> Any:
    return module if module is not None else sys.modules.get("torch")


def missing_switches(torch: types.ModuleType) -> list[str]:
    """The switches this torch lacks (the drift check of the ``fuser`` patch)."""
    c = getattr(torch, "_C", None)
    names = (SWITCH, GETTER)
    problems = [f"torch._C.{name} is missing" for name in names if not hasattr(c, name)]
    jit = getattr(torch, "jit", None)
    if not hasattr(jit, "last_executed_optimized_graph"):
        problems.append("torch.jit.last_executed_optimized_graph is missing")
    return problems


def gpu_fusion_on(torch: types.ModuleType | None = None) -> bool | None:
    """``torch._C._jit_can_fuse_on_gpu()`` now; ``None`` when torch is not imported."""
    module = _torch(torch)
    getter = getattr(getattr(module, "_C", None), GETTER, None)
    return None if getter is None else bool(getter())


def _devices(node: Any) -> set[str]:
    found = set()
    for value in node.inputs():
        device = getattr(value.type(), "device", None)
        try:
            where = device() if callable(device) else None
        except Exception:
            where = None
        if where is not None:
            found.add(str(getattr(where, "type", where)))
    return found


def late_groups(torch: types.ModuleType, *, emulating: bool) -> tuple[str, ...]:
    """The fusion groups of the plan this thread optimised and ran last
    (``torch.jit.last_executed_optimized_graph()``, blocks included) whose tensors are on a GPU,
    or on the CPU standing in for one while *emulating*: ``"prim::TensorExprGroup (aten::mul,
    aten::add) on cuda"``.  Only the last executed plan can be read; others may hold groups too."""
    try:
        graph = torch.jit.last_executed_optimized_graph()
    except Exception:
        return ()
    if graph is None:
        return ()
    wanted = {"cuda", "cpu"} if emulating else {"cuda"}
    found = []
    for kind in FUSION_KINDS:
        try:
            nodes = graph.findAllNodes(kind, True)
        except Exception:
            continue
        for node in nodes:
            devices = _devices(node)
            if devices and not devices & wanted:
                continue
            try:
                ops = [n.kind() for n in node.g("Subgraph").nodes()]
            except Exception:
                ops = []
            ops = [op for op in ops if not op.startswith("prim::")]
            where = ", ".join(sorted(devices)) or "an unknown device"
            found.append(f"{kind} ({', '.join(ops) or 'ops unknown'}) on {where}")
    return tuple(found)


def off_why(torch: types.ModuleType | None = None) -> str:
    """Why GPU fusion is off before the rung touched it: the user, or a torch without CUDA."""
    module = _torch(torch)
    version = getattr(module, "version", None)
    if version is not None and getattr(version, "cuda", None) is None:
        if getattr(version, "hip", None) is None:
            return (
                f"GPU fusion off (torch._C.{GETTER}() is False): this torch is a CPU-only "
                "build, it has no GPU fuser"
            )
    return f"GPU fusion already off by the user (torch._C.{GETTER}() is False)"


def _cuda_initialised(torch: types.ModuleType) -> bool:
    check = getattr(getattr(torch, "cuda", None), "is_initialized", None)
    try:
        return bool(check()) if check is not None else False
    except Exception:
        return False


def activate(torch: types.ModuleType, *, emulating: bool = False) -> FuserState:
    """Turn GPU fusion off unless the user already did; say what was too late."""
    with _lock:
        current = process_state.fuser_rung
        if isinstance(current, FuserState) and current.status in (APPLIED, ALREADY_OFF):
            return state()
        before = gpu_fusion_on(torch)
        late = late_groups(torch, emulating=emulating)
        cuda = _cuda_initialised(torch)
        if not before:
            return _set(
                FuserState(
                    ALREADY_OFF,
                    f"{off_why(torch)}: nothing changed; scripted functions run op by op",
                    before=before,
                    late=late,
                    cuda_initialised=cuda,
                )
            )
        getattr(torch._C, SWITCH)(False)
        return _set(
            FuserState(
                APPLIED,
                f"GPU fusion off (torch._C.{SWITCH}(False)): fused TorchScript kernels are not "
                f"compiled with torch's NVRTC; {COST}",
                before=before,
                late=late,
                cuda_initialised=cuda,
            )
        )


def deactivate(torch: types.ModuleType | None = None) -> list[str]:
    """Give the user's setting back: turn GPU fusion on again only where the rung turned it
    off and it is still off.  Returns what was left alone, and why (for the log)."""
    with _lock:
        current = state()
        messages: list[str] = []
        module = _torch(torch)
        if current.status == APPLIED and module is not None:
            getattr(module._C, SWITCH)(bool(current.before))
            reason = f"GPU fusion restored to the user's setting ({current.before})"
        elif current.status == TURNED_ON:
            reason = "GPU fusion was turned back on by the user after apply(): left as it is"
            messages.append(f"fuser rung: {reason}")
        elif current.status == ALREADY_OFF:
            reason = "GPU fusion was already off by the user: left off"
        else:
            return messages
        _set(FuserState(REVERTED, reason, before=current.before))
        return messages
