"""Cost of the emulated CUDA device (``bc.emulate(arch, device="cuda")``) on this machine.

    python benchmarks/bench_emulated_device.py [--repeat N] [--threads T] [--calls C] [--no-kokoro]

Two measurements:

* **per-op overhead**: small elementwise, reduction, view, matmul and copy ops on 64-element
  tensors, timed on plain CPU tensors, on the emulated device, and on the emulated device with
  ``bc.apply()`` (the op guard and the targeted patches applied); the overhead is the emulated
  time minus the plain time, per op, in microseconds (target: under 20 us);
* **Kokoro forward**: a random-weight ``KModel`` forward (tests/support/models.py, short
  input) on the CPU, and the same model ``.to("cuda")`` on the emulated device with
  ``bc.apply()``; the ratio emulated / plain.  If the emulated device cannot run the model
  yet, the line says what raised instead of a number.

Each figure is the minimum over ``--repeat`` rounds, the variants interleaved within a round; the
clock is the process's CPU time with one torch thread (the machine is shared: wall time would
mostly measure the neighbours).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
ARCH = "sm_121"


def _time(fn: Callable[[], Any], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


@contextmanager
def _variant(kind: str) -> Iterator[str]:
    """The device the variant's tensors live on, with emulation and patches as it needs."""
    import blackwell_compat as bc

    if kind == "plain cpu":
        yield "cpu"
        return
    with bc.emulate(ARCH, device="cuda"):
        if kind == "emulated + apply()":
            with bc.patched():
                yield "cuda"
        else:
            yield "cuda"


def _ops(device: str) -> dict[str, Callable[[], Any]]:
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, generator=gen).to(device)
    y = torch.rand(64, generator=gen).to(device)
    w = torch.rand(8, 8, generator=gen).to(device)
    m = x.reshape(8, 8)
    z = torch.complex(x, y)
    host = torch.rand(64, generator=gen)
    return {
        "x + y": lambda: x + y,
        "x * 2.0": lambda: x * 2.0,
        "torch.relu(x)": lambda: torch.relu(x),
        "x.add_(1e-9)": lambda: x.add_(1e-9),
        "x.sum()": lambda: x.sum(),
        "x[1:9] (view)": lambda: x[1:9],
        "m @ w (8x8)": lambda: m @ w,
        "z.abs() (complex)": lambda: z.abs(),
        "host.to(device)": lambda: host.to(device),
    }


def per_op(repeat: int, calls: int) -> None:
    kinds = ["plain cpu", "emulated", "emulated + apply()"]
    names = list(_ops("cpu"))
    best = {(kind, name): float("inf") for kind in kinds for name in names}
    failures: dict[tuple[str, str], str] = {}
    for _ in range(repeat):
        for kind in kinds:
            with _variant(kind) as device:
                ops = _ops(device)
                for name, fn in ops.items():
                    if (kind, name) in failures:
                        continue
                    try:
                        fn()  # warm-up (and: does the variant run it at all?)
                        best[(kind, name)] = min(best[(kind, name)], _time(fn, calls))
                    except Exception as exc:  # reported in the table, not fatal
                        failures[(kind, name)] = f"{type(exc).__name__}: {str(exc)[:60]}"
    print("\nper-op time, us (overhead = emulated - plain; target < 20 us)")
    print(f"  {'op':<20}" + "".join(f"{k:>20}" for k in kinds) + f"{'overhead':>12}{'+apply':>10}")
    overheads = []
    for name in names:
        row = []
        for kind in kinds:
            if (kind, name) in failures:
                row.append("raised")
            else:
                row.append(f"{best[(kind, name)] * 1e6:.1f}")
        plain = best[("plain cpu", name)]
        over = best[("emulated", name)] - plain
        over_apply = best[("emulated + apply()", name)] - plain
        if ("emulated", name) not in failures:
            overheads.append(over)
        print(
            f"  {name:<20}"
            + "".join(f"{cell:>20}" for cell in row)
            + (f"{over * 1e6:>12.1f}" if ("emulated", name) not in failures else f"{'-':>12}")
            + (
                f"{over_apply * 1e6:>10.1f}"
                if ("emulated + apply()", name) not in failures
                else f"{'-':>10}"
            )
        )
    for (kind, name), why in failures.items():
        print(f"  ! {kind} / {name}: {why}")
    if overheads:
        mean = sum(overheads) / len(overheads)
        print(
            f"  overhead per op: mean {mean * 1e6:.1f} us, max {max(overheads) * 1e6:.1f} us "
            f"({'under' if max(overheads) < 20e-6 else 'OVER'} the 20 us target)"
        )


def kokoro(repeat: int) -> None:
    import torch
    from support.models import KOKORO_SHORT, build_kmodel, kokoro_voice

    import blackwell_compat as bc

    def forward(model: Any, device: str) -> Any:
        torch.manual_seed(0)
        with torch.no_grad():
            return model(KOKORO_SHORT, kokoro_voice().to(device))

    model = build_kmodel(seed=0, max_dur=10)
    plain = float("inf")
    emulated = float("inf")
    failure = None
    reference = forward(model, "cpu")
    for _ in range(repeat):
        plain = min(plain, _time(lambda: forward(model, "cpu"), 1))
        if failure is None:
            try:
                with bc.emulate(ARCH, device="cuda"), bc.patched():
                    on_device = model.to("cuda")
                    out = forward(on_device, "cuda")
                    emulated = min(emulated, _time(lambda m=on_device: forward(m, "cuda"), 1))
                    audio = out.audio if hasattr(out, "audio") else out
                    got = audio.cpu()
                want = reference.audio if hasattr(reference, "audio") else reference
                difference = float((got - want).abs().max())
            except Exception as exc:  # reported, not fatal
                failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            finally:
                model.to("cpu")
    print(f"\nKokoro KModel forward ({len(KOKORO_SHORT)} phonemes, random weights)")
    print(f"  plain cpu: {plain * 1e3:.1f} ms")
    if failure is not None:
        print(f"  emulated device + apply(): raised {failure}")
        return
    print(
        f"  emulated device + apply(): {emulated * 1e3:.1f} ms, ratio {emulated / plain:.2f}x, "
        f"max abs diff to the CPU audio {difference:.3g}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds (the minimum is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--calls", type=int, default=2000, help="calls per op and round")
    parser.add_argument("--no-kokoro", action="store_true", help="per-op overhead only")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(TESTS))
    import torch

    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), min of {args.repeat} rounds, "
        "process CPU time"
    )
    per_op(args.repeat, args.calls)
    if not args.no_kokoro:
        kokoro(args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
