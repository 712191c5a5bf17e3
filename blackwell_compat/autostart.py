"""Start-up activation: what the installed ``.pth`` hook has run in every interpreter that
imports torch.

The package installs ``zz_blackwell_compat_autostart.pth`` at the top of site-packages (see
``setup.py``).  Python's :mod:`site` runs it while the interpreter starts, before any user code.
It looks at two environment variables itself and imports nothing while both are unset; when
``BLACKWELL_COMPAT_AUTO`` or ``BLACKWELL_COMPAT_EMULATE`` is set it arms
:mod:`blackwell_compat.startup_hook` (importing the package reads ``BLACKWELL_COMPAT_EMULATE``),
which calls :func:`start` when torch is first imported, before torch's own code runs, or at the
first use of the package's API.  A process that never imports torch pays nothing more.

:func:`start` never stops the program: a malformed variable, an unknown name in
``BLACKWELL_COMPAT_DISABLE``, a failing third-party patch or an affected GPU left unserved
becomes one :class:`~blackwell_compat.errors.BlackwellCompatWarning` and the program runs on.
The same warning is shown once per process tree: child interpreters started after it stay
quiet.  Otherwise it is silent, unless ``BLACKWELL_COMPAT_VERBOSE=1`` asks it to say on stderr
which rung serves each GPU (:func:`describe`).

Child processes inherit the variables, so ``subprocess``, ``multiprocessing`` (spawn and
forkserver), ``ProcessPoolExecutor`` and spawned DataLoader workers run the hook too; forked
children inherit the patched state of their parent (Python objects and the dispatcher
registrations alike), or the armed hook if their parent had not imported torch yet.
"""

from __future__ import annotations

import logging
import os
import site
import sys
import threading
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import config, startup_checks
from .errors import BlackwellCompatWarning, ConfigError, logger
from .invocation import running_the_cli

if TYPE_CHECKING:  # pragma: no cover
    from .engine import ApplyReport

HOOK_FILENAME = "zz_blackwell_compat_autostart.pth"
"""Name of the start-up hook file in site-packages (written by ``setup.py``)."""

TRIGGER_VARIABLES = (config.AUTO, config.EMULATE)
"""The variables the hook line itself checks before importing anything."""

OFF_WORDS = startup_checks.OFF_WORDS
"""Values (after ``strip().lower()``) that leave a trigger variable off: the words
:func:`blackwell_compat.config.parse_bool` reads as false; ``setup.py`` writes the same tuple
into the hook line (a test keeps the three in step)."""

_WARNED_VARIABLE = "_BLACKWELL_COMPAT_AUTOSTART_WARNED"
# Checksums of the start-up warnings already shown in this process tree (comma list).

_lock = threading.Lock()
_result: StartupResult | None = None


@dataclass(frozen=True)
class StartupResult:
    """What :func:`start` did in this process."""

    auto: bool
    """Whether ``BLACKWELL_COMPAT_AUTO`` asked for the patches."""
    emulate: str | None
    """The emulated architecture in force (``BLACKWELL_COMPAT_EMULATE``), if any."""
    report: ApplyReport | None
    """The :func:`blackwell_compat.apply` report, when it ran."""
    problems: tuple[str, ...]
    """Everything that went wrong (shown as one warning); empty when all went well."""

    @property
    def ok(self) -> bool:
        return not self.problems


def last_result() -> StartupResult | None:
    """The result of :func:`start` in this process, or ``None`` if it has not run here.

    A forked child reports its parent's result: it inherited the state that result describes.
    """
    return _result


def trigger_set(env: Mapping[str, str] | None = None) -> bool:
    """What the hook line decides: whether it would import the package at all.

    A variable counts as unset when it is empty or one of config's "off" words (``0``,
    ``false``, ``no``, ``off``, any case, surrounding blanks ignored), as in the hook line.
    """
    source = os.environ if env is None else env
    return any(source.get(name, "").strip().lower() not in OFF_WORDS for name in TRIGGER_VARIABLES)


