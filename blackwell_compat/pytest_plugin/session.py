"""What the plugin does to the engine: session-wide patches and the blocks of the
``blackwell_compat`` marker.

Imported by the hooks on first need (not when the plugin is loaded).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

import pytest

from .. import engine
from ..emulation import emulate
from ..errors import ConfigError
from ..probing import probe
from .report import session_skipped
from .settings import DEFAULT_ARCH
from .state import MARKER_KEY, State


def apply_session(state: State) -> None:
    """Apply the session's patches as ``--blackwell-compat`` says (idempotent)."""
    if session_skipped(state):
        return
    settings = state.settings
    affected = settings.mode == "auto" and probe().affected
    try:
        if settings.mode == "on":
            report = engine.apply(force=True)
        elif affected:
            report = engine.apply()
        else:
            # Under --blackwell-emulate, apply as this process would on the emulated GPU: the
            # engine's device gate sees the emulated GPU as affected.
            arch = state.emulation.arch if state.emulation is not None else DEFAULT_ARCH
            with emulate(arch):
                report = engine.apply()
    except ConfigError as exc:
        raise pytest.UsageError(f"blackwell-compat: {exc}") from None
    state.session_report = report
    state.session_applied = True
    state.session_names = [entry.name for entry in report.entries]


def revert_session(state: State) -> None:
    """Revert what :func:`apply_session` applied."""
    if state.session_applied:
        engine.revert(state.session_names)
        state.session_applied = False


def marker_selection(marker: pytest.Mark) -> tuple[list[str] | None, dict[str, str]]:
    """Read ``blackwell_compat(patches=..., strategies=...)``; raises ConfigError when malformed."""
    kwargs = dict(marker.kwargs)
    unknown = sorted(set(kwargs) - {"patches", "strategies"})
    if unknown:
        raise ConfigError(
            f"@pytest.mark.blackwell_compat: unknown argument(s) {', '.join(unknown)}; "
            "it takes patches=... and strategies=..."
        )
    if marker.args and "patches" in kwargs:
        raise ConfigError(
            "@pytest.mark.blackwell_compat: give the patches positionally or as patches=, not both"
        )
    raw: Any = kwargs.get("patches", list(marker.args) if marker.args else None)
    names: list[str] | None
    if raw is None:
        names = None
    else:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple, set, frozenset)) or not all(
            isinstance(i, str) for i in items
        ):
            raise ConfigError(
                "@pytest.mark.blackwell_compat: patches must be a name, a comma-separated string "
                f"or a list of names, not {raw!r}"
            )
        names = [part.strip() for item in items for part in item.split(",") if part.strip()]
        if not names:
            raise ConfigError("@pytest.mark.blackwell_compat: patches is empty")
    strategies: Any = kwargs.get("strategies") or {}
    if not isinstance(strategies, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in strategies.items()
    ):
        raise ConfigError(
            "@pytest.mark.blackwell_compat: strategies must be a mapping of patch name to "
            f"strategy name, e.g. {{'torchaudio': 'real'}}, not {strategies!r}"
        )
    return names, dict(strategies)


def enter_marker(item: pytest.Item, state: State, marker: pytest.Mark) -> None:
    """Apply the marker's patches; they are reverted in the test's teardown phase."""
    __tracebackhide__ = True
    try:
        names, strategies = marker_selection(marker)
        stack = ExitStack()
        stack.enter_context(engine.patched(only=names, strategies=strategies, force=True))
    except ConfigError as exc:
        pytest.fail(f"blackwell-compat: {exc}", pytrace=False)
    if state.session_applied and any(name in state.session_names for name in strategies):
        # A session patch now runs the marker's strategy: switch it back after the test.
        stack.callback(apply_session, state)
    item.stash[MARKER_KEY] = stack
