"""What the fuser rung costs: scripted functions fused against the same functions unfused.

    python benchmarks/bench_fuser.py [--rounds 7] [--calls 3] [--size 16] [--gpu-size N] [--json]

Two clients of the TorchScript fuser (issue 20), each scripted twice (two separate
``torch.jit.script`` copies, so each keeps its own optimised plan):

* the WaveNet gate of the VITS-family TTS models (Coqui TTS 0.22's
  ``fused_add_tanh_sigmoid_multiply``; ``tests/support/wavenet_gate.py``), on ``(1, 2 * 192,
  size)`` activations (192 hidden channels, as in VITS);
* the robotics step (``tests/support/robotics.py``: quaternion multiply, normalise, rotate,
  inverse rotate, wrap to pi, copysign, five steps in a loop) on ``size`` bodies.

*Fused* is what the profiling executor does by default: its elementwise chains run as
``prim::TensorExprGroup`` kernels.  *Unfused* is what the fuser rung leaves: every op runs
through its precompiled ATen kernel.  On the GPU the unfused copy is profiled and optimised
with the rung's own switch off (``torch._C._jit_override_can_fuse_on_gpu(False)``); on the
CPU, where that switch does nothing, with CPU fusion off
(``_jit_set_texpr_fuser_enabled(False)``, ``_jit_override_can_fuse_on_cpu(False)``).

On the CPU, fusion is switched on as the stand-in for the GPU
(``torch._C._jit_override_can_fuse_on_cpu(True)`` and ``_jit_set_te_must_use_llvm_cpu(False)``;
the wheels have no LLVM, so NNC's CPU kernels run on its IR interpreter, tens of microseconds per
element: the CPU time ratio measures that interpreter, not what fusion saves on a GPU, and the
CPU size stays small).  The kernel counts are the same on both.  With a CUDA device
(``torch.cuda.is_available()``) the same pairs are also timed on it, fused with the default GPU
fuser settings.

Printed per client and device: the fused / unfused time ratio (median of ``--rounds``
interleaved rounds of ``--calls`` calls each, fused and unfused alternating in every round) and
the kernels per call, fused and unfused: ops that compute (``aten::`` nodes other than views and
metadata) plus ``prim::TensorExprGroup`` nodes, counted in
``torch.jit.last_executed_optimized_graph()`` along the path the call took (the fast branch of
the fuser's type checks; a loop's body times its trip count).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

TESTS = Path(__file__).resolve().parent.parent / "tests"

# Nodes that launch no kernel: views, shape arithmetic and scalar conversions.
NO_KERNEL = frozenset(
    {
        "aten::size",
        "aten::slice",
        "aten::select",
        "aten::view",
        "aten::reshape",
        "aten::unsqueeze",
        "aten::squeeze",
        "aten::expand",
        "aten::expand_as",
        "aten::__getitem__",
        "aten::Int",
        "aten::Float",
        "aten::ScalarImplicit",
        "aten::dim",
        "aten::len",
        "aten::append",
        "aten::__range_length",
        "aten::__derive_index",
        "aten::add_",  # only ever on ints here (the loop counter)
        "aten::neg",
        "aten::mul",
        "aten::add",
        "aten::sub",
        "aten::lt",
        "aten::gt",
        "aten::eq",
        "aten::ne",
    }
)
# Of the ops above, those that do launch a kernel when they produce a tensor.
TENSOR_MATH = frozenset(
    {"aten::neg", "aten::mul", "aten::add", "aten::sub", "aten::lt", "aten::gt", "aten::eq"}
)
GUARDS = ("prim::TypeCheck", "prim::TensorExprDynamicGuard", "prim::RequiresGradCheck")


def _produces_tensor(node: Any) -> bool:
    return any(out.type().kind() == "TensorType" for out in node.outputs())


def kernels(block: Any, trips: int) -> int:
    """Kernels one run of *block* launches (see the module docstring); a ``prim::Loop`` body
    counts *trips* times."""
    total = 0
    for node in block.nodes():
        kind = node.kind()
        if kind == "prim::TensorExprGroup":
            total += 1
        elif kind == "prim::If":
            branches = list(node.blocks())
            condition = next(node.inputs()).node()
            guarded = condition.kind() in GUARDS
            total += (
                kernels(branches[0], trips) if guarded else max(kernels(b, trips) for b in branches)
            )
        elif kind == "prim::Loop":
            total += trips * sum(kernels(b, trips) for b in node.blocks())
        elif kind.startswith("aten::"):
            if kind in TENSOR_MATH:
                total += _produces_tensor(node)
            elif kind not in NO_KERNEL and _produces_tensor(node):
                total += 1
    return total


def groups(graph: Any) -> int:
    return len(graph.findAllNodes("prim::TensorExprGroup", True))


class Fusion:
    """The fuser switches this benchmark turns, restored as found."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.saved = (
            torch._C._jit_texpr_fuser_enabled(),
            torch._C._jit_can_fuse_on_cpu(),
            torch._C._jit_get_te_must_use_llvm_cpu(),
            torch._C._jit_can_fuse_on_gpu(),
        )

    @contextlib.contextmanager
    def mode(self, fused: bool) -> Iterator[None]:
        if self.device == "cpu":
            torch._C._jit_set_texpr_fuser_enabled(fused)
            torch._C._jit_override_can_fuse_on_cpu(fused)
            torch._C._jit_set_te_must_use_llvm_cpu(False)
        else:  # the fuser rung's own switch
            torch._C._jit_set_texpr_fuser_enabled(True)
            torch._C._jit_override_can_fuse_on_gpu(fused)
        try:
            yield
        finally:
            self.restore()

    def restore(self) -> None:
        texpr, cpu, llvm, gpu = self.saved
        torch._C._jit_set_texpr_fuser_enabled(texpr)
        torch._C._jit_override_can_fuse_on_cpu(cpu)
        torch._C._jit_set_te_must_use_llvm_cpu(llvm)
        torch._C._jit_override_can_fuse_on_gpu(gpu)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _clients(size: int, device: str) -> dict[str, tuple[Callable[[], Any], tuple[Any, ...], int]]:
    """name -> (fresh scripted copy maker, args, loop trips)."""
    sys.path.insert(0, str(TESTS))
    from support import robotics, wavenet_gate

    gate_args = tuple(
        a.to(device) if a.dtype != torch.int32 else a
        for a in wavenet_gate.gate_inputs(1, 192, size)
    )
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(size, 4, generator=gen)
    quat = raw / raw.norm(dim=-1, keepdim=True)
    bodies = [quat] + [torch.randn(size, 3, generator=gen) for _ in range(3)]
    step_args = (*(t.to(device) for t in bodies), 0.01, 5)
    return {
        "wavenet gate": (wavenet_gate.scripted_gate, gate_args, 1),
        "robotics step": (lambda: robotics.scripted("step"), step_args, 5),
    }


