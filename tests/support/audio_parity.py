"""Helpers for the part-A parity tests (torchaudio, pyannote, s3tokenizer, whisper).

The three steps of every model-level parity test:

1. :func:`reference` – the output on the CPU, no patch applied, outside emulation;
2. :func:`assert_fails_unpatched` – inside ``bc.emulate()`` without patches the same call dies
   with the NVRTC error (the test really exercises the failure);
3. :func:`patched_run` – inside ``bc.emulate()`` with only the targeted patch applied (the
   ``torch`` op guard excluded) the call runs; the caller compares with the reference.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

NVRTC_ERROR = "invalid value for --gpu-architecture"
ARCH = "sm_121"


def reference(run: Callable[[], Any]) -> Any:
    """*run()* on the CPU with nothing patched and no emulation."""
    from blackwell_compat import emulation, engine

    assert not emulation.is_active(), "a reference must not be computed under emulation"
    assert not engine._records, f"a reference must be unpatched; applied: {list(engine._records)}"
    return run()


def assert_fails_unpatched(run: Callable[[], Any]) -> None:
    import blackwell_compat as bc
    from blackwell_compat import engine

    assert not engine._records
    with bc.emulate(ARCH), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        run()


@contextmanager
def patched_emulation(
    only: str | Iterable[str], strategy: str | None = None, patch: str | None = None
) -> Iterator[Any]:
    """``bc.emulate()`` with exactly the named patch(es) applied; yields the apply report."""
    import blackwell_compat as bc

    names = [only] if isinstance(only, str) else list(only)
    strategies = {patch or names[0]: strategy} if strategy else None
    with bc.emulate(ARCH):
        with bc.patched(only=names, strategies=strategies) as report:
            for name in names:
                assert name in report.applied or name in report.pending, str(report)
            yield report


def patched_run(
    run: Callable[[], Any], only: str | Iterable[str], strategy: str | None = None
) -> Any:
    with patched_emulation(only, strategy):
        return run()


def assert_identical(actual: Any, expected: Any) -> None:
    """Bit for bit (nan where nan), for the ``cpu`` strategies."""
    import torch

    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def empty_kernel_cache_env(path: str) -> dict[str, str]:
    """Environment for a child process whose Jiterator compiles (if any) land in *path*."""
    env = dict(os.environ)
    env["PYTORCH_KERNEL_CACHE_PATH"] = path
    env.pop("USE_PYTORCH_KERNEL_CACHE", None)
    env.pop("BLACKWELL_COMPAT_EMULATE", None)
    return env
