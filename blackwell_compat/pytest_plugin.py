"""pytest plugin: test your code for the affected-GPU failure on any machine, and prove parity.

Registered through the ``pytest11`` entry point (plugin name ``blackwell_compat``; disable it
with ``-p no:blackwell_compat``).  Loading it costs almost nothing: this module imports pytest
and two small modules of this package; torch, the engine and the patches are imported only
when an option, a marker or a fixture asks for them.

Offers (see ``docs/pytest-plugin.md``):

- ``--blackwell-compat={auto,on,off}`` / ini ``blackwell_compat``: apply the patches for the
  whole session (``auto``: only where the probe finds an affected GPU, or under emulation).
- ``--blackwell-emulate[=ARCH]`` / ini ``blackwell_emulate``: run every test (setup, call and
  teardown) under :func:`blackwell_compat.emulate`, so CPU tensors fail as they would on a GPU
  whose architecture the loaded NVRTC lacks.
- markers ``blackwell_compat(patches=..., strategies=...)`` and ``requires_affected_gpu``;
- fixtures ``blackwell_platform``, ``blackwell_patched`` and ``assert_cpu_parity``;
- a report header line, and a hint attached to every failure that shows the NVRTC error.

All state lives in ``config.stash``, so in-process pytester runs and pytest-xdist workers (each
a separate process configured from the same options) stay independent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from .errors import NVRTC_ARCH_ERROR_MARK, ConfigError
from .versions import __version__

if TYPE_CHECKING:
    from .engine import ApplyReport

MODES = ("auto", "on", "off")
DEFAULT_ARCH = "sm_121"
NVRTC_SIGNATURE = NVRTC_ARCH_ERROR_MARK

_OFF_WORDS = {"", "0", "off", "no", "false", "none"}
_ON_WORDS = {"1", "on", "yes", "true"}

# torch.testing.assert_close's documented default (rtol, atol) per dtype; other dtypes: exact.
_DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "torch.float16": (1e-3, 1e-5),
    "torch.bfloat16": (1.6e-2, 1e-5),
    "torch.float32": (1.3e-6, 1e-5),
    "torch.float64": (1e-7, 1e-7),
    "torch.complex32": (1e-3, 1e-5),
    "torch.complex64": (1.3e-6, 1e-5),
    "torch.complex128": (1e-7, 1e-7),
}


# -- state ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The plugin's options for one pytest run, after validation."""

    mode: str = "off"
    emulate: str | None = None


class _Emulation:
    """The plugin's own :func:`blackwell_compat.emulate` block, switched on per test phase."""

    def __init__(self, arch: str) -> None:
        self.arch = arch
        self._block: AbstractContextManager[str] | None = None

    def start(self) -> None:
        if self._block is None:
            from .emulation import emulate

            block = emulate(self.arch)
            block.__enter__()
            self._block = block

    def stop(self) -> None:
        block, self._block = self._block, None
        if block is not None:
            block.__exit__(None, None, None)


@dataclass
class _State:
    settings: Settings
    emulation: _Emulation | None
    session_report: ApplyReport | None = None
    session_applied: bool = False
    session_note: str = ""
    session_names: list[str] = field(default_factory=list)


_STATE_KEY = pytest.StashKey[_State]()
_MARKER_KEY = pytest.StashKey[ExitStack]()


def _state(config: pytest.Config) -> _State:
    state = config.stash.get(_STATE_KEY, None)
    if state is None:  # configure not run for this config (should not happen); be inert
        state = _State(settings=Settings(), emulation=None)
        config.stash[_STATE_KEY] = state
    return state


# -- options ----------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(
        "blackwell-compat",
        "blackwell-compat (GPUs whose architecture the installed NVRTC does not know)",
    )
    group.addoption(
        "--blackwell-compat",
        dest="blackwell_compat",
        choices=MODES,
        default=None,
        help=(
            "apply blackwell-compat's patches for the session: 'on' always, 'auto' only where "
            "an affected GPU is found (or under --blackwell-emulate), 'off' never "
            "(default: ini blackwell_compat, else off)"
        ),
    )
    group.addoption(
        "--blackwell-emulate",
        dest="blackwell_emulate",
        nargs="?",
        const=DEFAULT_ARCH,
        default=None,
        metavar="ARCH",
        help=(
            "run every test under emulation of an affected GPU: CPU tensors fail in run-time "
            f"compiled (Jiterator) ops as on that GPU (ARCH default {DEFAULT_ARCH}; write "
            "--blackwell-emulate=ARCH, since a bare word after the flag is taken as ARCH; "
            "'off' disables an ini setting)"
        ),
    )
    parser.addini(
        "blackwell_compat",
        help="apply blackwell-compat's patches for the session: auto, on or off (default off)",
        type="string",
        default="off",
    )
    parser.addini(
        "blackwell_emulate",
        help=(
            "run every test under emulation of this GPU architecture (e.g. sm_121; 'on' means "
            f"{DEFAULT_ARCH}; empty or 'off': no emulation)"
        ),
        type="string",
        default="",
    )


