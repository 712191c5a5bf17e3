"""WhisperX diarization (pyannote.audio 4): the WeSpeaker ResNet34 speaker embedding.

Its ``__init__`` stores ``functools.partial(torchaudio.compliance.kaldi.fbank, ...)`` and
``compute_fbank`` calls it under ``torch.vmap``.  The ``torchaudio`` patch must reach that
captured reference whether the model was built before ``apply()`` or after, under vmap, with both
strategies.  Random weights (seeded), no download.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from golden import store
from support.audio_parity import (
    NVRTC_ERROR,
    assert_identical,
    patched_emulation,
    reference,
)

import blackwell_compat as bc
from blackwell_compat import state as process_state

pytestmark = [pytest.mark.targets, pytest.mark.slow]

GOLDEN = "pyannote"
PATCH = "torchaudio"


@pytest.fixture(scope="module")
def waveforms() -> Any:
    from golden.cases_pyannote import batch

    return batch()


@pytest.fixture(scope="module")
def references(waveforms: Any) -> dict[str, Any]:
    from golden.cases_pyannote import embedding_of, fbank_of
    from support.models_audio import wespeaker_resnet34

    process_state.reset_for_tests()
    model = wespeaker_resnet34()
    return {
        "wespeaker_resnet34_embedding": reference(lambda: embedding_of(model, waveforms)),
        "wespeaker_resnet34_fbank": reference(lambda: fbank_of(model, waveforms)),
    }


def test_references_match_goldens(references: dict[str, Any]) -> None:
    for name, value in references.items():
        store.assert_matches_golden(GOLDEN, name, value)


def test_unpatched_embedding_fails_under_emulation(waveforms: Any) -> None:
    from golden.cases_pyannote import embedding_of
    from support.models_audio import wespeaker_resnet34

    model = wespeaker_resnet34()
    with bc.emulate(), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        embedding_of(model, waveforms)


def _check(strategy: str, out: Any, ref: Any, name: str) -> None:
    if strategy == "cpu":
        assert_identical(out, ref)
    else:
        torch.testing.assert_close(out, ref)
    store.assert_matches_golden(GOLDEN, name, out)


@pytest.mark.parametrize("strategy", ["real", "cpu"])
def test_model_built_before_apply(
    strategy: str, waveforms: Any, references: dict[str, Any]
) -> None:
    from golden.cases_pyannote import embedding_of, fbank_of
    from support.models_audio import wespeaker_resnet34

    model = wespeaker_resnet34()  # holds partial(kaldi.fbank) of the unpatched function
    with patched_emulation(PATCH, strategy):
        emb = embedding_of(model, waveforms)
        feats = fbank_of(model, waveforms)
    _check(
        strategy, emb, references["wespeaker_resnet34_embedding"], "wespeaker_resnet34_embedding"
    )
    _check(strategy, feats, references["wespeaker_resnet34_fbank"], "wespeaker_resnet34_fbank")


@pytest.mark.parametrize("strategy", ["real", "cpu"])
def test_model_built_after_apply(strategy: str, waveforms: Any, references: dict[str, Any]) -> None:
    from golden.cases_pyannote import embedding_of
    from support.models_audio import wespeaker_resnet34

    with patched_emulation(PATCH, strategy):
        model = wespeaker_resnet34()
        emb = embedding_of(model, waveforms)
    _check(
        strategy, emb, references["wespeaker_resnet34_embedding"], "wespeaker_resnet34_embedding"
    )


def test_model_keeps_working_after_revert(waveforms: Any, references: dict[str, Any]) -> None:
    from golden.cases_pyannote import embedding_of
    from support.models_audio import wespeaker_resnet34

    model = wespeaker_resnet34()
    with patched_emulation(PATCH):
        embedding_of(model, waveforms)
    # Reverted: outside emulation the original code gives the reference bit for bit, and
    # under emulation the failure is back.
    assert_identical(embedding_of(model, waveforms), references["wespeaker_resnet34_embedding"])
    with bc.emulate(), pytest.raises(RuntimeError, match=NVRTC_ERROR):
        embedding_of(model, waveforms)
