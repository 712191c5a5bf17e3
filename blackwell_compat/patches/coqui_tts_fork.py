"""``coqui-tts`` 0.28 (the maintained fork of Coqui TTS): load a legacy XTTS checkpoint without
rewriting the user's file.

Symptom: loading the published XTTS v2 ``model.pth`` silently rewrites that file on disk (new
bytes, new modification time, the configuration stored as a dict), and fails with
``RuntimeError: ... Operation not permitted`` / ``PermissionError`` when the file or its folder
is read-only (a shared model cache, a read-only container layer, a checksummed download).

Cause: ``Xtts._load_checkpoint`` first tries ``load_fsspec`` (``weights_only=True``); for the
legacy layout (``{"config": XttsConfig, ...}``) that fails, so it loads again with the legacy
classes allow-listed (``_legacy_safe_globals``), converts the configuration to a dict and calls
``torch.save(checkpoint, model_path)`` over the original.  Only ``checkpoint["model"]`` is
returned: the rewrite serves later loads, not this one.

Fix: ``Xtts._load_checkpoint`` does the same two loads, the same allow-listing (the fork's own
``_legacy_safe_globals``, still ``weights_only=True`` on torch >= 2.4) and returns the same
state dict, but converts in memory only: nothing is written.  Every load of a legacy file then
takes the second path (a failed first attempt, which stops at the first configuration class,
then the allow-listed load).  To convert a file for good, do it explicitly on a copy.

The allow-list window: torch's ``safe_globals`` (which the fork's ``_legacy_safe_globals`` uses)
removes its four classes on exit even when the user had allow-listed them; the patch keeps
them, by difference, as the ``coqui_tts`` patch does (see docs/patches/xtts.md).

Version range: the write-back exists in ``coqui-tts`` 0.28.0 only (0.23–0.27 read the
checkpoint in ``get_compatible_checkpoint_state_dict`` and never write; sources read).
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import logger
from ..toolkit import Patch, PatchContext, class_problems, function_problems
from ..toolkit.safe_globals import kept_listed, watch_user_additions

XTTS_MODULE = "TTS.tts.models.xtts"
METHOD = "_load_checkpoint"
#: Module-level names of ``TTS.tts.models.xtts`` the replacement calls (looked up per call).
MODULE_NAMES = ("load_fsspec", "_legacy_safe_globals", "is_pytorch_at_least_2_4", "XttsConfig")

__all__ = ["CoquiTTSForkPatch", "load_without_rewrite"]


#: The classes the fork's ``_legacy_safe_globals`` allow-lists (names in the xtts module).
LEGACY_CLASS_NAMES = ("XttsAudioConfig", "XttsArgs", "BaseDatasetConfig", "XttsConfig")


@contextmanager
def _window_kept_by_difference(module: types.ModuleType) -> Iterator[None]:
    """Around the fork's own ``_legacy_safe_globals`` window: torch's ``safe_globals`` removes
    its classes on exit even when the user had allow-listed them, before or during the load;
    :func:`~blackwell_compat.toolkit.safe_globals.kept_listed` keeps them."""
    classes: list[Any] = [getattr(module, name, None) for name in LEGACY_CLASS_NAMES]
    if not all(isinstance(cls, type) for cls in classes):
        yield  # not the layout this was written for: the fork's window as it is
        return
    with kept_listed(classes):
        yield


def load_without_rewrite(module: types.ModuleType, model_path: Any) -> Any:
    """``Xtts._load_checkpoint`` of ``coqui-tts`` 0.28 without the ``torch.save`` over
    *model_path*: the state dict of a new-format or legacy checkpoint, file untouched."""
    import torch

    cpu = torch.device("cpu")
    try:
        checkpoint = module.load_fsspec(model_path, map_location=cpu)
    except pickle.UnpicklingError:
        # The legacy layout pickles XttsConfig & co.; allow exactly what the fork allows.
        with _window_kept_by_difference(module):
            with module._legacy_safe_globals():
                checkpoint = torch.load(
                    model_path, map_location=cpu, weights_only=module.is_pytorch_at_least_2_4()
                )
        if isinstance(checkpoint.get("config"), module.XttsConfig):
            logger.info(
                "coqui_tts_fork: %s is a legacy XTTS checkpoint; converted in memory, "
                "the file is left unchanged",
                model_path,
            )
    return checkpoint["model"]


class _InMemoryLoad:
    def __init__(self, module: types.ModuleType) -> None:
        self.module = module
        self.original: Callable[..., Any] | None = None

    def __call__(self, model: Any, model_path: Any) -> Any:
        return load_without_rewrite(self.module, model_path)


def fork_problems(module: types.ModuleType) -> list[str]:
    """Drift check of ``TTS.tts.models.xtts`` (``coqui-tts`` 0.28)."""
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
            names=[
                "load_fsspec",
                "UnpicklingError",
                "_legacy_safe_globals",
                "is_pytorch_at_least_2_4",
                "XttsConfig",
                "to_dict",
                "save",
            ],
        )
        problems += function_problems(
            cls, "get_compatible_checkpoint_state_dict", where=f"{where}.Xtts", names=[METHOD]
        )
    for name in MODULE_NAMES:
        if not callable(getattr(module, name, None)):
            problems.append(f"{where}.{name} is missing")
    return problems


class CoquiTTSForkPatch(Patch):
    """``coqui-tts`` 0.28 loads legacy XTTS checkpoints without rewriting them on disk."""

    name = "coqui_tts_fork"
    summary = (
        "coqui-tts 0.28: load a legacy XTTS model.pth in memory instead of rewriting the "
        "user's file (works on read-only files)"
    )
    distribution = "coqui-tts"
    supported = ">=0.28,<0.29"
    modules = (XTTS_MODULE,)
    requires_affected = False
    docs = "docs/patches/xtts.md"

    def check(self, module: types.ModuleType) -> list[str]:
        return fork_problems(module)

    def apply(self, module: types.ModuleType, ctx: PatchContext) -> None:
        loader = _InMemoryLoad(module)
        loader.original = ctx.replace_function(module.Xtts, METHOD, loader)
        watch_user_additions(ctx)
        ctx.note(
            "Xtts._load_checkpoint converts legacy checkpoints in memory, never on disk; the "
            "fork's allow-list window leaves the user's own allow-listed classes in place"
        )