def start() -> StartupResult:
    """Activate what the environment asks for.  Never raises an ``Exception``.

    Applies every patch (minus ``BLACKWELL_COMPAT_DISABLE``) when ``BLACKWELL_COMPAT_AUTO`` is
    true, with ``force`` from ``BLACKWELL_COMPAT_FORCE`` and strategies from
    ``BLACKWELL_COMPAT_STRATEGY``.  Emulation (``BLACKWELL_COMPAT_EMULATE``) is switched on by
    the package import itself; a malformed value stops that import, which the hook reports.
    """
    global _result
    source = os.environ
    _quiet_library_logger()
    problems: list[str] = []
    report: ApplyReport | None = None
    auto = False
    emulate: str | None = None
    try:
        emulate = config.emulated_arch_from_env(source)
    except ConfigError as exc:
        problems.append(f"emulation is off: {exc}")
    try:
        auto = config.parse_bool(config.AUTO, source)
    except ConfigError as exc:
        problems.append(f"no patches were applied: {exc}")
    verbose = False
    try:
        verbose = config.parse_bool(config.VERBOSE, source)
    except ConfigError as exc:
        problems.append(str(exc))
    if auto:
        # The selection is checked now: child processes need not check it at their start-up.
        os.environ[startup_checks.CHECKED] = startup_checks.selection(source)
        report, apply_problems = _apply(source)
        problems.extend(apply_problems)
        problems.extend(_native_problems())
        if report is not None:
            problems.extend(_service_problems(report))
    result = StartupResult(auto=auto, emulate=emulate, report=report, problems=tuple(problems))
    with _lock:
        _result = result
    if verbose:
        _say(result)
    if problems and not _cli_reports_them():
        _warn_once(problems)
    elif report is not None:
        logger.debug("start-up activation: %s", ", ".join(report.applied + report.pending))
    return result


def _service_problems(report: ApplyReport) -> list[str]:
    """An affected GPU no rung serves, or an NVRTC remedy that found a library and could not
    load it: the program would fail on the GPU, so it is said even without VERBOSE."""
    # Imported here as in _apply (a broken install must become a warning); loaded by now.
    from .engine import RUNG_PATCHES, RUNG_UNSERVED
    from .remedies.nvrtc import FAILED

    found = []
    for service in report.gpus:
        if service.rung == RUNG_UNSERVED:
            found.append(f"{service.gpu} is not served: {service.why}")
        elif service.rung == RUNG_PATCHES and service.why.startswith(f"NVRTC remedy {FAILED}:"):
            found.append(f"{service.gpu}: {service.why}; the patches serve it")
    return found


def describe(result: StartupResult) -> list[str]:
    """What the start-up activation did, one line per GPU (``BLACKWELL_COMPAT_VERBOSE=1``)."""
    where = f"blackwell-compat: start-up (pid {os.getpid()})"
    if not result.auto:
        emulating = f"emulating {result.emulate}; " if result.emulate else ""
        return [f"{where}: {emulating}{config.AUTO} is not set: nothing applied"]
    if result.report is None:
        return [f"{where}: nothing applied (see the warning)"]
    lines = [f"{where}: {service}" for service in result.report.gpus]
    if not lines:
        lines.append(f"{where}: no GPU, real or emulated: nothing to serve")
    waiting = result.report.applied + result.report.pending
    if waiting:
        lines.append(f"{where}: patches applied or waiting for their module: {', '.join(waiting)}")
    return lines


def _say(result: StartupResult) -> None:
    """Write :func:`describe` to stderr: the user asked for it with BLACKWELL_COMPAT_VERBOSE."""
    try:
        sys.stderr.write("".join(f"{line}\n" for line in describe(result)))
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stderr must not stop the program
        pass


def _cli_reports_them() -> bool:
    """In ``python -m blackwell_compat ...`` the command line reports a malformed variable
    itself, as a usage error: the hook's warning would say it a second time."""
    return running_the_cli()


