"""pytest plugin: test your code for the affected-GPU failure on any machine, and prove parity.

Registered through the ``pytest11`` entry point (plugin name ``blackwell_compat``; disable it
with ``-p no:blackwell_compat``).  Loading it costs almost nothing: this package imports pytest
and :mod:`blackwell_compat.config` only (:mod:`.settings`, :mod:`.state`).  What a session
needs is in :mod:`.report` (header line, failure hint, skip reason), :mod:`.session`
(session-wide patches, marker blocks), :mod:`.fixtures` and
:mod:`.parity` (``assert_cpu_parity``), imported by the hooks and fixtures on first need, so a
test run that loads the plugin without using it imports neither torch, nor the engine, nor the
patches.

Offers (see ``docs/pytest-plugin.md``):

- ``--blackwell-compat={auto,on,off}`` / ini ``blackwell_compat``: apply the patches for the
  whole session (``auto``: only where the probe finds an affected GPU, or under emulation).
- ``--blackwell-emulate[=ARCH]`` / ini ``blackwell_emulate``: run every test (setup, call and
  teardown) under :func:`blackwell_compat.emulate`, so CPU tensors fail as they would on a GPU
  whose architecture the loaded NVRTC lacks.
- ``--blackwell-emulate-device={cpu,cuda}`` / ini ``blackwell_emulate_device``: ``cuda`` runs the
  tests on an emulated CUDA device backed by CPU memory (their GPU code path; only device tensors
  fail); ``cpu`` (the default) keeps CPU tensors failing.
- markers ``blackwell_compat(patches=..., strategies=...)`` and ``requires_affected_gpu``;
- fixtures ``blackwell_platform``, ``blackwell_patched`` and ``assert_cpu_parity``;
- a report header line, and a hint attached to every failure that shows the NVRTC error.

All state lives in ``config.stash``, so in-process pytester runs and pytest-xdist workers (each
a separate process configured from the same options) stay independent.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import NVRTC_ARCH_ERROR_MARK
from .settings import (
    DEFAULT_ARCH,
    MODES,
    Settings,
    add_options,
    parse_emulate,
    parse_mode,
    read_settings,
)
from .state import MARKER_KEY, STATE_KEY, Emulation, State, get_state

if TYPE_CHECKING:
    from .fixtures import PatchedFactory

# The hooks below import .report/.session/.fixtures/.parity inside the function on purpose: they
# load the probe, the emulation and the engine (the engine alone about 60 ms), which a run that
# only loads the plugin must not pay, and a run that uses no patch must not load the engine
# (issue 11; tests/test_pytest_plugin.py checks which modules each kind of run loads).

NVRTC_SIGNATURE = NVRTC_ARCH_ERROR_MARK

__all__ = [
    "DEFAULT_ARCH",
    "MODES",
    "NVRTC_SIGNATURE",
    "Settings",
    "parse_emulate",
    "parse_mode",
    "read_settings",
]


# -- options ----------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "blackwell_compat(patches=None, strategies=None): apply these blackwell-compat patches "
        "(a name, a list of names, or all when omitted; strategies: {patch: strategy}) around "
        "this test, forced as with --blackwell-compat=on, and revert them after it",
    )
    config.addinivalue_line(
        "markers",
        "requires_affected_gpu: run only where a real GPU whose architecture the loaded NVRTC "
        "lacks is present (e.g. GB10 sm_121 with NVRTC 12.8); skipped elsewhere",
    )
    settings = read_settings(config)
    emulation = Emulation(settings.emulate, settings.emulate_device) if settings.emulate else None
    config.stash[STATE_KEY] = State(settings=settings, emulation=emulation)
    if emulation is not None and emulation.device == "cuda" and not config.option.collectonly:
        # The device must exist when test modules are collected: `skipif(not
        # torch.cuda.is_available())` is evaluated then.  CPU tensors never fail on it, so
        # collection itself is safe (the device waits for `import torch`).
        emulation.start()


# -- session-wide patches -----------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    state = get_state(session.config)
    if state.settings.mode == "off":
        return
    from .report import session_skipped

    if session_skipped(state):
        return
    from . import session as runtime

    runtime.apply_session(state)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    if state.emulation is not None:
        state.emulation.stop()
    if state.session_applied:
        from . import session as runtime

        runtime.revert_session(state)


# -- per-test phases: markers and emulation ---------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip ``requires_affected_gpu`` tests (reported at the test, like ``skipif``)."""
    marked = [item for item in items if item.get_closest_marker("requires_affected_gpu")]
    if not marked:
        return
    from .report import affected_gpu_skip_reason

    reason = affected_gpu_skip_reason()
    if reason is not None:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, None, None]:
    """Emulate from the first test's setup to the last test's teardown.

    One block for the whole loop rather than one per test: entering emulation installs its
    dispatcher kernels and leaving removes them, which costs milliseconds each time.
    """
    emulation = get_state(session.config).emulation
    if session.config.option.collectonly:
        emulation = None
    if emulation is not None:
        emulation.start()
    try:
        yield
    finally:
        if emulation is not None:
            emulation.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    marker = item.get_closest_marker("blackwell_compat")
    if marker is not None:
        from . import session as runtime

        runtime.enter_marker(item, get_state(item.config), marker)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        yield
    finally:
        stack = item.stash.get(MARKER_KEY, None)
        if stack is not None:
            del item.stash[MARKER_KEY]
            stack.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    if call.excinfo is None or NVRTC_SIGNATURE not in str(call.excinfo.value):
        return
    report = outcome.get_result()
    try:
        from .report import failure_hint

        hint = failure_hint(get_state(item.config), str(call.excinfo.value))
    except Exception as exc:  # a hint must never break reporting
        hint = f"(no hint: {type(exc).__name__}: {exc})"
    report.sections.append(("blackwell-compat", hint))


# -- report header ----------------------------------------------------------------------------


def header_line(config: pytest.Config) -> str:
    """The one report-header line: GPUs, verdict, active patches, emulation."""
    from . import report

    return report.header_line(config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [header_line(config)]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def blackwell_platform() -> Any:
    """The probe's :class:`~blackwell_compat.Platform` (with the emulated GPU under emulation)."""
    from ..probing import probe

    return probe()


@pytest.fixture
def blackwell_patched() -> Iterator[PatchedFactory]:
    """Apply blackwell-compat patches for a ``with`` block (see
    :class:`~blackwell_compat.pytest_plugin.fixtures.PatchedFactory`)."""
    from .fixtures import PatchedFactory

    factory = PatchedFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def assert_cpu_parity(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``assert_cpu_parity(fn, *inputs, rtol=None, atol=None)``.

    Runs ``fn`` on the device under test (CUDA when present, else CPU under emulation), with
    blackwell-compat's patches (the ones active, else all of them, forced), and on the CPU
    reference without emulation; compares with ``torch.testing.assert_close`` (per-dtype
    defaults unless both ``rtol`` and ``atol`` are given; NaN equals NaN) and reports the worst
    element on failure.  Inputs are copied for each run.  Returns the device result on CPU.
    """
    from .parity import parity

    state = get_state(request.config)

    def check(
        fn: Callable[..., Any], *inputs: Any, rtol: float | None = None, atol: float | None = None
    ) -> Any:
        __tracebackhide__ = True
        return parity(state, fn, inputs, rtol, atol)

    return check
