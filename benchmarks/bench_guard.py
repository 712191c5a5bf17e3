"""Cost of the op guard, measured on the CPU registration (emulation), printed as ratios.

    python benchmarks/bench_guard.py [--repeat 7] [--json]

1. Overhead on non-target dtypes: float32 ops whose calls pass through the dispatcher kernel
   to PyTorch's own kernel, guarded time / native time, for a tiny (8-element) and a
   1M-element tensor.  The fixed per-call cost is the tiny-tensor difference in microseconds.
   On torch >= 2.9 the same tiny calls also run through a trivial Python kernel that only calls
   the captured original: guarded - trivial is the guard's own decision cost (the rest is the
   price of any Python kernel in the dispatcher).
2. Rewrite throughput: complex64 ops computed by the guard's rewrites, against PyTorch's native
   complex CPU kernel on the same 1M-element tensor (rewrite time / native time).

Native times are taken with the dispatcher kernels not installed (outside ``bc.emulate()``);
guarded times inside ``bc.emulate()`` with the ``torch`` patch applied.  Native and guarded
runs alternate within each of ``--repeat`` rounds and each figure is the best round (the
minimum, as ``timeit`` recommends: on a shared machine the noise only ever adds time).

To measure the guard rather than the machine: one intra-op thread by default (``--threads``;
OpenMP workers spin and share cores with other processes), process CPU time, and the
non-target ops write into preallocated ``out=`` tensors (a fresh 4 MB result per call costs
page faults whose number depends on the allocator's history, not on the guard).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

import blackwell_compat as bc
from blackwell_compat import emulation

Op = Callable[[], Any]


def _time(fn: Op, number: int) -> float:
    """CPU seconds per call over *number* calls (after a short warm-up)."""
    for _ in range(max(1, number // 10)):
        fn()
    start = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - start) / number


def _number(size: int) -> int:
    return 3000 if size < 1000 else 40


# The overloads each non-target op reaches, for the trivial pass-through kernel.
TRIVIAL_OVERLOADS = {
    "exp": ("exp.out",),
    "mul": ("mul.out",),
    "abs": ("abs.out",),
    "sum": ("sum.IntList_out",),
}


@contextlib.contextmanager
def _trivial_kernels(overloads: tuple[str, ...]) -> Iterator[None]:
    """The floor of any Python kernel: one that only calls the captured original.

    (It cannot take PyTorch's wrapped numbers, which reach it as plain Python numbers; the
    benchmark's ``mul`` passes its number through ``out=`` forms that it can.)
    """
    library = torch.library.Library("aten", "IMPL")
    try:
        for name in overloads:
            call_boxed = torch.library.get_kernel(f"aten::{name}", "CPU").call_boxed

            def kernel(keyset: Any, *args: Any, _call: Any = call_boxed, **kwargs: Any) -> Any:
                return _call(keyset, *args, **kwargs)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                library.impl(name, kernel, "CPU", with_keyset=True)
        yield
    finally:
        library._destroy()


def measure(repeat: int) -> dict[str, Any]:
    torch.manual_seed(0)
    tiny, big = torch.randn(8), torch.randn(1_000_000)
    outputs = {8: torch.empty(8), 1_000_000: torch.empty(1_000_000)}
    total = torch.empty(())
    real_ops: dict[str, Callable[[torch.Tensor], Any]] = {
        "exp": lambda t: torch.exp(t, out=outputs[t.numel()]),
        "mul": lambda t: torch.mul(t, t, out=outputs[t.numel()]),
        "mul 1.5": lambda t: torch.mul(t, 1.5, out=outputs[t.numel()]),
        "abs": lambda t: torch.abs(t, out=outputs[t.numel()]),
        "sum": lambda t: torch.sum(t, 0, out=total),
    }
    z = torch.complex(torch.randn(1_000_000), torch.randn(1_000_000))
    complex_ops: dict[str, Callable[[torch.Tensor], Any]] = {
        "abs": torch.abs,
        "angle": torch.angle,
        "exp": torch.exp,
        "log": torch.log,
        "sqrt": torch.sqrt,
        "sgn": torch.sgn,
    }
    samples: dict[str, list[float]] = {}
    trivial_possible = hasattr(torch.library, "get_kernel")

    def record(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for _ in range(repeat):
        for name, fn in real_ops.items():
            for label, t in (("tiny", tiny), ("1M", big)):
                n = _number(t.numel())
                record(f"native {name} {label}", _time(lambda fn=fn, t=t: fn(t), n))
                with bc.emulate(), bc.patched(only="torch"):
                    record(f"guarded {name} {label}", _time(lambda fn=fn, t=t: fn(t), n))
                if trivial_possible and label == "tiny" and name in TRIVIAL_OVERLOADS:
                    with _trivial_kernels(TRIVIAL_OVERLOADS[name]):
                        record(f"trivial {name} {label}", _time(lambda fn=fn, t=t: fn(t), n))
        for name, fn in complex_ops.items():
            record(f"native complex {name}", _time(lambda fn=fn: fn(z), 10))
            with bc.emulate(), bc.patched(only="torch"):
                record(f"rewrite complex {name}", _time(lambda fn=fn: fn(z), 10))
    best = {key: min(values) for key, values in samples.items()}
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeat": repeat,
        "overhead": {},
        "per_call_us": {},
        "rewrite": {},
    }
    for name in real_ops:
        for label in ("tiny", "1M"):
            ratio = best[f"guarded {name} {label}"] / best[f"native {name} {label}"]
            result["overhead"][f"{name} {label}"] = ratio
        cost = best[f"guarded {name} tiny"] - best[f"native {name} tiny"]
        result["per_call_us"][name] = cost * 1e6
        if f"trivial {name} tiny" in best:
            decision = best[f"guarded {name} tiny"] - best[f"trivial {name} tiny"]
            result.setdefault("decision_us", {})[name] = decision * 1e6
    for name in complex_ops:
        result["rewrite"][name] = best[f"rewrite complex {name}"] / best[f"native complex {name}"]
    result["times_s"] = best
    return result


def render(result: dict[str, Any]) -> str:
    lines = [
        f"op guard cost, CPU registration, torch {result['torch']}, "
        f"{result['threads']} thread(s), CPU time, best of {result['repeat']} rounds",
        "",
        "non-target dtype (float32, out= buffers), guarded / native:",
    ]
    for key, ratio in result["overhead"].items():
        lines.append(f"  {key:<10} {ratio:6.3f}x")
    lines.append("fixed per-call cost (tiny tensor, guarded - native):")
    for key, cost in result["per_call_us"].items():
        lines.append(f"  {key:<10} {cost:6.2f} us")
    if result.get("decision_us"):
        lines.append("the guard's own cost (tiny tensor, guarded - trivial pass-through kernel):")
        for key, cost in result["decision_us"].items():
            lines.append(f"  {key:<10} {cost:6.2f} us")
    lines.append("rewrite throughput, complex64 1M elements, rewrite / native complex kernel:")
    for key, ratio in result["rewrite"].items():
        lines.append(f"  {key:<10} {ratio:6.2f}x")
    worst = max(v for k, v in result["overhead"].items() if k.endswith("1M"))
    verdict = "meets" if worst <= 1.03 else "misses"
    lines.append(f"worst 1M-element overhead {100 * (worst - 1):+.1f}% ({verdict} the 3% aim)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="interleaved rounds (best kept)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if emulation.is_active():
        print(
            "run without BLACKWELL_COMPAT_EMULATE: native times need no emulation", file=sys.stderr
        )
        return 2
    result = measure(args.repeat)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
