"""The plugin's state for one pytest run, kept in ``config.stash`` (so in-process pytester
runs and pytest-xdist workers stay independent).  Light: loaded with the plugin."""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from .settings import Settings

if TYPE_CHECKING:
    from ..engine import ApplyReport


class Emulation:
    """The plugin's own :func:`blackwell_compat.emulate` block, switched on per test loop."""

    def __init__(self, arch: str, device: str = "cpu") -> None:
        self.arch = arch
        self.device = device
        self._block: AbstractContextManager[str] | None = None

    def start(self) -> None:
        if self._block is None:
            # Imported here: loading the plugin must not load the emulation (issue 11).
            from ..emulation import emulate

            block = emulate(self.arch, device=self.device)
            block.__enter__()
            self._block = block

    def stop(self) -> None:
        block, self._block = self._block, None
        if block is not None:
            block.__exit__(None, None, None)


@dataclass
class State:
    settings: Settings
    emulation: Emulation | None
    session_report: ApplyReport | None = None
    session_applied: bool = False
    session_note: str = ""
    session_names: list[str] = field(default_factory=list)


STATE_KEY = pytest.StashKey[State]()
MARKER_KEY = pytest.StashKey[ExitStack]()


def get_state(config: pytest.Config) -> State:
    state = config.stash.get(STATE_KEY, None)
    if state is None:  # configure not run for this config (should not happen); be inert
        state = State(settings=Settings(), emulation=None)
        config.stash[STATE_KEY] = state
    return state
