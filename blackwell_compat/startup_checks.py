"""What the start-up hook checks in the environment before it arms: standard library only.

The hook (:mod:`blackwell_compat.startup_hook`) runs in every interpreter of an environment that
sets ``BLACKWELL_COMPAT_AUTO``, and defers the activation to the first ``import torch``.  It runs
the activation at once instead when the environment holds something the activation would warn
about, so that the warning comes before the program starts any child process (the warning is
shown once per process tree): a malformed ``BLACKWELL_COMPAT_AUTO``, ``_FORCE`` or ``_VERBOSE``,
a ``BLACKWELL_COMPAT_NVRTC`` that names nothing, a relative path in one of the path variables,
or a ``BLACKWELL_COMPAT_DISABLE``/``_STRATEGY``
selection no process has checked yet (checking the names needs the registry; ``run`` and the
first activation of a process tree mark the selection they checked in :data:`CHECKED`).

These are cheap string checks; :mod:`blackwell_compat.config` parses the same variables strictly
(a test keeps the words in step).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing is not loaded at interpreter start-up
    from collections.abc import Mapping

__all__ = [
    "AUTO",
    "CHECKED",
    "FLAGS",
    "NVRTC",
    "OFF_WORDS",
    "PATHS",
    "SELECTION",
    "TRUE_WORDS",
    "must_check_now",
    "selection",
]

AUTO = "BLACKWELL_COMPAT_AUTO"
FLAGS = (AUTO, "BLACKWELL_COMPAT_FORCE", "BLACKWELL_COMPAT_VERBOSE")
"""The on/off variables of the activation."""
NVRTC = "BLACKWELL_COMPAT_NVRTC"
PATHS = ("BLACKWELL_COMPAT_CACHE_DIR", NVRTC, "BLACKWELL_COMPAT_PTXAS")
"""The variables that name a file or a folder: each must be an absolute path."""
SELECTION = ("BLACKWELL_COMPAT_DISABLE", "BLACKWELL_COMPAT_STRATEGY")
CHECKED = "_BLACKWELL_COMPAT_SELECTION_CHECKED"
"""Set by ``run`` and by :func:`blackwell_compat.autostart.start` to :func:`selection` once the
names in it have been checked: child processes need not check them again at start-up."""
TRUE_WORDS = ("1", "true", "yes", "on")
OFF_WORDS = ("", "0", "false", "no", "off")
"""After ``strip().lower()``: the words an on/off variable is true or false with."""


def selection(env: Mapping[str, str] | None = None) -> str:
    """The patch selection of *env* (``BLACKWELL_COMPAT_DISABLE`` and ``_STRATEGY``) as one
    string, the value :data:`CHECKED` holds once it was checked; empty when neither is set."""
    source = os.environ if env is None else env
    values = [source.get(name, "").strip() for name in SELECTION]
    return "\x1f".join(values) if any(values) else ""


def must_check_now(env: Mapping[str, str] | None = None) -> bool:
    """Whether *env* holds something the activation would warn about (see the module
    docstring): then it runs at start-up, before the program can start a child process."""
    source = os.environ if env is None else env
    for name in FLAGS:
        value = source.get(name, "").strip().lower()
        if value not in TRUE_WORDS and value not in OFF_WORDS:
            return True
    for name in PATHS:
        raw = source.get(name, "").strip()
        if name == NVRTC and raw.lower() in OFF_WORDS:
            continue
        path = os.path.expanduser(raw)
        if raw and not os.path.isabs(path):
            return True  # a relative path is refused (it would name a file per working folder)
        if name == NVRTC and not os.path.exists(path):
            return True
    chosen = selection(source)
    return bool(chosen) and source.get(CHECKED) != chosen
