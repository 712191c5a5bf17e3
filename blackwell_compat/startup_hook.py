"""What the installed start-up hook runs: arm the start-up activation for ``import torch``.

The hook (``zz_blackwell_compat_autostart.pth``, written by ``setup.py``) calls :func:`arm` in
every interpreter whose environment sets ``BLACKWELL_COMPAT_AUTO`` or ``BLACKWELL_COMPAT_EMULATE``.
Arming costs a few dictionary lookups and a finder on ``sys.meta_path``
(:mod:`.import_trigger`): a process that never imports torch pays nothing more.  When torch is
first imported, before torch's own code runs (before it preloads its NVRTC), the activation
runs: :func:`blackwell_compat.autostart.start`, which applies the remedy and the patches.  The
package's API runs it too, at its first use (``bc.status()``, ``bc.apply()``...).  Where the
environment holds something the activation would warn about, it runs at once
(:func:`~blackwell_compat.startup_checks.must_check_now`).
"""

from __future__ import annotations

import sys

from . import import_trigger, startup_checks

__all__ = ["TRIGGER_MODULE", "arm"]

TRIGGER_MODULE = "torch"
"""The import that runs the start-up activation."""


def arm() -> None:
    """Have the start-up activation run at the first ``import torch`` (at once if torch is
    imported already, or if :func:`~blackwell_compat.startup_checks.must_check_now`).  Never
    raises."""
    if startup_checks.must_check_now():
        try:
            _activate()
        except Exception as exc:  # start() never raises; only a broken install gets here
            sys.stderr.write(f"blackwell-compat: warning: start-up hook: {exc!r}\n")
        return
    try:
        import_trigger.before_import(TRIGGER_MODULE, _activate)
    except Exception:  # cannot wait for torch: activate now, as before the trigger existed
        _activate()


def _activate() -> None:
    # Imported here: the engine, the probe and the patches cost 100 ms and more, which only a
    # process that imports torch (or uses the API) pays.
    from .autostart import start

    start()
