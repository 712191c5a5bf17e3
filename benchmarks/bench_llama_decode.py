"""Cost of the op guard in a launch-bound model: greedy Llama decoding, guarded / plain.

    python benchmarks/bench_llama_decode.py [--tokens 48] [--layers 12] [--repeat 5] [--json]

A small ``transformers`` ``LlamaForCausalLM`` with random weights (no download) decodes batch 1
on one CPU thread: every op is tiny, so the time is dominated by per-call overhead, as on a GPU
where kernels launch faster than Python issues them.  Printed, from one run:

* plain: no dispatcher kernel of this package installed;
* guard: ``bc.emulate()`` with the ``torch`` patch applied, so the op guard's kernels sit on
  every inventory op (on an affected GPU they sit on the CUDA key the same way);
* the ratio guard / plain: plain and guarded decoding alternate in ``--repeat`` rounds, each
  round gives one ratio (process CPU time) and the median is printed, so that a slow phase of a
  shared machine hits both sides of a ratio alike; the times shown are the best rounds;
* the same for trivial Python kernels on the same overloads that only call the original: the
  floor any dispatcher-level Python guard pays, so guard - floor is the guard's own share;
* how many calls per generated token reach an intercepted overload, by overload, and how many
  of those the guard rewrote (for float32 Llama: none);
* the remedy route (docs/remedies.md): the same emulated affected GPU, but with a capable
  NVRTC configured (``BLACKWELL_COMPAT_NVRTC``, or the cache filled by ``fetch nvrtc``), so
  ``bc.apply()`` serves it with the NVRTC remedy and installs no dispatcher kernel at all.  A
  loaded library cannot be taken back, so these rounds come after the guard's, again
  alternating with plain rounds; without a capable NVRTC the route is reported as not
  available, with the remedy's reason.

Needs ``transformers`` (installed in the ``tests-full`` nox environment).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch

import blackwell_compat as bc
from blackwell_compat import config, emulation
from blackwell_compat.ops import dispatcher as dispatch


def build_model(layers: int, hidden: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config).eval()


def decode(model: Any, tokens: int) -> torch.Tensor:
    prompt = torch.tensor([[1, 7, 42, 5]])
    with torch.inference_mode():
        out = model.generate(
            prompt,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return out  # type: ignore[no-any-return]


def _cpu_time(model: Any, tokens: int) -> tuple[float, torch.Tensor]:
    start = time.process_time()
    out = decode(model, tokens)
    return time.process_time() - start, out


def count_calls(model: Any, tokens: int) -> collections.Counter[str]:
    """Calls per overload that reach an intercepted (inventory) overload, with no guard on."""
    from torch.utils._python_dispatch import TorchDispatchMode

    intercepted = {spec.qualified for spec in dispatch.overload_specs()}
    counts: collections.Counter[str] = collections.Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):  # type: ignore[no-untyped-def]
            name = str(func._schema.name)
            overload = func._overloadname
            qualified = name + ("" if overload == "default" else f".{overload}")
            if qualified in intercepted:
                counts[qualified] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        decode(model, tokens)
    return counts


@contextlib.contextmanager
def trivial_kernels() -> Iterator[None]:
    """The floor of any dispatcher-level Python guard: on every overload the guard intercepts,
    a kernel that only calls the captured original (numbers in tensor slots become tensors,
    which is all it does).  Needs ``torch.library.get_kernel`` (torch >= 2.9)."""
    library = torch.library.Library("aten", "IMPL")
    numbers = (bool, int, float, complex)
    try:
        for spec in dispatch.overload_specs():
            if spec.factory:
                continue
            try:
                call_boxed = torch.library.get_kernel(spec.qualified, "CPU").call_boxed
            except Exception:
                continue

            def kernel(
                keyset: Any, *args: Any, _call: Any = call_boxed, _slots: Any = spec.tensor_slots,
                **kwargs: Any,
            ) -> Any:  # fmt: skip
                for i in _slots:
                    if i < len(args) and args[i].__class__ in numbers:
                        args = (*args[:i], torch.tensor(args[i]), *args[i + 1 :])
                return _call(keyset, *args, **kwargs)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                library.impl(spec.impl_name, kernel, "CPU", with_keyset=True)
        yield
    finally:
        library._destroy()


def measure(tokens: int, layers: int, hidden: int, repeat: int) -> dict[str, Any]:
    model = build_model(layers, hidden)
    decode(model, 4)  # warm-up (lazy initialisation in transformers)
    plain_times, guard_times, floor_times = [], [], []
    rewritten: list[Any] = []
    reference = decode(model, tokens)
    floor = hasattr(torch.library, "get_kernel")
    # The guard route is the one without a capable NVRTC: the remedy stays off until its own
    # rounds (a library it loads cannot be taken back).
    configured = os.environ.get(config.NVRTC)
    os.environ[config.NVRTC] = "off"
    try:
        guard_rounds(
            model,
            tokens,
            repeat,
            reference,
            floor,
            rewritten,
            plain_times,
            guard_times,
            floor_times,
        )
    finally:
        if configured is None:
            os.environ.pop(config.NVRTC, None)
        else:
            os.environ[config.NVRTC] = configured
    remedy = measure_remedy(model, tokens, repeat, reference)
    counts = count_calls(model, tokens)
    total = sum(counts.values())
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tokens": tokens,
        "layers": layers,
        "hidden": hidden,
        "repeat": repeat,
        "plain_s": min(plain_times),
        "guard_s": min(guard_times),
        "ratio": statistics.median(g / p for g, p in zip(guard_times, plain_times, strict=True)),
        "floor_ratio": (
            statistics.median(f / p for f, p in zip(floor_times, plain_times, strict=True))
            if floor_times
            else None
        ),
        "intercepted_calls_per_token": total / tokens,
        "by_overload_per_token": {k: v / tokens for k, v in counts.most_common()},
        "rewritten_calls": len(rewritten) // repeat,
        **remedy,
    }


def guard_rounds(
    model: Any,
    tokens: int,
    repeat: int,
    reference: Any,
    floor: bool,
    rewritten: list[Any],
    plain_times: list[float],
    guard_times: list[float],
    floor_times: list[float],
) -> None:
    """Plain, trivial-kernel and guarded decoding, alternating in *repeat* rounds."""
    for _ in range(repeat):
        t, out = _cpu_time(model, tokens)
        plain_times.append(t)
        if floor:
            with trivial_kernels():
                decode(model, 2)
                floor_times.append(_cpu_time(model, tokens)[0])
        with bc.emulate("sm_121"), bc.patched(only="torch"):
            if not dispatch.guard_enabled():
                raise SystemExit("guard route: the op guard is not installed")
            decode(model, 2)  # warm-up: the first calls after registration fill caches
            previous = dispatch.set_recorder(rewritten.append)
            try:
                t, guarded = _cpu_time(model, tokens)
            finally:
                dispatch.set_recorder(previous)
        guard_times.append(t)
        if not torch.equal(guarded, reference) or not torch.equal(out, reference):
            raise SystemExit("guarded decoding produced other tokens than plain decoding")


def measure_remedy(model: Any, tokens: int, repeat: int, reference: Any) -> dict[str, Any]:
    """Plain rounds alternating with the remedy route (emulated GPU, ``apply()``, NVRTC remedy
    serving it); ``remedy_ratio`` is ``None`` where no capable NVRTC was found."""
    from blackwell_compat.remedies import nvrtc as nvrtc_remedy

    with bc.emulate("sm_121"):
        report = bc.apply(only="torch")
        state = nvrtc_remedy.state()
        served = state.status == nvrtc_remedy.SERVED
        keys = dispatch.installed_keys()
        bc.revert()
    result: dict[str, Any] = {
        "remedy": state.describe(),
        "remedy_torch_patch": report.entries[0].state if report.entries else None,
        "remedy_keys": keys,
        "remedy_s": None,
        "remedy_ratio": None,
    }
    if not served:
        return result
    plain_times, remedy_times = [], []
    for index in range(repeat):
        if index % 2 == 0:  # alternate which side runs first, so warm caches favour neither
            plain_times.append(_cpu_time(model, tokens)[0])
        with bc.emulate("sm_121"), bc.patched(only="torch"):
            if dispatch.installed_keys():
                raise SystemExit(f"remedy route: kernels installed {dispatch.installed_keys()}")
            t, out = _cpu_time(model, tokens)
        remedy_times.append(t)
        if index % 2 == 1:
            plain_times.append(_cpu_time(model, tokens)[0])
        if not torch.equal(out, reference):
            raise SystemExit("the remedy route produced other tokens than plain decoding")
    result["remedy_s"] = min(remedy_times)
    result["remedy_ratio"] = statistics.median(
        r / p for r, p in zip(remedy_times, plain_times, strict=True)
    )
    return result


def render(result: dict[str, Any]) -> str:
    lines = [
        f"Llama decode, {result['layers']} layers, hidden {result['hidden']}, batch 1, "
        f"{result['tokens']} tokens, torch {result['torch']}, {result['threads']} thread(s), "
        f"CPU time, {result['repeat']} interleaved rounds",
        f"  plain  {result['plain_s'] * 1e3:8.1f} ms",
        f"  guard  {result['guard_s'] * 1e3:8.1f} ms",
        f"  guard / plain  {result['ratio']:.3f}x (median of the rounds' ratios)",
        "  trivial pass-through kernels / plain (the floor of any Python kernel): "
        + (f"{result['floor_ratio']:.3f}x" if result["floor_ratio"] else "n/a (torch < 2.9)"),
        f"  intercepted calls per token: {result['intercepted_calls_per_token']:.0f} "
        f"(rewritten by the guard in all: {result['rewritten_calls']})",
    ]
    for name, per_token in list(result["by_overload_per_token"].items())[:8]:
        lines.append(f"    {name:<28} {per_token:7.1f}")
    if result["remedy_ratio"] is not None:
        lines.append(f"  remedy {result['remedy_s'] * 1e3:8.1f} ms")
        lines.append(
            f"  remedy / plain  {result['remedy_ratio']:.3f}x (median of the rounds' ratios; "
            f"dispatcher kernels installed: {result['remedy_keys'] or 'none'})"
        )
    else:
        lines.append("  remedy / plain  n/a: no capable NVRTC configured")
    lines.append(f"    {result['remedy']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if emulation.is_active():
        print(
            "run without BLACKWELL_COMPAT_EMULATE: plain times need no emulation", file=sys.stderr
        )
        return 2
    result = measure(args.tokens, args.layers, args.hidden, args.repeat)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
