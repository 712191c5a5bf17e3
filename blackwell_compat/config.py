"""Environment variables of blackwell-compat, parsed strictly.

These functions read a variable when they are called; the package calls them once, at import,
at start-up or at the explicit call (``apply()``, a command), never per op: emulation keeps the
architecture ``BLACKWELL_COMPAT_EMULATE`` named when it was read.  Every malformed value is a
:class:`~blackwell_compat.errors.ConfigError` that names the variable and the accepted forms.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from .errors import ConfigError

DISABLE = "BLACKWELL_COMPAT_DISABLE"
EMULATE = "BLACKWELL_COMPAT_EMULATE"
#: Which device plays the emulated GPU: ``cpu`` (CPU tensors fail, the default) or ``cuda`` (an
#: emulated CUDA device backed by CPU memory; only its tensors fail).
EMULATE_DEVICE = "BLACKWELL_COMPAT_EMULATE_DEVICE"
AUTO = "BLACKWELL_COMPAT_AUTO"
STRATEGY = "BLACKWELL_COMPAT_STRATEGY"
FORCE = "BLACKWELL_COMPAT_FORCE"
#: ``1``: the start-up activation (``BLACKWELL_COMPAT_AUTO=1``, ``run``) says on stderr what it
#: did, one line per GPU; otherwise it speaks only when something failed.
VERBOSE = "BLACKWELL_COMPAT_VERBOSE"

PROBE_TIMEOUT = "BLACKWELL_COMPAT_PROBE_TIMEOUT"
CACHE_DIR = "BLACKWELL_COMPAT_CACHE_DIR"
NVRTC = "BLACKWELL_COMPAT_NVRTC"
PTXAS = "BLACKWELL_COMPAT_PTXAS"
#: Set in the environment of the library's own test processes (probes, a remedy's checks): they
#: run none of the user's code, so ``audit`` counts them as helpers, not as the program's.
HELPER_MARK = "_BLACKWELL_COMPAT_HELPER"
ALL_VARIABLES = (
    DISABLE,
    EMULATE,
    EMULATE_DEVICE,
    AUTO,
    STRATEGY,
    FORCE,
    VERBOSE,
    PROBE_TIMEOUT,
    CACHE_DIR,
    NVRTC,
    PTXAS,
)
#: The variables that name a file or a folder: each must hold an absolute path.
PATH_VARIABLES = (CACHE_DIR, NVRTC, PTXAS)

_ARCH_RE = re.compile(r"sm_([0-9]{2,3})[af]?", re.ASCII)
_DOTTED_RE = re.compile(r"([0-9]{1,2})\.([0-9])", re.ASCII)
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+", re.ASCII)
#: The words (after ``strip().lower()``) every on/off setting of the library reads as true or
#: false: the variables, the pytest plugin's options, the start-up hook.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
#: Compute capabilities an architecture name may have (sm_30 ... sm_199): older ones no
#: driver of the CUDA 12/13 era runs, larger ones are typing slips (``sm_999``, ``sm_12``).
MIN_MAJOR, MAX_MAJOR = 3, 19
ARCH_FORMS = "'sm_121' (also 'sm_121a'/'sm_121f'), '121' or '12.1'"
#: The devices emulation can play the GPU on (see :func:`parse_emulated_device`).
EMULATED_DEVICES = ("cpu", "cuda")


def parse_arch(value: str, *, source: str = "arch") -> str:
    """Normalise an architecture name: ``sm_121``, ``121``, ``12.1`` all give ``sm_121``.

    Accepted (see docs/api.md): surrounding whitespace and letter case are ignored; the number
    is 2 or 3 ASCII digits whose leading digits (the major capability) lie in 3..19; an ``a``
    or ``f`` suffix (arch-specific / family targets) names the same GPU.  Anything else is a
    :class:`ConfigError` naming *source* and these forms, never a guess.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"{source}: expected a str such as 'sm_121', got {type(value).__name__} {value!r}"
        )
    text = value.strip().lower()
    dotted = _DOTTED_RE.fullmatch(text)
    if dotted:
        text = f"sm_{dotted.group(1)}{dotted.group(2)}"
    elif text.isascii() and text.isdigit():
        text = f"sm_{text}"
    match = _ARCH_RE.fullmatch(text)
    if not match:
        raise ConfigError(
            f"{source}: {value!r} is not a GPU architecture; use a form like {ARCH_FORMS} "
            "(ASCII digits)"
        )
    digits = match.group(1)
    major = int(digits[:-1])
    if not MIN_MAJOR <= major <= MAX_MAJOR:
        raise ConfigError(
            f"{source}: {value!r} names compute capability {major}.{digits[-1]}, which no "
            f"NVIDIA GPU has; use a form like {ARCH_FORMS} with a major capability from "
            f"{MIN_MAJOR} to {MAX_MAJOR}"
        )
    return f"sm_{digits}"