def _apply(source: Mapping[str, str]) -> tuple[ApplyReport | None, list[str]]:
    problems: list[str] = []
    try:
        force = config.parse_bool(config.FORCE, source)
    except ConfigError as exc:
        problems.append(f"{exc}; applying without force")
        force = False
    report: ApplyReport | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Imported inside the try: the start-up hook runs in every Python process, where a
            # broken install must become a warning, never an exception at interpreter start.
            from .engine import apply

            report = apply(force=force)
        except ConfigError as exc:
            problems.append(f"no patches were applied: {exc}")
        except Exception as exc:  # a start-up hook must never stop the program
            problems.append(f"no patches were applied: apply() raised {type(exc).__name__}: {exc}")
    ours = [w for w in caught if issubclass(w.category, BlackwellCompatWarning)]
    for w in caught:
        if w not in ours:  # someone else's warning: hand it back to the normal machinery
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if report is not None:
        # A patch the user disabled is no problem of this start, even if it cannot load.
        try:
            disabled = set(config.disabled_names(source))
        except ConfigError:
            disabled = set()
        problems.extend(
            f"patch {name!r}: {why}"
            for name, why in report.failed.items()
            if name not in disabled and "all" not in disabled
        )
    if not problems:
        problems.extend(str(w.message) for w in ours)
    return report, problems


def _native_problems() -> list[str]:
    """NVML/NVRTC that crashed, hung or was killed in its test process: the program runs on
    without them, and says so (the verdicts are stored, so this costs no child process)."""
    try:
        from .probing import probe  # inside the try, as the engine in _apply

        failures = probe().native_failures
    except Exception as exc:  # probe() never raises; a start-up hook must not either
        return [f"the platform probe failed: {type(exc).__name__}: {exc}"]
    return [f"{line}; it was not loaded into this program" for line in failures]


def _quiet_library_logger() -> None:
    """Give the library logger a NullHandler, as a library should.

    Without one, Python's last-resort handler prints every library warning a second time next
    to the :mod:`warnings` message.  Records still propagate to handlers the program installs.
    """
    lib_logger = logging.getLogger("blackwell_compat")
    if not any(isinstance(h, logging.NullHandler) for h in lib_logger.handlers):
        lib_logger.addHandler(logging.NullHandler())


def format_problems(problems: list[str] | tuple[str, ...]) -> str:
    """The text of the single start-up warning."""
    head = "blackwell-compat: start-up activation had a problem; the program runs on"
    if len(problems) == 1:
        return f"{head}: {problems[0]}"
    return head + ":" + "".join(f"\n  - {p}" for p in problems)


def _warn_once(problems: list[str]) -> None:
    """Show the start-up warning, unless an ancestor process already showed the same one."""
    message = format_problems(problems)
    digest = format(zlib.crc32(message.encode("utf-8", "replace")), "08x")
    seen = [d for d in os.environ.get(_WARNED_VARIABLE, "").split(",") if d]
    if digest in seen:
        logger.debug("start-up warning already shown by a parent process: %s", message)
        return
    os.environ[_WARNED_VARIABLE] = ",".join([*seen, digest])
    try:
        warnings.warn_explicit(
            message,
            BlackwellCompatWarning,
            filename="<blackwell-compat start-up>",
            lineno=0,
            module="blackwell_compat.autostart",
        )
    except Warning:
        # ``-W error``: an exception here would only become a traceback from site.py.  Show it.
        warnings.showwarning(
            message, BlackwellCompatWarning, "<blackwell-compat start-up>", 0, file=sys.stderr
        )


# -- where the hook is installed -----------------------------------------------------------


def site_directories() -> list[Path]:
    """The directories whose ``.pth`` files this interpreter runs at start-up."""
    dirs: list[str] = []
    try:
        dirs.extend(site.getsitepackages())
    except AttributeError:  # some embedded/virtualenv-patched ``site`` modules lack it
        pass
    if site.ENABLE_USER_SITE:
        try:
            dirs.append(site.getusersitepackages())
        except AttributeError:
            pass
    result: list[Path] = []
    for d in dirs:
        path = Path(d)
        if path not in result:
            result.append(path)
    return result


def installed_hooks() -> list[Path]:
    """Every installed copy of the start-up hook this interpreter would run."""
    return [d / HOOK_FILENAME for d in site_directories() if (d / HOOK_FILENAME).is_file()]


def hook_installed() -> bool:
    """Whether this interpreter runs the start-up hook (it is in one of its site dirs)."""
    return bool(installed_hooks())
