"""Cost of the ``kokoro`` and ``chatterbox`` patches on the CPU: patched / unpatched time.

    python benchmarks/bench_patches_models.py [--repeat N] [--threads T] [--only kokoro|s3]

Workloads, each with a short and a long input:

* Kokoro: a full ``KModel`` forward with random weights (tests/support/models.py: the published
  Kokoro-82M sizes with a smaller ALBERT), a 3-phoneme and a 19-phoneme input;
* Chatterbox: ``S3Tokenizer.log_mel_spectrogram`` (random weights), 1 s and 30 s at 16 kHz.

Variants:

* ``unpatched``: the library's own code (complex ``abs``/``angle``/``exp``);
* ``exact`` / ``patched``: the patch's default strategy taking the affected-device path, i.e.
  what runs on an affected GPU, measured here on the CPU;
* ``disable_complex`` (Kokoro): the affected-device path of that strategy (a ``CustomSTFT``
  twin of the model's ``TorchSTFT``);
* ``bypass``: the patch applied, the tensor not on an affected device (what every unaffected
  machine pays): the routing only.

The affected-device path is taken on the CPU by telling the patch that the CPU is affected
(``devices.device_targeted``), not through ``bc.emulate()``, whose kernels would add their own
cost to every op.  Each variant is timed as the minimum over ``--repeat`` rounds, the variants
interleaved within a round.  The default clock is the process's CPU time (``--clock cpu``, with
one torch thread): on a shared, loaded machine wall time mostly measures the neighbours.
Ratios are relative to ``unpatched``; the aim is < 1.05.
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


@contextmanager
def _variant(patch: str, kind: str) -> Iterator[None]:
    import blackwell_compat as bc
    from blackwell_compat import devices

    if kind == "unpatched":
        yield
        return
    strategy = {"kokoro": "disable_complex"} if kind == "disable_complex" else None
    with bc.patched(only=patch, force=True, strategies=strategy):
        if kind == "bypass":
            yield
            return
        original = devices.device_targeted

        def cpu_is_affected(device: Any) -> bool:
            return device.type == "cpu" or original(device)

        devices.device_targeted = cpu_is_affected  # type: ignore[assignment]
        try:
            yield
        finally:
            devices.device_targeted = original  # type: ignore[assignment]


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = time.process_time


def _time(fn: Callable[[], Any], calls: int) -> float:
    start = _clock()
    for _ in range(calls):
        fn()
    return (_clock() - start) / calls


def _routing_cost_us(calls: int = 20000) -> float:
    """What the bypass adds per patched call: one ``devices.tensor_targeted`` decision."""
    import torch

    from blackwell_compat import devices

    x = torch.zeros(1)
    start = time.process_time()
    for _ in range(calls):
        devices.tensor_targeted(x)
    return (time.process_time() - start) / calls * 1e6


def _kokoro() -> tuple[list[str], dict[str, tuple[Callable[[], Any], int]]]:
    from support.models import KOKORO_LONG, KOKORO_SHORT, build_kmodel, run_kmodel

    model = build_kmodel(seed=0, max_dur=10)
    work = {
        f"short ({len(KOKORO_SHORT)} phonemes)": (lambda: run_kmodel(model, KOKORO_SHORT), 2),
        f"long ({len(KOKORO_LONG)} phonemes)": (lambda: run_kmodel(model, KOKORO_LONG), 1),
    }
    return ["unpatched", "exact", "disable_complex", "bypass"], work


def _s3() -> tuple[list[str], dict[str, tuple[Callable[[], Any], int]]]:
    import torch
    from golden.signals import speechlike
    from support.models import build_s3tokenizer

    tokenizer = build_s3tokenizer(seed=0)
    short, long = speechlike(16000), speechlike(30 * 16000)

    def mel(wave: Any) -> Any:
        with torch.no_grad():
            return tokenizer.log_mel_spectrogram(wave)

    work = {"short 1 s": (lambda: mel(short), 200), "long 30 s": (lambda: mel(long), 10)}
    return ["unpatched", "patched", "bypass"], work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per variant (min is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--only", choices=("kokoro", "s3"), help="run one workload only")
    parser.add_argument(
        "--clock", choices=tuple(CLOCKS), default="cpu", help="process CPU time or wall time"
    )
    args = parser.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]
    sys.path.insert(0, str(TESTS))

    import torch

    torch.set_num_threads(args.threads)
    workloads = {
        "kokoro": ("kokoro KModel forward", "kokoro", _kokoro),
        "s3": ("S3Tokenizer.log_mel_spectrogram", "chatterbox", _s3),
    }
    if args.only:
        workloads = {args.only: workloads[args.only]}
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), min of {args.repeat} rounds, "
        f"{args.clock} time"
    )
    worst = 0.0
    for title, patch, build in workloads.values():
        kinds, work = build()
        print(f"\n{title}  (patch {patch!r})")
        print(f"  {'input':<22}" + "".join(f"{k:>17}" for k in kinds) + "   ratio to unpatched")
        for name, (fn, calls) in work.items():
            best = {kind: float("inf") for kind in kinds}
            for kind in kinds:  # warm-up: lazy imports, allocator, FFT plans
                with _variant(patch, kind):
                    fn()
            for _ in range(args.repeat):
                for kind in kinds:
                    with _variant(patch, kind):
                        best[kind] = min(best[kind], _time(fn, calls))
            base = best["unpatched"]
            ratios = {kind: best[kind] / base for kind in kinds}
            default = kinds[1]
            worst = max(worst, ratios[default], ratios["bypass"])
            cells = "".join(f"{best[k] * 1000:14.2f} ms" for k in kinds)
            shown = "  ".join(f"{k} {ratios[k]:.3f}" for k in kinds[1:])
            print(f"  {name:<22}{cells}   {shown}")
    print(f"\nworst ratio of a default strategy or bypass: {worst:.3f} (aim < 1.05)")
    print(f"routing decision per patched call (bypass): {_routing_cost_us():.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
