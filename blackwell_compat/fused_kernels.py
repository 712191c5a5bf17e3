"""Emulation of fused kernels: scripted functions whose fusion group the GPU would compile.

On a GPU, ``@torch.jit.script`` functions (and scripted or traced modules) run under the
profiling executor: after the profiling run, their elementwise chains become
``prim::TensorExprGroup`` nodes that NNC compiles with NVRTC, on an affected GPU with
``nvrtc: error: invalid value for --gpu-architecture (-arch)``.  The op guard cannot see them
(a fused kernel is not a dispatcher call), so the emulation watches the calls themselves:

* while emulation is armed, ``torch._C.ScriptFunction.__call__`` and
  ``torch._C.ScriptMethod.__call__`` (the ``forward`` of scripted modules) are wrapped;
* around each call that the GPU would fuse, CPU fusion is turned on as the observable stand-in
  (``_jit_override_can_fuse_on_cpu(True)``, ``_jit_set_te_must_use_llvm_cpu(False)``: the
  wheels have no LLVM), and the user's values are put back exactly when the last such call
  returns;
* after the call, ``torch.jit.last_executed_optimized_graph()`` (per thread) is searched, nested
  blocks included, for fusion groups.  If there is one, the call raises what the GPU raises
  (the error itself is built by :mod:`blackwell_compat.emulation`), or, under ``audit``, the
  recorder is told and the result returned.

Whether the GPU would fuse is read from the live switches at each call
(``torch._C._jit_texpr_fuser_enabled()`` and ``torch._C._jit_can_fuse_on_gpu()``, which
``torch.jit.fuser(...)`` and the fuser rung flip), so a plan is fused on the CPU exactly when
it would have been fused on the GPU at that call, and a plan optimised earlier keeps what it
got, as on the GPU.  Where the NVRTC remedy serves the emulated arch nothing raises.

What this relies on, measured on torch 2.6.0, 2.11.0 and 2.15.0 (CPU wheels, no LLVM), the same
in all three: ``__call__`` of both pybind classes can be replaced and restored; a scripted
module's ``forward`` is a ``ScriptMethod``; with the stand-in on, the group appears in
``last_executed_optimized_graph()`` at the second call (one profiling run), inside a
``prim::If``/``prim::TypeCheck`` block; its ``Subgraph`` holds the ATen nodes, each with a
``sourceRange()`` naming the file and line; the defaults are ``_jit_texpr_fuser_enabled()``
and ``_jit_can_fuse_on_gpu()`` True, ``_jit_can_fuse_on_cpu()`` False,
``_jit_get_te_must_use_llvm_cpu()`` True; ``torch.jit.fuser("none")`` turns the first two off.

NNC on the CPU fuses float32/float64 and integer chains but not float16/bfloat16, which CUDA
fuses: those calls are also run on float32 copies, in a twin executor, to see the groups
(:meth:`_Watch._shadow_groups`). Known gaps (docs/audit.md, docs/concepts.md): the legacy fuser
(``torch.jit.fuser("fuser0")``, the legacy executor) is not emulated; a call whose inputs
require grad gets a ``prim::DifferentiableGraph`` that the CPU does not fuse (measured on the
three versions), so training-mode calls go unseen; the error is raised after the CPU ran the
call (its in-place effects happened).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import state
from .errors import NVRTC_ARCH_ERROR_LINE, logger
from .ops.spec import MODE_EMULATE, MODE_FUSER, MODE_REMEDY, JitCall

__all__ = [
    "FUSED_OP",
    "MAX_NAME",
    "MODE_FUSER",
    "MODE_REMEDY",
    "FusedGroup",
    "gpu_fuser_on",
    "installed",
    "kernel_name",
    "set_failure",
    "sync",
    "watch",
]

#: :attr:`JitCall.op` of a fused-kernel record.
FUSED_OP = "prim::TensorExprGroup"

_FILE_LINE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_DTYPES = {
    "Float": "float32",
    "Double": "float64",
    "Half": "float16",
    "BFloat16": "bfloat16",
    "Long": "int64",
    "Int": "int32",
    "Short": "int16",
    "Char": "int8",
    "Byte": "uint8",
    "Bool": "bool",
}


@dataclass(frozen=True)
class FusedGroup:
    """One fusion group of a scripted function's optimised graph."""

    kernel: str
    """The kernel's name as NNC builds it: ``fused_`` + the ATen ops, e.g.
    ``fused_tanh_sigmoid_mul`` (see :func:`kernel_name` for names over 40 characters)."""
    ops: tuple[str, ...]
    dtype: str
    shapes: tuple[tuple[int, ...], ...]
    where: str
    """``file:line`` of the fused code inside the scripted function (``""``: unknown)."""