def parse_mode(value: object, *, source: str) -> str:
    """Validate a ``blackwell_compat`` mode; raises :class:`ConfigError` on anything else."""
    text = str(value).strip().lower()
    if text not in MODES:
        raise ConfigError(f"{source}: {value!r} is not one of {', '.join(MODES)}")
    return text


def parse_emulate(value: object, *, source: str) -> str | None:
    """Validate an emulation setting: an architecture, ``on`` (the default one) or ``off``."""
    from . import config

    text = str(value).strip()
    lowered = text.lower()
    if lowered in _OFF_WORDS:
        return None
    if lowered in _ON_WORDS:
        return DEFAULT_ARCH
    try:
        return config.parse_arch(text, source=source)
    except ConfigError as exc:
        message = str(exc)
        if os.path.exists(text) or "/" in text or text.endswith(".py"):
            message += (
                f" ({text!r} looks like a test path: --blackwell-emulate takes an optional ARCH, "
                "so write --blackwell-emulate=sm_121 or put the flag after the paths)"
            )
        raise ConfigError(message) from None


def read_settings(config: pytest.Config) -> Settings:
    """Resolve the command line over the ini file; raises :class:`pytest.UsageError`."""
    try:
        option_mode = config.getoption("blackwell_compat")
        if option_mode is not None:
            mode = parse_mode(option_mode, source="--blackwell-compat")
        else:
            raw = config.getini("blackwell_compat")
            mode = parse_mode(raw or "off", source="ini option blackwell_compat")
        option_arch = config.getoption("blackwell_emulate")
        if option_arch is not None:
            arch = parse_emulate(option_arch, source="--blackwell-emulate")
        else:
            raw_arch = config.getini("blackwell_emulate")
            arch = parse_emulate(raw_arch or "", source="ini option blackwell_emulate")
    except ConfigError as exc:
        raise pytest.UsageError(f"blackwell-compat: {exc}") from None
    return Settings(mode=mode, emulate=arch)


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
    emulation = _Emulation(settings.emulate) if settings.emulate else None
    config.stash[_STATE_KEY] = _State(settings=settings, emulation=emulation)


# -- session-wide patches -----------------------------------------------------------------------


def _apply_session(state: _State) -> None:
    """Apply the session's patches as ``--blackwell-compat`` says (idempotent)."""
    settings = state.settings
    if settings.mode == "off":
        return
    affected = False
    if settings.mode == "auto":
        from .probing import probe

        affected = probe().affected
        if not affected and state.emulation is None:
            state.session_note = "auto: no affected GPU here, not applied"
            return
    from . import engine

    try:
        if settings.mode == "on":
            report = engine.apply(force=True)
        elif affected:
            report = engine.apply()
        else:
            # Under --blackwell-emulate, apply as this process would on the emulated GPU: the
            # engine's device gate sees the emulated GPU as affected.
            from .emulation import emulate

            arch = state.emulation.arch if state.emulation is not None else DEFAULT_ARCH
            with emulate(arch):
                report = engine.apply()
    except ConfigError as exc:
        raise pytest.UsageError(f"blackwell-compat: {exc}") from None
    state.session_report = report
    state.session_applied = True
    state.session_names = [entry.name for entry in report.entries]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _apply_session(_state(session.config))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    if state.emulation is not None:
        state.emulation.stop()
    if state.session_applied:
        from . import engine

        engine.revert(state.session_names)
        state.session_applied = False


# -- per-test phases: markers and emulation ---------------------------------------------------


def _marker_selection(marker: pytest.Mark) -> tuple[list[str] | None, dict[str, str]]:
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


