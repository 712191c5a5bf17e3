"""Offline XTTS v2 fixtures for the ``coqui_tts`` (TTS 0.22) and ``coqui_tts_fork`` (coqui-tts
0.28) tests.

The model, the stand-in vocabulary and the checkpoint folder come from
``examples/xtts_clone.py`` (its ``--random-weights`` mode), so the tests exercise the example
too.  Building the full 467 M-parameter model and writing its 1.9 GB checkpoint takes about half
a minute on a CI core: each test session does it once (session-scoped fixtures in the test
modules) and deletes the checkpoint at the end.

Nothing here imports ``TTS`` at module level: test modules that use it are collected in every
environment and deselected by marker where ``TTS`` is missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "xtts_clone.py"
NVRTC_ERROR = "invalid value for --gpu-architecture"


def example() -> types.ModuleType:
    """``examples/xtts_clone.py`` as a module (loaded once)."""
    cached = sys.modules.get("_bc_xtts_clone")
    if cached is not None:
        return cached
    spec = importlib.util.spec_from_file_location("_bc_xtts_clone", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


Fingerprint = Mapping[str, tuple[tuple[int, ...], float, float]]


def fingerprint(state: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], float, float]]:
    """Shape, sum and sum of squares (float64) of every tensor: equal for equal tensors, and
    random re-initialisation never reproduces them."""
    result = {}
    for name, tensor in state.items():
        values = tensor.detach().double()
        result[name] = (tuple(tensor.shape), float(values.sum()), float((values * values).sum()))
    return result


def assert_same_weights(expected: Fingerprint, state: Mapping[str, Any]) -> None:
    actual = fingerprint({name: state[name] for name in expected if name in state})
    missing = sorted(set(expected) - set(actual))
    assert not missing, f"{len(missing)} tensors missing after the load, e.g. {missing[:3]}"
    different = [name for name in expected if actual[name] != expected[name]]
    assert not different, f"{len(different)} tensors differ after the load, e.g. {different[:3]}"


def file_state(path: Path) -> tuple[str, int, int]:
    """(sha256, size, mtime in ns) of *path*."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    stat = path.stat()
    return digest.hexdigest(), stat.st_size, stat.st_mtime_ns


@dataclass
class XttsCheckpoint:
    """A checkpoint folder in the release layout, and the fingerprint of its weights."""

    folder: Path
    weights: dict[str, tuple[tuple[int, ...], float, float]]
    build_seconds: float
    save_seconds: float

    @property
    def model_path(self) -> Path:
        return self.folder / "model.pth"


def build_checkpoint(folder: Path, seed: int = 0) -> XttsCheckpoint:
    """Build the random-weight model and write ``config.json``, ``vocab.json``, ``model.pth``."""
    import time

    xc = example()
    folder.mkdir(parents=True, exist_ok=True)
    config = xc.published_config()
    xc.write_stand_in_vocab(folder / "vocab.json")
    started = time.perf_counter()
    model = xc.build_random_model(config, seed)
    built = time.perf_counter() - started
    weights = fingerprint(model.state_dict())
    started = time.perf_counter()
    xc.save_checkpoint(model, config, folder / "model.pth")
    saved = time.perf_counter() - started
    config.save_json(str(folder / "config.json"))
    del model
    return XttsCheckpoint(folder, weights, built, saved)


def remove_checkpoint(checkpoint: XttsCheckpoint) -> None:
    make_writable(checkpoint.model_path)
    shutil.rmtree(checkpoint.folder, ignore_errors=True)


# -- read-only files -----------------------------------------------------------------------------


def _chattr(flag: str, path: Path) -> bool:
    tool = shutil.which("chattr")
    if tool is None:
        return False
    done = subprocess.run([tool, flag, str(path)], capture_output=True, check=False)
    return done.returncode == 0


def make_read_only(path: Path) -> None:
    """Make *path* unwritable for this process: mode 0444, and (root ignores modes) the
    immutable attribute.  Fails the test when the file stays writable."""
    os.chmod(path, 0o444)
    if os.geteuid() == 0:
        _chattr("+i", path)
    try:
        with open(path, "r+b"):
            pass
    except PermissionError:
        return
    raise AssertionError(
        f"cannot make {path} read-only here (root without chattr +i support); the read-only "
        "case needs a file this process cannot write"
    )


def make_writable(path: Path) -> None:
    if not path.exists():
        return
    if os.geteuid() == 0:
        _chattr("-i", path)
    os.chmod(path, 0o644)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    make_read_only(path)
    try:
        yield
    finally:
        make_writable(path)


# -- the conditioning path ---------------------------------------------------------------------


def conditioning(model: Any, seconds: float = 6.0) -> tuple[Any, Any]:
    """GPT conditioning latents and speaker embedding of a fixed stand-in reference voice."""
    xc = example()
    audio = xc.reference_waveform(seconds, model.config.audio.sample_rate, seed=1)
    return xc.conditioning_latents(model, audio)  # type: ignore[no-any-return]
