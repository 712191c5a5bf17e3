"""Environment variables of blackwell-compat, parsed strictly.

Every variable is read when it is needed (not cached at import), and every malformed value is a
:class:`~blackwell_compat.errors.ConfigError` that names the variable and the accepted forms.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from .errors import ConfigError

DISABLE = "BLACKWELL_COMPAT_DISABLE"
EMULATE = "BLACKWELL_COMPAT_EMULATE"
AUTO = "BLACKWELL_COMPAT_AUTO"
STRATEGY = "BLACKWELL_COMPAT_STRATEGY"
FORCE = "BLACKWELL_COMPAT_FORCE"

ALL_VARIABLES = (DISABLE, EMULATE, AUTO, STRATEGY, FORCE)

_ARCH_RE = re.compile(r"^sm_(\d{2,3})[a-z]?$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def parse_arch(value: str, *, source: str = "arch") -> str:
    """Normalise an architecture name: ``sm_121``, ``121``, ``12.1`` all give ``sm_121``."""
    text = value.strip().lower()
    if re.fullmatch(r"\d+\.\d", text):
        major, minor = text.split(".")
        text = f"sm_{major}{minor}"
    elif text.isdigit():
        text = f"sm_{text}"
    match = _ARCH_RE.match(text)
    if not match:
        raise ConfigError(
            f"{source}: {value!r} is not a GPU architecture; use a form like 'sm_121', '121' "
            "or '12.1'"
        )
    return f"sm_{match.group(1)}"


def arch_to_capability(arch: str) -> tuple[int, int]:
    digits = parse_arch(arch)[3:]
    return int(digits[:-1]), int(digits[-1])


def capability_to_arch(major: int, minor: int) -> str:
    return f"sm_{major}{minor}"


def parse_bool(name: str, env: Mapping[str, str] | None = None) -> bool:
    raw = (os.environ if env is None else env).get(name, "")
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def parse_name_list(raw: str, *, source: str) -> tuple[str, ...]:
    """Parse ``a,b , c`` into names; ``all`` is kept as the single name ``all``."""
    names = tuple(part.strip() for part in raw.split(","))
    names = tuple(n for n in names if n)
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise ConfigError(f"{source}: {name!r} is not a valid patch name")
    return names


def disabled_names(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Names in ``BLACKWELL_COMPAT_DISABLE`` (unvalidated against the registry)."""
    raw = (os.environ if env is None else env).get(DISABLE, "")
    return parse_name_list(raw, source=DISABLE)


def emulated_arch_from_env(env: Mapping[str, str] | None = None) -> str | None:
    raw = (os.environ if env is None else env).get(EMULATE, "").strip()
    if not raw or raw.lower() in _FALSE:
        return None
    return parse_arch(raw, source=EMULATE)


def strategies_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``BLACKWELL_COMPAT_STRATEGY=torchaudio=cpu,kokoro=disable_complex``."""
    raw = (os.environ if env is None else env).get(STRATEGY, "")
    result: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        patch, sep, strategy = item.partition("=")
        if not sep or not patch.strip() or not strategy.strip():
            raise ConfigError(
                f"{STRATEGY}: {item!r} is malformed; use 'patch=strategy[,patch=strategy]'"
            )
        result[patch.strip()] = strategy.strip()
    return result


def check_known(names: Iterable[str], known: Iterable[str], *, source: str) -> None:
    known_sorted = sorted(known)
    unknown = [n for n in names if n not in known_sorted]
    if unknown:
        raise ConfigError(
            f"{source}: unknown patch name(s) {', '.join(map(repr, unknown))}; "
            f"known patches: {', '.join(known_sorted) or '(none)'}"
        )
