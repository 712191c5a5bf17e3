"""Build step of blackwell-compat: ship the start-up hook ``zz_blackwell_compat_autostart.pth``.

All metadata lives in ``pyproject.toml``.  This file only adds one file to the top level of
site-packages, in both kinds of installation, so that the installer records it and removes it
on uninstall:

- regular wheels: ``build_py`` writes the hook next to the package in ``build_lib``; the wheel
  carries it at its root and pip lists it in ``RECORD``;
- editable installs (PEP 660): setuptools does not copy ``build_lib`` into an editable wheel,
  so ``editable_wheel`` adds the hook to the wheel it writes, through the same ``writestr``
  setuptools uses for its own ``__editable__`` files.

The hook imports ``blackwell_compat`` only when ``BLACKWELL_COMPAT_AUTO`` or
``BLACKWELL_COMPAT_EMULATE`` is set, and then only arms the start-up activation for the first
``import torch`` (``blackwell_compat.startup_hook``; see ``docs/zero-code.md``).  Its name
starts with ``zz_`` because ``site`` runs ``.pth`` files in name order: every other ``.pth``
(editable installs of third-party patch packages, namespace packages) has put its paths in
place before it runs.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py

HOOK_NAME = "zz_blackwell_compat_autostart.pth"

# The code the hook runs when one of the variables is set.  Importing the package can raise
# (a malformed BLACKWELL_COMPAT_EMULATE): that becomes one line on stderr, never a traceback
# from site.py, and the program starts anyway.  ``site`` may run a .pth file twice in one
# process (Python 3.11 venvs process their site-packages twice), hence the marker on ``sys``.
# Ctrl-C while it runs (a test process of the probe may be running) ends the program as Ctrl-C
# ends any Python program, quietly and by SIGINT (status 130 in a shell), instead of Python's
# "Fatal Python error: init_import_site" and a traceback from site.py.
_HOOK_BODY = """\
if not getattr(sys, "_blackwell_compat_hook_ran", False):
    sys._blackwell_compat_hook_ran = True
    try:
        try:
            from blackwell_compat import startup_hook
        except Exception as exc:
            sys.stderr.write(
                "blackwell-compat: warning: start-up hook: nothing was activated, importing "
                "blackwell_compat failed: %s: %s\\n" % (type(exc).__name__, exc)
            )
        else:
            startup_hook.arm()
    except KeyboardInterrupt:
        import signal
        if hasattr(signal, "SIGINT") and hasattr(os, "kill") and os.name == "posix":
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(130)
"""

# The values that mean "off", exactly as blackwell_compat.config reads them (its _FALSE set):
# compared after strip() and lower(), so "false", "Off", " 0" cost no import at all.
OFF_WORDS = ("", "0", "false", "no", "off")


def _off(variable: str) -> str:
    return f'os.environ.get("{variable}", "").strip().lower() in {OFF_WORDS!r}'


HOOK_TEXT = (
    "# blackwell-compat start-up hook, installed and removed with the blackwell-compat package.\n"
    "# BLACKWELL_COMPAT_AUTO / BLACKWELL_COMPAT_EMULATE unset or off (0/false/no/off): two\n"
    "# dictionary lookups, no import.  Set: activate blackwell-compat when torch is first\n"
    "# imported, before torch's own code runs (see docs/zero-code.md).\n"
    "import os, sys; exec("
    + repr(_HOOK_BODY)
    + f") if not ({_off('BLACKWELL_COMPAT_AUTO')} and {_off('BLACKWELL_COMPAT_EMULATE')})"
    + " else None\n"
)


class build_py_with_hook(build_py):
    """``build_py`` that also writes the hook to the top of ``build_lib`` (regular builds)."""

    def _hook_path(self) -> str:
        return os.path.join(self.build_lib, HOOK_NAME)

    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):
            os.makedirs(self.build_lib, exist_ok=True)
            with open(self._hook_path(), "w", encoding="ascii", newline="\n") as handle:
                handle.write(HOOK_TEXT)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs.append(self._hook_path())
        return outputs


class _StrategyWithHook:
    """Wraps setuptools' editable strategy: same wheel content plus the hook file."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __enter__(self) -> _StrategyWithHook:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._inner.__exit__(*exc_info)

    def __call__(self, wheel: Any, files: Any, mapping: Any) -> None:
        self._inner(wheel, files, mapping)
        wheel.writestr(HOOK_NAME, HOOK_TEXT.encode("ascii"))


cmdclass: dict[str, Any] = {"build_py": build_py_with_hook}

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools < 64 has no PEP 660 support at all
    editable_wheel = None

if editable_wheel is not None and hasattr(editable_wheel, "_select_strategy"):

    class editable_wheel_with_hook(editable_wheel):
        def _select_strategy(self, *args: Any, **kwargs: Any) -> Any:
            return _StrategyWithHook(super()._select_strategy(*args, **kwargs))

    cmdclass["editable_wheel"] = editable_wheel_with_hook
elif editable_wheel is not None:
    warnings.warn(
        "blackwell-compat: this setuptools builds editable wheels differently; an editable "
        f"install will not contain the start-up hook {HOOK_NAME} (regular installs do)",
        stacklevel=1,
    )


if __name__ == "__main__":
    setup(cmdclass=cmdclass)