#: NNC's longest kernel name; a longer one keeps its first characters and gets ``_`` and a
#: decimal ``std::hash`` of the whole name (``SubgraphUtils::generateNameForGraph``).
MAX_NAME = 40
#: The characters kept before the hash (a 64-bit hash has up to 20 digits).
_KEPT = MAX_NAME - 20 - 1


def kernel_name(ops: tuple[str, ...]) -> str:
    """``fused_`` followed by the unqualified ATen op names, joined by ``_``, as NNC names the
    kernel; past :data:`MAX_NAME` characters, the start and ``_<hash>`` (the hash is the C++
    library's and cannot be reproduced here: the ops are listed in full beside it)."""
    name = "_".join(["fused", *(op.split("::", 1)[1] for op in ops if op.startswith("aten::"))])
    return name if len(name) <= MAX_NAME else f"{name[:_KEPT]}_<hash>"


def gpu_fuser_on(values: tuple[bool, bool] | None = None) -> bool:
    """Whether the GPU fuser (NNC) would build fusion groups for CUDA tensors now."""
    import torch  # torch is imported lazily throughout the package (import cost)

    if values is None:
        values = (torch._C._jit_texpr_fuser_enabled(), torch._C._jit_can_fuse_on_gpu())
    return bool(values[0] and values[1])


def _groups(graph: Any) -> list[FusedGroup]:
    found = []
    for node in graph.findAllNodes(FUSED_OP, True):
        subgraph = node.g("Subgraph")
        ops = tuple(n.kind() for n in subgraph.nodes() if n.kind().startswith("aten::"))
        dtype, shapes = "", []
        for value in subgraph.inputs():
            kind = value.type()
            if kind.kind() != "TensorType":
                # A scalar input (a float argument such as normalize's eps): torch's
                # scalarType()/sizes() assert on non-tensor types.
                continue
            scalar = kind.scalarType()
            if scalar is not None and not dtype:
                dtype = _DTYPES.get(scalar, scalar)
            sizes = kind.varyingSizes()
            if sizes is not None:
                shapes.append(tuple(-1 if s is None else int(s) for s in sizes))
        where = ""
        for inner in subgraph.nodes():
            match = _FILE_LINE.search(inner.sourceRange())
            if match:
                where = f"{match['file']}:{match['line']}"
                break
        found.append(FusedGroup(kernel_name(ops), ops, dtype, tuple(shapes), where))
    return found


def _function_name(target: Any) -> str:
    owner = getattr(target, "owner", None)
    name = str(getattr(target, "name", "") or "<scripted>")
    if owner is not None:
        try:
            return f"{owner._type().name()}.{name}"
        except Exception:  # an owner of another kind: the method's name is enough
            return name
    return name


class _Local(threading.local):
    calls = 0
    """Intercepted calls started in this thread (a call that saw a nested one started cannot
    tell whose graph was executed last)."""