def arch_to_capability(arch: str) -> tuple[int, int]:
    digits = parse_arch(arch)[3:]
    return int(digits[:-1]), int(digits[-1])


def capability_to_arch(major: int, minor: int) -> str:
    return f"sm_{major}{minor}"


def parse_bool(name: str, env: Mapping[str, str] | None = None) -> bool:
    raw = (os.environ if env is None else env).get(name, "")
    text = raw.strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def parse_name_list(raw: str, *, source: str) -> tuple[str, ...]:
    """Parse ``a,b , c`` into names; ``all`` is kept as the single name ``all``."""
    names = tuple(part.strip() for part in raw.split(","))
    names = tuple(n for n in names if n)
    for name in names:
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(
                f"{source}: {name!r} is not a valid patch name (ASCII letters, digits, '_', "
                "'.', '-')"
            )
    return tuple(dict.fromkeys(names))  # a repeated name means the same thing once


def disabled_names(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Names in ``BLACKWELL_COMPAT_DISABLE`` (unvalidated against the registry).

    ``all`` stands alone: ``all,nope`` is refused rather than read as ``all`` (the other name
    would otherwise go unchecked).
    """
    raw = (os.environ if env is None else env).get(DISABLE, "")
    names = parse_name_list(raw, source=DISABLE)
    if "all" in names and len(names) > 1:
        others = ", ".join(repr(n) for n in names if n != "all")
        raise ConfigError(
            f"{DISABLE}={raw!r}: 'all' disables every patch and cannot be combined with names "
            f"({others}); use either 'all' or 'name,name'"
        )
    return names


def emulated_arch_from_env(env: Mapping[str, str] | None = None) -> str | None:
    raw = (os.environ if env is None else env).get(EMULATE, "").strip()
    if not raw or raw.lower() in FALSE_WORDS:
        return None
    return parse_arch(raw, source=EMULATE)


def parse_emulated_device(value: object, *, source: str = "device") -> str:
    """``"cpu"`` or ``"cuda"`` (case and surrounding blanks ignored); anything else is a
    :class:`ConfigError` (a non-``str`` a ``TypeError``) naming the accepted values."""
    if not isinstance(value, str):
        raise TypeError(
            f"{source}: expected a str, one of {', '.join(map(repr, EMULATED_DEVICES))}; "
            f"got {type(value).__name__} {value!r}"
        )
    text = value.strip().lower()
    if text not in EMULATED_DEVICES:
        raise ConfigError(
            f"{source}={value!r}: unknown emulated device; accepted: "
            f"{', '.join(map(repr, EMULATED_DEVICES))} ('cpu': CPU tensors fail as on the GPU; "
            "'cuda': an emulated CUDA device backed by CPU memory, only its tensors fail)"
        )
    return text


def emulated_device_from_env(env: Mapping[str, str] | None = None) -> str:
    """The device ``BLACKWELL_COMPAT_EMULATE_DEVICE`` names (``"cpu"`` when unset or empty)."""
    raw = (os.environ if env is None else env).get(EMULATE_DEVICE, "").strip()
    if not raw:
        return "cpu"
    return parse_emulated_device(raw, source=EMULATE_DEVICE)


def absolute_path(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The value of the path variable *name* (``~`` expanded), ``None`` when unset or empty.

    A relative path is a :class:`ConfigError`: it would name a different file in every working
    directory (``python -m blackwell_compat run`` makes the library's path variables absolute
    once, where the user typed the command).
    """
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return None
    value = os.path.expanduser(raw)
    if not os.path.isabs(value):
        raise ConfigError(
            f"{name}={raw!r} is a relative path, which would name a different file in every "
            f"working directory; give an absolute path (such as {os.path.abspath(value)!r}), "
            "or start the program with `python -m blackwell_compat run`, which makes it "
            "absolute once"
        )
    return value


def nvrtc_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``BLACKWELL_COMPAT_NVRTC``: an NVRTC library file or a folder holding one (the NVRTC
    remedy tries it first), an absolute path; ``None`` when unset, empty or an "off" word
    (``0``, ``false``, ``no``, ``off``: the remedy is off, see :func:`nvrtc_remedy_off`)."""
    source = os.environ if env is None else env
    raw = source.get(NVRTC, "").strip()
    if raw.lower() in FALSE_WORDS:
        return None
    path = absolute_path(NVRTC, source)
    assert path is not None
    if not os.path.exists(path):
        raise ConfigError(
            f"{NVRTC}={raw!r}: no such file or folder; give an NVRTC library (libnvrtc.so.12) "
            "or the folder that holds it and its libnvrtc-builtins library"
        )
    if not (os.path.isfile(path) or os.path.isdir(path)):
        raise ConfigError(f"{NVRTC}={raw!r} is neither a file nor a folder")
    return path


def nvrtc_remedy_off(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``BLACKWELL_COMPAT_NVRTC`` turns the NVRTC remedy off (``0``/``false``/``no``/
    ``off``): torch keeps its own NVRTC and the patches serve."""
    raw = (os.environ if env is None else env).get(NVRTC, "").strip().lower()
    return bool(raw) and raw in FALSE_WORDS


def strategies_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``BLACKWELL_COMPAT_STRATEGY=torchaudio=cpu,kokoro=disable_complex``."""
    raw = (os.environ if env is None else env).get(STRATEGY, "")
    result: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        patch, sep, strategy = item.partition("=")
        patch, strategy = patch.strip(), strategy.strip()
        if not sep or not _NAME_RE.fullmatch(patch) or not _NAME_RE.fullmatch(strategy):
            raise ConfigError(
                f"{STRATEGY}: {item!r} is malformed; use 'patch=strategy[,patch=strategy]'"
            )
        if patch in result:
            raise ConfigError(
                f"{STRATEGY}: patch {patch!r} is given twice ({result[patch]!r} and "
                f"{strategy!r}); give each patch one strategy"
            )
        result[patch] = strategy
    return result


def check_known(names: Iterable[str], known: Iterable[str], *, source: str) -> None:
    known_sorted = sorted(known)
    unknown = [n for n in names if n not in known_sorted]
    if unknown:
        raise ConfigError(
            f"{source}: unknown patch name(s) {', '.join(map(repr, unknown))}; "
            f"known patches: {', '.join(known_sorted) or '(none)'}"
        )


def environment_problems(
    patches: Mapping[str, Iterable[str]], env: Mapping[str, str] | None = None
) -> list[str]:
    """Every malformed library variable in *env*, one message each (empty when all is well).

    *patches* maps each known patch name to its strategies.  The command line refuses to run
    with any of these (exit status 2), whatever the command: one rule for all of them.
    """
    source = os.environ if env is None else env
    problems: list[str] = []
    known = sorted(patches)
    try:
        emulated_arch_from_env(source)
    except (ConfigError, TypeError) as exc:
        problems.append(str(exc))
    try:
        emulated_device_from_env(source)
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        disabled = disabled_names(source)
        if "all" not in disabled:
            check_known(disabled, known, source=DISABLE)
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        wanted = strategies_from_env(source)
        check_known(wanted, known, source=STRATEGY)
        for name, strategy in wanted.items():
            offered = tuple(patches[name])
            if strategy not in offered:
                raise ConfigError(
                    f"{STRATEGY}: patch {name!r} has no strategy {strategy!r}; its strategies: "
                    f"{', '.join(offered) or 'none'}"
                )
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        nvrtc_from_env(source)
    except ConfigError as exc:
        problems.append(str(exc))
    for name in (CACHE_DIR, PTXAS):
        try:
            absolute_path(name, source)
        except ConfigError as exc:
            problems.append(str(exc))
    for name in (AUTO, FORCE, VERBOSE):
        try:
            parse_bool(name, source)
        except ConfigError as exc:
            problems.append(str(exc))
    raw = source.get(PROBE_TIMEOUT, "").strip()
    if raw:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = 0.0
        if not 0 < seconds < 1e6:
            # The library itself warns and uses 20 s (the probe never raises).
            problems.append(
                f"{PROBE_TIMEOUT}={raw!r}: expected a positive number of seconds such as '20'"
            )
    return problems
