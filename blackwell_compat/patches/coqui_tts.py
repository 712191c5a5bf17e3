"""Coqui ``TTS`` 0.19–0.22 (the original package): load XTTS checkpoints on torch >= 2.6.

Symptom: on torch >= 2.6 (which Blackwell GPUs need: torch >= 2.7), loading XTTS v2 fails in
``Xtts.load_checkpoint`` with ``_pickle.UnpicklingError: Weights only load failed ...
Unsupported global: GLOBAL TTS.tts.configs.xtts_config.XttsConfig``.

Cause: torch 2.6 changed the default of ``torch.load`` to ``weights_only=True``, which refuses
every class it does not know.  The published ``model.pth`` is ``{"config": XttsConfig,
"model": state_dict}``: the configuration is pickled as objects of four Coqpit classes.
``TTS`` 0.22 (its last release) predates the change and loads through
``TTS.utils.io.load_fsspec`` -> ``torch.load`` with torch's default.

Fix: ``Xtts.get_compatible_checkpoint_state_dict`` (the one place that reads ``model.pth``) runs
with exactly these four classes allow-listed, through ``torch.serialization.safe_globals``, for
the duration of that call only:

- ``TTS.tts.configs.xtts_config.XttsConfig``
- ``TTS.tts.models.xtts.XttsAudioConfig``
- ``TTS.config.shared_configs.BaseDatasetConfig``
- ``TTS.tts.models.xtts.XttsArgs``

The load still runs with ``weights_only=True``: any other global in the file (a malicious
``__reduce__`` payload, a foreign class) fails with torch's own error.  ``weights_only=False``,
the public workaround, lets a checkpoint file run arbitrary code and is never used.

torch keeps its allow-list in one process-wide set, so the allow-listing is a *window*: while
a load runs, loads in other threads also accept these four configuration classes (and nothing
else).  The window is the toolkit's (:mod:`blackwell_compat.toolkit.safe_globals`): it adds only
the classes that are not already there, counts concurrent loads, and on exit removes, by
difference, exactly what it added and nobody else claimed: a class the user allow-listed before
the window stays, and so does one the user passes to ``torch.serialization.add_safe_globals``
during the window (watched while the patch is applied).  See docs/patches/xtts.md.

Version range: the method and the class layout are the same from ``TTS`` 0.19.0 (where
``get_compatible_checkpoint_state_dict`` appeared) to 0.22.0 (sources of 0.19.0, 0.20.0, 0.21.0
and 0.22.0 read; 0.22.0 tested).  0.17 and 0.18 read the checkpoint inline in
``load_checkpoint`` and are not covered.  The ``coqui-tts`` fork (same ``TTS`` package, other
distribution) has its own patch, ``coqui_tts_fork``.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import Any

from ..errors import logger
from ..toolkit import Patch, PatchContext, class_problems, function_problems
from ..toolkit.safe_globals import allow_listed, watch_user_additions
from ..versions import release_string

XTTS_MODULE = "TTS.tts.models.xtts"
METHOD = "get_compatible_checkpoint_state_dict"

#: The classes an XTTS checkpoint pickles, as ``(module, name)``: nothing else is allowed.
XTTS_CHECKPOINT_CLASSES: tuple[tuple[str, str], ...] = (
    ("TTS.tts.configs.xtts_config", "XttsConfig"),
    ("TTS.tts.models.xtts", "XttsAudioConfig"),
    ("TTS.config.shared_configs", "BaseDatasetConfig"),
    ("TTS.tts.models.xtts", "XttsArgs"),
)
#: First torch release whose ``torch.load`` defaults to ``weights_only=True``.
WEIGHTS_ONLY_DEFAULT = (2, 6)

__all__ = [
    "XTTS_CHECKPOINT_CLASSES",
    "CoquiTTSPatch",
    "allow_listed",
    "checkpoint_classes",
    "watch_user_additions",
]


def checkpoint_classes() -> list[Any]:
    """The four XTTS checkpoint classes, imported (their modules are loaded by then)."""
    found = []
    for module_name, name in XTTS_CHECKPOINT_CLASSES:
        module = importlib.import_module(module_name)
        cls = getattr(module, name, None)
        if not isinstance(cls, type):
            raise LookupError(f"{module_name}.{name} is not a class any more")
        found.append(cls)
    return found


class _AllowListedLoad:
    """Replacement for ``Xtts.get_compatible_checkpoint_state_dict``: the original, run inside
    :func:`allow_listed` with the four XTTS classes."""

    def __init__(self) -> None:
        self.original: Callable[..., Any] | None = None

    def __call__(self, model: Any, model_path: Any, *args: Any, **kwargs: Any) -> Any:
        original = self.original
        assert original is not None
        try:
            classes = checkpoint_classes()
        except (ImportError, LookupError) as exc:
            logger.warning(
                "coqui_tts: cannot resolve the XTTS checkpoint classes (%s); loading %s "
                "without allow-listing them",
                exc,
                model_path,
            )
            return original(model, model_path, *args, **kwargs)
        with allow_listed(classes):
            return original(model, model_path, *args, **kwargs)


# -- the patch --------------------------------------------------------------------------------


def xtts_problems(module: types.ModuleType) -> list[str]:
    """Drift check of ``TTS.tts.models.xtts`` (``TTS`` 0.19–0.22)."""
    where = module.__name__
    problems: list[str] = []
    cls, missing = class_problems(module, "Xtts")
    problems += missing
    if cls is not None:
        problems += function_problems(
            cls,
            METHOD,
            where=f"{where}.Xtts",
            params=["self", "model_path"],
            names=["load_fsspec"],
        )
        problems += function_problems(cls, "load_checkpoint", where=f"{where}.Xtts", names=[METHOD])
    for module_name, name in XTTS_CHECKPOINT_CLASSES:
        if module_name != where:
            continue  # the other two are imported lazily (xtts_config imports this module)
        found, missing = class_problems(module, name)
        problems += missing
        if found is not None and found.__module__ != where:
            problems.append(
                f"{where}.{name} is now defined in {found.__module__}: checkpoints pickle it "
                f"as {where}.{name}, the allow-list would not match"
            )
    loader = getattr(module, "load_fsspec", None)
    if loader is None:
        problems.append(f"{where}.load_fsspec is missing")
    else:
        problems += function_problems(module, "load_fsspec", where=where, names=["load"])
    return problems


def _torch_release() -> tuple[int, ...]:
    import torch

    text = release_string(str(torch.__version__)) or "0"
    return tuple(int(part) for part in text.split("."))


class CoquiTTSPatch(Patch):
    """XTTS checkpoints of Coqui ``TTS`` 0.19–0.22 load on torch >= 2.6 without
    ``weights_only=False``."""

    name = "coqui_tts"
    summary = (
        "Coqui TTS 0.19-0.22: load XTTS checkpoints on torch >= 2.6 with exactly the four "
        "XTTS config classes allow-listed for that load (never weights_only=False)"
    )
    distribution = "TTS"
    supported = ">=0.19,<0.23"
    modules = (XTTS_MODULE,)
    requires_affected = False
    docs = "docs/patches/xtts.md"

    def check(self, module: types.ModuleType) -> list[str]:
        return xtts_problems(module)

    def apply(self, module: types.ModuleType, ctx: PatchContext) -> None:
        import torch

        release = _torch_release()
        if release < WEIGHTS_ONLY_DEFAULT:
            ctx.note(
                f"torch {torch.__version__} loads with weights_only=False by default: "
                "XTTS checkpoints load as they are, nothing to change"
            )
            return
        serialization = torch.serialization
        if not all(hasattr(serialization, n) for n in ("safe_globals", "get_safe_globals")):
            raise RuntimeError(
                f"torch {torch.__version__} lacks torch.serialization.safe_globals / "
                "get_safe_globals"
            )
        loader = _AllowListedLoad()
        loader.original = ctx.replace_function(module.Xtts, METHOD, loader)
        watch_user_additions(ctx)
        ctx.note(
            "Xtts.get_compatible_checkpoint_state_dict allow-lists XttsConfig, XttsAudioConfig, "
            "BaseDatasetConfig and XttsArgs for its own torch.load (weights_only stays True); "
            "torch.serialization.add_safe_globals is watched so that a class the user "
            "allow-lists during that load stays allow-listed"
        )