class _StandIn:
    """CPU fusion on as the stand-in for the GPU fuser, around the calls that need it.

    The user's values are read when the first such call starts and put back exactly when the
    last one (of any thread) returns.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: tuple[bool, bool, bool, bool] | None = None
        self.touched: set[str] = set()

    def user_values(self) -> tuple[bool, bool]:
        """``(texpr enabled, can fuse on GPU)`` as the user has them (not as set here)."""
        import torch

        with self.lock:
            if self.saved is not None:
                return self.saved[2], self.saved[3]
        return torch._C._jit_texpr_fuser_enabled(), torch._C._jit_can_fuse_on_gpu()

    def enter(self, *, texpr: bool, cpu: bool = True, gpu_off: bool = False) -> None:
        """Set, until the matching :meth:`exit`: CPU fusion on (*cpu*), the TensorExpr fuser on
        (*texpr*), GPU fusion off (*gpu_off*: a call on the emulated CUDA device, whose tensors
        NNC must never try to compile for a GPU that is not there)."""
        import torch

        c: Any = torch._C  # private switches, not in torch's stubs on every version
        with self.lock:
            if self.depth == 0:
                self.saved = (
                    c._jit_can_fuse_on_cpu(),
                    c._jit_get_te_must_use_llvm_cpu(),
                    c._jit_texpr_fuser_enabled(),
                    c._jit_can_fuse_on_gpu(),
                )
                self.touched = set()
            self.depth += 1
            if cpu:
                self.touched.add("cpu")
                c._jit_override_can_fuse_on_cpu(True)
                c._jit_set_te_must_use_llvm_cpu(False)
            if texpr:
                self.touched.add("texpr")
                c._jit_set_texpr_fuser_enabled(True)
            if gpu_off:
                self.touched.add("gpu")
                c._jit_override_can_fuse_on_gpu(False)

    def exit(self) -> None:
        import torch

        c: Any = torch._C
        with self.lock:
            self.depth -= 1
            if self.depth or self.saved is None:
                return
            cpu, llvm, texpr, gpu = self.saved
            self.saved = None
            if "cpu" in self.touched:
                c._jit_override_can_fuse_on_cpu(cpu)
                c._jit_set_te_must_use_llvm_cpu(llvm)
            if "texpr" in self.touched:
                c._jit_set_texpr_fuser_enabled(texpr)
            if "gpu" in self.touched:
                c._jit_override_can_fuse_on_gpu(gpu)
            self.touched = set()


class _Watch:
    """The wrappers of the scripted callables' ``__call__`` and what they need (one object)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.originals: dict[type, Callable[..., Any]] = {}
        self.wrappers: dict[type, Callable[..., Any]] = {}
        self.stand_in = _StandIn()
        self.local = _Local()
        self.failure: Callable[[str, FusedGroup, str], BaseException] | None = None
        self.hooked = False
        self.twins: dict[int, tuple[Any, ...]] = {}
        """Per scripted function: ``(function, twin for its device calls on CPU memory, twin
        for its calls on device tensors, twin for float32 shadows)`` (see :meth:`_twin`)."""

    # -- installation ---------------------------------------------------------------------------

    def wanted(self) -> bool:
        with state.lock:
            return bool(state.emulation_stack) or state.env_arch is not None

    def sync(self) -> None:
        """Wrap while emulation is armed, unwrap when it ends (torch imported or not yet)."""
        if "torch" not in sys.modules:
            if self.wanted():
                self._hook()
            return
        with self.lock:
            if self.wanted():
                self._install()
            else:
                self._uninstall()

    def _hook(self) -> None:
        with self.lock:
            if self.hooked:
                return
            self.hooked = True
        import wrapt  # only before torch is imported (import cost)

        def on_torch(module: Any) -> None:
            self.hooked = False
            try:
                self.sync()
            except Exception as exc:  # never break `import torch`
                logger.warning("blackwell-compat: watching scripted functions failed: %s", exc)

        wrapt.register_post_import_hook(on_torch, "torch")

    def _install(self) -> None:
        import torch

        for cls in (torch._C.ScriptFunction, torch._C.ScriptMethod):
            if cls in self.originals:
                continue
            original = cls.__call__
            wrapper = self._wrapper(original)
            setattr(cls, "__call__", wrapper)  # noqa: B010 (mypy: a method assignment)
            self.originals[cls] = original
            self.wrappers[cls] = wrapper

    def _uninstall(self) -> None:
        for cls, original in list(self.originals.items()):
            if cls.__dict__.get("__call__") is self.wrappers[cls]:
                setattr(cls, "__call__", original)  # noqa: B010
            else:  # someone wrapped it after us: leave theirs (which calls ours) alone
                logger.warning("blackwell-compat: %s.__call__ was replaced; not restored", cls)
            del self.originals[cls]
            del self.wrappers[cls]
        self.twins.clear()

    def installed(self) -> bool:
        with self.lock:
            return bool(self.originals)

    # -- the call -------------------------------------------------------------------------------

    def _wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        watch = self

        def __call__(target: Any, *args: Any, **kwargs: Any) -> Any:
            return watch.call(original, target, args, kwargs)

        __call__.__qualname__ = "blackwell_compat_scripted_call"
        return __call__

    def call(
        self, original: Callable[..., Any], target: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        arch = state.emulated_arch()  # None in a suspended thread
        if arch is None:
            return original(target, *args, **kwargs)
        served = arch in state.nvrtc_served_archs
        recorder = state.recorder
        gpu = gpu_fuser_on(self.stand_in.user_values())
        if state.device_mode:
            return self._device_call(original, target, args, kwargs, arch)
        if recorder is None and (served or not gpu):
            return original(target, *args, **kwargs)  # nothing would fail: the CPU as it is
        return self._observed(original, target, args, kwargs, arch)

    def _device_call(
        self,
        original: Callable[..., Any],
        target: Any,
        args: tuple[Any, ...],
        kwargs: Any,
        arch: str,
    ) -> Any:
        """A scripted call under the emulated CUDA device (``emulate(device="cuda")``).

        CPU tensors never fail there: a call without device tensors runs as it is.  A call with
        device tensors never lets NNC compile for the GPU that is not there (that crashed the
        process): GPU fusion is off around it.  Where the GPU would compile a fused kernel
        (fuser on, the NVRTC remedy not serving the arch, or under ``audit``), a scripted
        function's call runs on the tensors' CPU memory with the stand-in, as the CPU form of
        the emulation does (raising or recording the same way; the work counts as the device's,
        so Jiterator ops in it fail as there) and its results go back to the device.  Calls on
        tensors that require grad, and scripted modules' methods (whose parameters stay on the
        device), run op by op on the device without that check (the CPU form has the same gap
        for grad)."""
        import torch

        from .emulated_device.tensor import EmulatedTensor, wrap

        flat = [*_flat(args), *_flat(tuple(kwargs.values()))]
        on_device = any(isinstance(t, EmulatedTensor) for t in flat)
        method = isinstance(target, torch._C.ScriptMethod)
        if not on_device and not method:
            return original(target, *args, **kwargs)
        served = arch in state.nvrtc_served_archs
        check = state.recorder is not None or (
            not served and gpu_fuser_on(self.stand_in.user_values())
        )
        grad = torch.is_grad_enabled() and any(
            isinstance(t, torch.Tensor) and t.requires_grad for t in flat
        )
        if check and not method and not grad:
            elems = {id(t._elem): t for t in flat if isinstance(t, EmulatedTensor)}
            plain_args = _unwrapped(args, EmulatedTensor)
            plain_kwargs = {k: _unwrapped(v, EmulatedTensor) for k, v in kwargs.items()}
            local = state.local
            local.on_device += 1
            try:
                result = self._observed(
                    original, target, plain_args, plain_kwargs, arch, self._twin(target, 0)
                )
            finally:
                local.on_device -= 1
            return _rewrapped(result, elems, wrap, torch.Tensor)
        self.stand_in.enter(texpr=False, cpu=False, gpu_off=True)
        try:
            return original(target if method else self._twin(target, 1), *args, **kwargs)
        finally:
            self.stand_in.exit()

    def _twin(self, target: Any, kind: int) -> Any:
        """A function of *target*'s graph with an executor (and so optimised plans) of its own:
        *kind* 0 runs the device's calls on CPU memory with the stand-in, 1 on the device's
        tensors, 2 the float32 shadow of half-precision calls (:meth:`_shadow_groups`).  The
        plans of the user's own CPU calls are never built from device calls (a
        CPU plan fused by the stand-in would give CPU calls NNC's rounding), and each executor
        only ever meets one kind of tensor."""
        import torch

        with self.lock:
            entry = self.twins.get(id(target))
            if entry is None or entry[0] is not target:
                make: Any = torch._C._create_function_from_graph  # not in torch's stubs
                entry = (target, *(make(target.name, target.graph) for _ in range(3)))
                self.twins[id(target)] = entry
            return entry[1 + kind]

    def _observed(
        self,
        original: Callable[..., Any],
        target: Any,
        args: tuple[Any, ...],
        kwargs: Any,
        arch: str,
        runner: Any = None,
    ) -> Any:
        """The call (of *runner* where given, a twin of *target*) with CPU fusion as the
        stand-in; its fusion groups raise or are recorded."""
        served = arch in state.nvrtc_served_archs
        recorder = state.recorder
        gpu = gpu_fuser_on(self.stand_in.user_values())
        shadow = self._shadow_groups(original, target, args, kwargs, texpr=recorder is not None)
        self.local.calls += 1
        started = self.local.calls
        # Under audit, observe groups even where the GPU would not fuse (to say which rung
        # served them): texpr on for the call, whatever the user set.
        self.stand_in.enter(texpr=recorder is not None)
        try:
            result = original(target if runner is None else runner, *args, **kwargs)
        finally:
            self.stand_in.exit()
        if self.local.calls != started:
            return result  # a nested scripted call ran last: its own check covered it
        import torch

        jit: Any = torch.jit  # last_executed_optimized_graph is not in torch.jit.__all__
        try:
            groups = _groups(jit.last_executed_optimized_graph())
        except Exception as exc:  # a graph of a shape not met before: say so, never break
            logger.warning(
                "blackwell-compat: could not read the fusion groups of %s: %s: %s",
                _function_name(target),
                type(exc).__name__,
                exc,
            )
            return result
        groups = groups or shadow
        if not groups:
            return result
        name = _function_name(target)
        mode = MODE_REMEDY if served else (MODE_EMULATE if gpu else MODE_FUSER)
        if recorder is not None:
            for group in groups:
                recorder(_record(name, group, mode))
            return result
        raise self._failure(name, groups[0], arch)

    def _shadow_groups(
        self,
        original: Callable[..., Any],
        target: Any,
        args: tuple[Any, ...],
        kwargs: Any,
        *,
        texpr: bool,
    ) -> list[FusedGroup]:
        """The groups the GPU would build for a float16/bfloat16 call, which the CPU stand-in
        never fuses (NNC fuses half precision on CUDA only): the same call on float32 copies,
        in a twin executor of its own (the user's plans untouched), shows the fusion groups;
        they are reported with the call's own dtype.  ``[]`` for other calls, for scripted
        modules' methods, and where the float32 copy cannot run (no verdict then)."""
        import torch

        low = (torch.float16, torch.bfloat16)
        flat = [*_flat(args), *_flat(tuple(kwargs.values()))]
        dtypes = [t.dtype for t in flat if isinstance(t, torch.Tensor) and t.dtype in low]
        if not dtypes or isinstance(target, torch._C.ScriptMethod):
            return []

        def widened(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.dtype in low:
                return value.detach().float()
            if value.__class__ in (list, tuple):
                return value.__class__(widened(v) for v in value)
            return value

        jit: Any = torch.jit
        self.stand_in.enter(texpr=texpr)
        try:
            with torch.no_grad():
                original(
                    self._twin(target, 2),
                    *widened(args),
                    **{k: widened(v) for k, v in kwargs.items()},
                )
            groups = _groups(jit.last_executed_optimized_graph())
        except Exception:  # the function refuses float32 (a dtype check of its own): no verdict
            return []
        finally:
            self.stand_in.exit()
        name = str(dtypes[0]).replace("torch.", "")
        return [dataclasses.replace(g, dtype=name) for g in groups]

    def _failure(self, name: str, group: FusedGroup, arch: str) -> BaseException:
        factory = self.failure
        if factory is not None:
            return factory(name, group, arch)
        # Only reachable if emulation state was switched on without the emulation module.
        return RuntimeError(f"{NVRTC_ARCH_ERROR_LINE}\n\nnvrtc compilation failed: {group.kernel}")


def _flat(values: tuple[Any, ...]) -> list[Any]:
    """The items of *values*, lists and tuples (one level deep, as TorchScript passes them)
    opened."""
    found: list[Any] = []
    for value in values:
        if value.__class__ in (list, tuple):
            found.extend(value)
        else:
            found.append(value)
    return found


def _unwrapped(value: Any, device_tensor: type) -> Any:
    """*value* with each emulated-device tensor replaced by its CPU memory (not copied)."""
    if isinstance(value, device_tensor):
        return getattr(value, "_elem")  # noqa: B009 (the type is only known at run time)
    if value.__class__ in (list, tuple):
        return value.__class__(_unwrapped(v, device_tensor) for v in value)
    return value


def _rewrapped(value: Any, inputs: dict[int, Any], wrap: Callable[[Any], Any], tensor: type) -> Any:
    """*value* (a call's result on CPU memory) on the emulated device: an input given back is
    the caller's own device tensor, any other *tensor* is wrapped."""
    if isinstance(value, tensor):
        given = inputs.get(id(value))
        return wrap(value) if given is None else given
    if value.__class__ in (list, tuple):
        return value.__class__(_rewrapped(v, inputs, wrap, tensor) for v in value)
    if isinstance(value, dict):
        return {k: _rewrapped(v, inputs, wrap, tensor) for k, v in value.items()}
    return value


def _record(name: str, group: FusedGroup, mode: str) -> JitCall:
    return JitCall(
        op=FUSED_OP,
        entry=name,
        dtype=group.dtype,
        shapes=group.shapes,
        device="cpu",
        kernels=(group.kernel,),
        source=group.where,
        mode=mode,
        fused_ops=group.ops,
    )


watch = _Watch()
"""The one watch of this process."""


def sync() -> None:
    """Wrap the scripted callables while emulation is armed; unwrap when it ends."""
    watch.sync()


def installed() -> bool:
    """Whether the scripted callables are wrapped now."""
    return watch.installed()


def set_failure(factory: Callable[[str, FusedGroup, str], BaseException]) -> None:
    """The emulation's error for a fused kernel (``function name, group, arch``)."""
    watch.failure = factory


def _reset() -> None:
    with watch.lock:
        if "torch" in sys.modules:
            watch._uninstall()


state.on_reset(_reset)