def _affected_gpu_skip_reason() -> str | None:
    """``None`` when a real (not emulated) affected GPU is present, else why the test skips."""
    from .probing import probe

    platform = probe()
    if any(gpu.affected and not gpu.emulated for gpu in platform.gpus):
        return None
    real = [gpu for gpu in platform.gpus if not gpu.emulated]
    if real:
        found = ", ".join(f"{gpu.name} ({gpu.arch})" for gpu in real)
        where = f"the GPUs here ({found}) are all supported by the loaded NVRTC"
    else:
        where = "no NVIDIA GPU was found"
    return (
        "requires an affected GPU (one whose architecture the loaded NVRTC lacks, e.g. GB10 "
        f"sm_121 with NVRTC 12.8); {where}"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip ``requires_affected_gpu`` tests (reported at the test, like ``skipif``)."""
    marked = [item for item in items if item.get_closest_marker("requires_affected_gpu")]
    if not marked:
        return
    reason = _affected_gpu_skip_reason()
    if reason is not None:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=reason))


def _enter_marker(item: pytest.Item, state: _State, marker: pytest.Mark) -> None:
    """Apply the marker's patches; they are reverted in the test's teardown phase."""
    __tracebackhide__ = True
    try:
        names, strategies = _marker_selection(marker)
        from . import engine

        stack = ExitStack()
        stack.enter_context(engine.patched(only=names, strategies=strategies, force=True))
    except ConfigError as exc:
        pytest.fail(f"blackwell-compat: {exc}", pytrace=False)
    if state.session_applied and any(name in state.session_names for name in strategies):
        # A session patch now runs the marker's strategy: switch it back after the test.
        stack.callback(_apply_session, state)
    item.stash[_MARKER_KEY] = stack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, None, None]:
    """Emulate from the first test's setup to the last test's teardown.

    One block for the whole loop rather than one per test: entering emulation installs its
    dispatcher kernels and leaving removes them, which costs milliseconds each time.
    """
    emulation = _state(session.config).emulation
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
        _enter_marker(item, _state(item.config), marker)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        yield
    finally:
        stack = item.stash.get(_MARKER_KEY, None)
        if stack is not None:
            del item.stash[_MARKER_KEY]
            stack.close()


def _failure_hint(state: _State) -> str:
    from .emulation import current_arch

    arch = current_arch() or (state.emulation.arch if state.emulation else None)
    if state.session_applied:
        return (
            "blackwell-compat's patches were active, yet this call still reached a run-time "
            "compiled (Jiterator) kernel: its op or call site is not covered. "
            "`python -m blackwell_compat audit -- <script>` lists such call sites; please report "
            "the op and dtype."
        )
    if arch is not None:
        return (
            f"This is the error PyTorch raises on a GPU whose architecture ({arch}, emulated "
            "here) the installed NVRTC does not know. Check that blackwell-compat fixes it: run "
            "with --blackwell-compat=on, or mark the test @pytest.mark.blackwell_compat."
        )
    return (
        "This GPU's architecture is missing from the NVRTC that PyTorch loaded. "
        "`python -m blackwell_compat doctor` says what to install; --blackwell-compat=on (or "
        "blackwell_compat.apply() in your code) works around it."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    if call.excinfo is None or NVRTC_SIGNATURE not in str(call.excinfo.value):
        return
    report = outcome.get_result()
    try:
        hint = _failure_hint(_state(item.config))
    except Exception as exc:  # a hint must never break reporting
        hint = f"(no hint: {type(exc).__name__}: {exc})"
    report.sections.append(("blackwell-compat", hint))


# -- report header ----------------------------------------------------------------------------


def _platform_summary() -> str:
    from .probing import probe

    platform = probe()
    real = [gpu for gpu in platform.gpus if not gpu.emulated]
    if real:
        gpus = ", ".join(
            f"{gpu.index}: {gpu.name} {gpu.arch}{' (affected)' if gpu.affected else ''}"
            for gpu in real
        )
    else:
        gpus = "none"
    version = platform.nvrtc.version
    nvrtc = "NVRTC " + (".".join(str(v) for v in version) if version else "not found")
    affected = any(gpu.affected for gpu in real)
    verdict = "affected" if affected else "not affected"
    return f"GPUs: {gpus}; {nvrtc}; {verdict}"


def _patches_summary(state: _State) -> str:
    settings = state.settings
    if settings.mode == "off":
        return "patches: off"
    if state.session_note:
        return f"patches: {state.session_note}"
    report = state.session_report
    if report is None:
        return f"patches: {settings.mode}"
    parts = []
    if report.applied:
        parts.append("applied " + ", ".join(report.applied))
    if report.pending:
        parts.append("on import " + ", ".join(report.pending))
    if report.failed:
        parts.append("FAILED " + ", ".join(report.failed))
    skipped = len(report.skipped)
    if skipped:
        parts.append(f"{skipped} skipped")
    forced = " (forced)" if report.forced else ""
    return f"patches {settings.mode}{forced}: " + ("; ".join(parts) or "none selected")


def _emulation_summary(state: _State) -> str:
    if state.emulation is not None:
        return f"emulation: {state.emulation.arch} (every test)"
    from .config import emulated_arch_from_env

    try:
        env_arch = emulated_arch_from_env()
    except ConfigError as exc:
        return f"emulation: bad BLACKWELL_COMPAT_EMULATE ({exc})"
    if env_arch is not None:
        return f"emulation: {env_arch} (BLACKWELL_COMPAT_EMULATE, whole process)"
    return "emulation: off"


def header_line(config: pytest.Config) -> str:
    """The one report-header line: GPUs, verdict, active patches, emulation."""
    state = _state(config)
    try:
        platform = _platform_summary()
    except Exception as exc:  # a broken stack must not break the test run
        platform = f"probe failed ({type(exc).__name__}: {exc})"
    return (
        f"blackwell-compat {__version__}: {platform}; {_patches_summary(state)}; "
        f"{_emulation_summary(state)}"
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [header_line(config)]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def blackwell_platform() -> Any:
    """The probe's :class:`~blackwell_compat.Platform` (with the emulated GPU under emulation)."""
    from .probing import probe

    return probe()


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
        from . import engine

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


@pytest.fixture
def blackwell_patched() -> Iterator[PatchedFactory]:
    """Apply blackwell-compat patches for a ``with`` block (see :class:`PatchedFactory`)."""
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
    state = _state(request.config)

    def check(
        fn: Callable[..., Any], *inputs: Any, rtol: float | None = None, atol: float | None = None
    ) -> Any:
        __tracebackhide__ = True
        return _parity(state, fn, inputs, rtol, atol)

    return check


# -- parity -----------------------------------------------------------------------------------


def _map_tensors(obj: Any, convert: Callable[[Any], Any]) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return convert(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # named tuple
        return type(obj)(*(_map_tensors(v, convert) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, convert) for v in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, convert) for k, v in obj.items()}
    return obj


def _copier(device: Any) -> Callable[[Any], Any]:
    def copy(tensor: Any) -> Any:
        moved = tensor.detach().to(device, copy=True)
        return moved.requires_grad_(tensor.requires_grad) if tensor.requires_grad else moved

    return copy


def _to_cpu(tensor: Any) -> Any:
    return tensor.detach().cpu()


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _active_patch_names() -> list[str]:
    from . import engine

    return [s.name for s in engine.status() if s.state in ("applied", "pending-import")]


def _parity(
    state: _State,
    fn: Callable[..., Any],
    inputs: tuple[Any, ...],
    rtol: float | None,
    atol: float | None,
) -> Any:
    __tracebackhide__ = True
    if not callable(fn):
        raise TypeError(f"assert_cpu_parity: fn must be callable, got {fn!r}")
    if (rtol is None) != (atol is None):
        raise ValueError(
            "assert_cpu_parity: give both rtol and atol, or neither (per-dtype defaults)"
        )
    import torch

    from . import emulation

    # 1. The CPU reference: original kernels, emulation suspended (in this thread).
    with emulation.suspended():
        expected = _map_tensors(fn(*_map_tensors(inputs, _copier("cpu"))), _to_cpu)

    # 2. The device under test, with the patches.
    with ExitStack() as stack:
        if torch.cuda.is_available():
            device: Any = torch.device("cuda", torch.cuda.current_device())
            where = f"{device} ({torch.cuda.get_device_name(device)})"
        else:
            device = torch.device("cpu")
            if not emulation.is_active():
                stack.enter_context(emulation.emulate(DEFAULT_ARCH))
            where = f"cpu emulating {emulation.current_arch()}"
        names = _active_patch_names()
        if not names:
            from . import engine

            stack.enter_context(engine.patched(force=True))
            names = _active_patch_names()
        where += f", patches: {', '.join(names) or 'none'}"
        actual = _map_tensors(fn(*_map_tensors(inputs, _copier(device))), _to_cpu)

    # 3. Compare without emulation (comparing complex values takes complex abs).
    with emulation.suspended():
        _compare(actual, expected, rtol, atol, f"{_fn_name(fn)} on {where}")
    return actual


def _flatten(obj: Any, path: str = "") -> list[tuple[str, Any]]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [(path or "result", obj)]
    if isinstance(obj, (list, tuple)):
        return [pair for i, v in enumerate(obj) for pair in _flatten(v, f"{path}[{i}]")]
    if isinstance(obj, dict):
        return [pair for k, v in obj.items() for pair in _flatten(v, f"{path}[{k!r}]")]
    return []


def _compare(
    actual: Any, expected: Any, rtol: float | None, atol: float | None, where: str
) -> None:
    __tracebackhide__ = True
    import torch

    try:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as exc:
        lines = [f"assert_cpu_parity: {where} differs from the CPU reference"]
        expected_parts = dict(_flatten(expected))
        for path, tensor in _flatten(actual):
            ref = expected_parts.get(path)
            if ref is None:
                continue
            detail = worst_element(tensor, ref, rtol, atol)
            if detail:
                lines.append(f"{path}: {detail}")
        lines.append(str(exc))
        raise AssertionError("\n".join(lines)) from None


def _tolerances(dtype: Any, rtol: float | None, atol: float | None) -> tuple[float, float]:
    if rtol is not None and atol is not None:
        return rtol, atol
    return _DEFAULT_TOLERANCES.get(str(dtype), (0.0, 0.0))


def worst_element(
    actual: Any, expected: Any, rtol: float | None = None, atol: float | None = None
) -> str:
    """Describe the element of *actual* farthest outside the tolerance around *expected*.

    Empty when the tensors agree, or when their shapes or dtypes differ (``assert_close``
    reports those).
    """
    import torch

    if actual.shape != expected.shape or actual.dtype != expected.dtype or actual.numel() == 0:
        return ""
    r, a = _tolerances(actual.dtype, rtol, atol)
    wide = torch.complex128 if actual.dtype.is_complex else torch.float64
    act = actual.detach().cpu().to(wide).reshape(-1)
    exp = expected.detach().cpu().to(wide).reshape(-1)
    if wide == torch.complex128:
        diff = torch.hypot((act - exp).real, (act - exp).imag)
        magnitude = torch.hypot(exp.real, exp.imag)
        act_nan, exp_nan = act.real.isnan() | act.imag.isnan(), exp.real.isnan() | exp.imag.isnan()
    else:
        diff = (act - exp).abs()
        magnitude = exp.abs()
        act_nan, exp_nan = act.isnan(), exp.isnan()
    allowed = a + r * magnitude
    excess = diff - allowed
    same = (act == exp) | (act_nan & exp_nan)  # equal infinities give nan differences
    excess = torch.where(same, torch.full_like(excess, -1.0), excess)
    excess = torch.where(act_nan != exp_nan, torch.full_like(excess, float("inf")), excess)
    excess = torch.nan_to_num(excess, nan=float("inf"), posinf=float("inf"))
    bad = excess > 0
    count = int(bad.sum())
    if count == 0:
        return ""
    flat = int(torch.argmax(excess))
    index = _unravel(flat, tuple(actual.shape))
    got = _format_value(actual.reshape(-1)[flat].item())
    want = _format_value(expected.reshape(-1)[flat].item())
    abs_diff = float(diff[flat])
    mag = float(magnitude[flat])
    rel = abs_diff / mag if mag else float("inf")
    return (
        f"{count} of {actual.numel()} elements differ; worst at index {index}: device "
        f"{got}, reference {want}, |difference| {abs_diff:.6g} (relative {rel:.6g}), "
        f"allowed {float(allowed[flat]):.6g} (rtol {r:g}, atol {a:g}, dtype "
        f"{str(actual.dtype).replace('torch.', '')})"
    )


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, float):
        return f"{value:.8g}"
    if isinstance(value, complex):
        return f"({value.real:.8g}{value.imag:+.8g}j)"
    return repr(value)


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return tuple(reversed(index))
