"""The plugin's options: command line and ini, validated into :class:`Settings`.

Loaded with the plugin: it imports pytest and :mod:`blackwell_compat.config` only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from .. import config
from ..config import parse_emulated_device
from ..errors import ConfigError

MODES = ("auto", "on", "off")
DEFAULT_ARCH = "sm_121"


@dataclass(frozen=True)
class Settings:
    """The plugin's options for one pytest run, after validation."""

    mode: str = "off"
    emulate: str | None = None
    emulate_device: str = "cpu"


def add_options(parser: pytest.Parser) -> None:
    """``--blackwell-compat``, ``--blackwell-emulate``, ``--blackwell-emulate-device`` and
    their ini twins."""
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
    group.addoption(
        "--blackwell-emulate-device",
        dest="blackwell_emulate_device",
        default=None,
        metavar="DEVICE",
        help=(
            "which device plays the emulated GPU: 'cpu' (CPU tensors fail, the default) or "
            "'cuda' (an emulated CUDA device backed by CPU memory: the tests' GPU code path "
            "runs and only its tensors fail; turns emulation of "
            f"{DEFAULT_ARCH} on unless --blackwell-emulate names another arch or 'off')"
        ),
    )
    parser.addini(
        "blackwell_emulate_device",
        help="the device that plays the emulated GPU: cpu (default) or cuda",
        type="string",
        default="",
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
    text = str(value).strip()
    lowered = text.lower()
    if lowered in config.FALSE_WORDS:
        return None
    if lowered in config.TRUE_WORDS:
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
        option_device = config.getoption("blackwell_emulate_device")
        if option_device is not None:
            device = parse_device(option_device, source="--blackwell-emulate-device")
        else:
            raw_device = config.getini("blackwell_emulate_device") or "cpu"
            device = parse_device(raw_device, source="ini option blackwell_emulate_device")
        written = option_arch if option_arch is not None else config.getini("blackwell_emulate")
        if device == "cuda" and arch is None and not str(written or "").strip():
            arch = DEFAULT_ARCH  # the device alone asks for emulation, of the default arch
    except ConfigError as exc:
        raise pytest.UsageError(f"blackwell-compat: {exc}") from None
    return Settings(mode=mode, emulate=arch, emulate_device=device)


def parse_device(value: object, *, source: str) -> str:
    """Validate an emulated device: ``cpu`` or ``cuda`` (:func:`.config.parse_emulated_device`)."""
    return parse_emulated_device(str(value), source=source)
