"""Parity cases for the ``kokoro`` patch: a full random-weight ``KModel`` forward.

The model (the published Kokoro-82M sizes with a smaller ALBERT and ``max_dur`` 10, so that a
phoneme lasts about 5 frames) is built once per process from a fixed seed; each forward seeds
the vocoder's noise sources, so a case's output is deterministic on a given torch build.
"""

from __future__ import annotations

import functools
from typing import Any

from golden.cases_torchaudio import Case

# About 5 frames (0.125 s of audio) per phoneme with random weights; see support.models.
CONFIG_OVERRIDES: dict[str, Any] = {"max_dur": 10}


@functools.cache
def kmodel() -> Any:
    """The shared random-weight KModel (built on first use)."""
    from support.models import build_kmodel

    return build_kmodel(seed=0, **CONFIG_OVERRIDES)


def _short() -> Any:
    from support.models import KOKORO_SHORT, run_kmodel

    return run_kmodel(kmodel(), KOKORO_SHORT)


def _long() -> Any:
    from support.models import KOKORO_LONG, run_kmodel

    return run_kmodel(kmodel(), KOKORO_LONG)


CASES: dict[str, Case] = {
    c.name: c for c in (Case("kmodel_short", _short), Case("kmodel_long", _long))
}
