"""How this process was started, as far as the library cares: is it the command line?

A leaf (standard library only): the package import, the start-up hook and the command line all
ask it, and none of them may import the command line to find out.
"""

from __future__ import annotations

import os
import sys

PACKAGE = "blackwell_compat"
CONSOLE_SCRIPT = "blackwell-compat"


def running_the_cli(argv: list[str] | None = None) -> bool:
    """Whether this process is ``python -m blackwell_compat`` or the ``blackwell-compat``
    console script (there, a malformed variable is a usage error reported by the command line:
    one line and exit status 2, not an exception at import or a warning of the start-up hook).

    *argv* defaults to the interpreter's own command line (``sys.orig_argv`` where Python has
    it, which still holds ``-m`` and the module name; else ``sys.argv``).
    """
    words = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
    if "-m" in words[:-1] and words[words.index("-m") + 1] == PACKAGE:
        return True
    return any(os.path.basename(word) == CONSOLE_SCRIPT for word in words[:2])
