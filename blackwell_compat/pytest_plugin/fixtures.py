"""The ``blackwell_patched`` fixture's object (imported when a test asks for it)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from .. import engine
from ..engine import ApplyReport


class PatchedFactory:
    """The ``blackwell_patched`` fixture: a context manager, and a factory of them.

    ``with blackwell_patched:`` applies every patch; ``with blackwell_patched("torch",
    strategies={...}) as report:`` applies a selection.  Patches are forced (as with
    ``--blackwell-compat=on``) unless ``force=False``; each block reverts what it applied.
    """

    def __init__(self) -> None:
        self._open: list[AbstractContextManager[ApplyReport]] = []

    def __call__(
        self,
        patches: str | list[str] | tuple[str, ...] | None = None,
        *,
        exclude: str | list[str] | tuple[str, ...] = (),
        strategies: Mapping[str, str] | None = None,
        force: bool = True,
    ) -> AbstractContextManager[ApplyReport]:
        only: Any = patches
        if isinstance(patches, str):
            only = [p.strip() for p in patches.split(",") if p.strip()]
        block = engine.patched(only=only, exclude=exclude, force=force, strategies=strategies)
        return _Tracked(self, block)

    def __enter__(self) -> ApplyReport:
        return self().__enter__()

    def __exit__(self, *exc_info: object) -> None:
        if self._open:
            self._open[-1].__exit__(None, None, None)

    def close(self) -> None:
        """Exit every block still open (the fixture's teardown)."""
        while self._open:
            self._open[-1].__exit__(None, None, None)


class _Tracked:
    def __init__(self, owner: PatchedFactory, block: AbstractContextManager[ApplyReport]) -> None:
        self._owner = owner
        self._block = block

    def __enter__(self) -> ApplyReport:
        report = self._block.__enter__()
        self._owner._open.append(self)
        return report

    def __exit__(self, *exc_info: object) -> None:
        if self in self._owner._open:
            self._owner._open.remove(self)
            self._block.__exit__(None, None, None)
