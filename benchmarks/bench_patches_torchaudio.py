"""Cost of the ``torchaudio`` patch on the CPU: patched / unpatched time, from one run.

    python benchmarks/bench_patches_torchaudio.py [--repeat N] [--threads T]

For each workload (kaldi ``fbank`` as pyannote's WeSpeaker calls it, and ``MelSpectrogram``;
a short 1 s and a long 30 s input at 16 kHz) it times:

* ``unpatched``: torchaudio's own code (complex ``abs``);
* ``real``: the patch's default strategy taking the affected-device path (``hypot`` on
  ``view_as_real``), i.e. what runs on an affected GPU, here measured on the CPU;
* ``cpu``: the ``cpu`` strategy's affected-device path.  On the CPU there is nothing to move, so
  this is the routing overhead plus the reference kernels; on a GPU add two transfers;
* ``bypass``: the patch applied but the tensor not on an affected device (what every unaffected
  machine pays): the router's cost only.

To take the affected-device path on a CPU without a GPU, the script tells the patch that the
CPU is affected (``devices.device_targeted``).  It does not use ``bc.emulate()``: the emulation
kernels would add their own cost to every op and measure the emulator instead of the patch.

Timings are the thread's CPU time (``time.thread_time``, one torch thread), minimum over
``--repeat`` rounds of a batch of calls, the variants interleaved within each round so that
machine noise hits them alike.  Ratios are printed relative to
``unpatched``; the aim is ``real`` < 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any


def _signal(seconds: float) -> Any:
    import math

    import torch

    n = int(16000 * seconds)
    t = torch.arange(n, dtype=torch.float64) / 16000
    wave = 0.5 * torch.sin(2 * math.pi * 220 * t) + 0.2 * torch.sin(2 * math.pi * 1300 * t * t)
    return wave.to(torch.float32).unsqueeze(0)


def _workloads() -> dict[str, Callable[[Any], Any]]:
    import functools

    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.transforms as T

    fbank = functools.partial(
        kaldi.fbank, num_mel_bins=80, window_type="hamming", dither=0.0, sample_frequency=16000
    )
    mel = T.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=80)
    return {
        "kaldi.fbank": lambda w: fbank(w * 32768.0),
        "MelSpectrogram": lambda w: mel(w),
    }


def _time(fn: Callable[[], Any], calls: int) -> float:
    # CPU time of this thread (torch runs single-threaded here): far less sensitive than wall
    # time to other processes competing for the cores.
    start = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - start) / calls


def _calls_for(seconds: float) -> int:
    return 40 if seconds <= 1 else 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="rounds per variant (min is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)

    import torch
    import torchaudio

    import blackwell_compat as bc
    from blackwell_compat import devices

    torch.set_num_threads(args.threads)
    workloads = _workloads()
    inputs = {"short 1 s": _signal(1.0), "long 30 s": _signal(30.0)}

    real_device_targeted = devices.device_targeted

    def cpu_is_affected(device: Any) -> bool:
        return device.type == "cpu" or real_device_targeted(device)

    def variant(kind: str) -> Callable[[Callable[[], Any]], float]:
        def measure(fn: Callable[[], Any], calls: int) -> float:
            if kind == "unpatched":
                return _time(fn, calls)
            strategy = "cpu" if kind == "cpu" else "real"
            with bc.patched(only="torchaudio", force=True, strategies={"torchaudio": strategy}):
                if kind == "bypass":
                    return _time(fn, calls)
                devices.device_targeted = cpu_is_affected  # type: ignore[assignment]
                try:
                    return _time(fn, calls)
                finally:
                    devices.device_targeted = real_device_targeted  # type: ignore[assignment]

        return measure  # type: ignore[return-value]

    kinds = ("unpatched", "real", "cpu", "bypass")
    print(
        f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, "
        f"{args.threads} thread(s), min of {args.repeat} rounds"
    )
    print(f"{'workload':<16}{'input':<11}" + "".join(f"{k:>12}" for k in kinds) + "   ratios")
    worst = 0.0
    for wname, work in workloads.items():
        for iname, wave in inputs.items():
            calls = _calls_for(wave.shape[-1] / 16000)
            fn = functools_partial(work, wave)
            for kind in kinds:  # warm-up (allocator, FFT plans, lazy imports)
                variant(kind)(fn, 1)  # type: ignore[call-arg]
            samples: dict[str, list[float]] = {k: [] for k in kinds}
            for _ in range(args.repeat):
                for kind in kinds:
                    samples[kind].append(variant(kind)(fn, calls))  # type: ignore[call-arg]
            best = {k: min(v) for k, v in samples.items()}
            base = best["unpatched"]
            ratios = {k: best[k] / base for k in kinds[1:]}
            worst = max(worst, ratios["real"])
            spread = statistics.pstdev(samples["unpatched"]) / statistics.mean(samples["unpatched"])
            print(
                f"{wname:<16}{iname:<11}"
                + "".join(f"{best[k] * 1e3:>10.3f}ms" for k in kinds)
                + "   "
                + "  ".join(f"{k}={r:.3f}" for k, r in ratios.items())
                + f"  (noise {spread:.1%})"
            )
    verdict = "within" if worst < 1.05 else "ABOVE"
    print(f"worst real/unpatched ratio: {worst:.3f} ({verdict} the 5% aim)")
    return 0


def functools_partial(fn: Callable[[Any], Any], arg: Any) -> Callable[[], Any]:
    def call() -> Any:
        return fn(arg)

    return call


if __name__ == "__main__":
    raise SystemExit(main())