def _prepare(make: Callable[[], Any], args: tuple[Any, ...], fusion: Fusion, fused: bool) -> Any:
    fn = make()
    with fusion.mode(fused):
        for _ in range(5):  # profiling runs, then the optimised plan
            fn(*args)
    return fn


def _count(
    fn: Any, args: tuple[Any, ...], fusion: Fusion, fused: bool, trips: int
) -> tuple[int, int]:
    with fusion.mode(fused):
        fn(*args)
        graph = torch.jit.last_executed_optimized_graph()
    return kernels(graph.block(), trips), groups(graph)


def _time(fn: Any, args: tuple[Any, ...], calls: int, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    _sync(device)
    return (time.perf_counter() - start) / calls


def measure(device: str, size: int, rounds: int, calls: int) -> dict[str, Any]:
    fusion = Fusion(device)
    result: dict[str, Any] = {}
    for name, (make, args, trips) in _clients(size, device).items():
        fused_fn = _prepare(make, args, fusion, fused=True)
        plain_fn = _prepare(make, args, fusion, fused=False)
        fused_kernels, fused_groups = _count(fused_fn, args, fusion, True, trips)
        plain_kernels, plain_groups = _count(plain_fn, args, fusion, False, trips)
        fused_times, plain_times = [], []
        for _ in range(rounds):
            with fusion.mode(True):
                fused_times.append(_time(fused_fn, args, calls, device))
            with fusion.mode(False):
                plain_times.append(_time(plain_fn, args, calls, device))
        fused_s, plain_s = statistics.median(fused_times), statistics.median(plain_times)
        result[name] = {
            "fused_us": fused_s * 1e6,
            "unfused_us": plain_s * 1e6,
            "fused_over_unfused": fused_s / plain_s,
            "kernels_fused": fused_kernels,
            "kernels_unfused": plain_kernels,
            "fusion_groups_fused": fused_groups,
            "fusion_groups_unfused": plain_groups,
        }
    return result


def render(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"torch {meta['torch']}, {meta['rounds']} rounds x "
        f"{meta['calls']} calls, medians; unfused = what the fuser rung leaves"
    ]
    for device, figures in results.items():
        label = "CPU (stand-in: CPU fusion on, no LLVM)" if device == "cpu" else device_name()
        lines.append(f"{label}, size {meta['size'][device]}:")
        for name, f in figures.items():
            lines.append(
                f"  {name:<14} fused {f['fused_us']:9.1f} us  unfused {f['unfused_us']:9.1f} us"
                f"  fused / unfused {f['fused_over_unfused']:7.3f}x  kernels per call: fused "
                f"{f['kernels_fused']} ({f['fusion_groups_fused']} fusion groups), unfused "
                f"{f['kernels_unfused']}"
            )
    return "\n".join(lines)


def device_name() -> str:
    return f"GPU {torch.cuda.get_device_name(0)} (default GPU fuser)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--calls", type=int, default=3, help="calls per round")
    parser.add_argument("--size", type=int, default=16, help="CPU: gate frames, step bodies")
    parser.add_argument("--gpu-size", type=int, default=16384, help="the same on the GPU")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU figures")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    for name in ("rounds", "calls", "size", "gpu_size", "threads"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} must be a positive integer, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    devices = ["cpu"]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append("cuda")
    sizes = {"cpu": args.size, "cuda": args.gpu_size}
    results = {d: measure(d, sizes[d], args.rounds, args.calls) for d in devices}
    meta = {"torch": torch.__version__, "size": sizes, "rounds": args.rounds}
    meta["calls"] = args.calls
    print(
        json.dumps({"meta": meta, "results": results}, indent=2)
        if args.json
        else render(results, meta)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
