"""The project's warning category, error types and library logger."""

from __future__ import annotations

import logging

logger = logging.getLogger("blackwell_compat")
# A library never configures logging; without a handler of the application's, records go
# nowhere (warnings that matter are also issued through ``warnings``).
logger.addHandler(logging.NullHandler())


class BlackwellCompatWarning(UserWarning):
    """Warnings issued by blackwell-compat (drift, refused patches, failing third-party patches)."""


class BlackwellCompatError(Exception):
    """Base class of the errors this library raises on purpose."""


class ConfigError(BlackwellCompatError, ValueError):
    """A malformed environment variable, an unknown patch or strategy name."""


class DriftError(BlackwellCompatError):
    """A patch target no longer looks like what the patch was written for."""


#: The part of NVRTC's log that says it does not know the requested architecture: what an
#: affected GPU's Jiterator error contains, and what the doctor and the plugin look for.
NVRTC_ARCH_ERROR_MARK = "invalid value for --gpu-architecture"
#: The whole line NVRTC writes for that failure.
NVRTC_ARCH_ERROR_LINE = f"nvrtc: error: {NVRTC_ARCH_ERROR_MARK} (-arch)"
