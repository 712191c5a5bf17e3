"""Command-line interface: ``python -m blackwell_compat <command>`` (or ``blackwell-compat``).

Each sub-command lives in its own module ``blackwell_compat.cli.<name>_cmd`` exposing
``add_parser(subparsers)`` and ``run(args) -> int``.

Exit status (all commands): 0 success, 1 the command found a problem (see each command),
2 usage error (unknown command or option, malformed environment variable: the same for every
command, checked before the command runs).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from .. import __version__, config
from ..errors import ConfigError

COMMANDS = ("doctor", "list", "audit", "run", "fetch")

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


def _command_modules() -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"{__name__}.{name}_cmd") for name in COMMANDS}


def program_name() -> str:
    """How the user started us, for ``usage:`` lines: the console script or ``python -m``."""
    started_as = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if started_as.startswith("blackwell-compat"):  # also blackwell-compat.exe on Windows
        return "blackwell-compat"
    return "python -m blackwell_compat"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description=(
            "Diagnose and fix PyTorch on NVIDIA GPUs whose architecture the installed NVRTC "
            "does not know (GB10 sm_121, RTX 50xx sm_120, B300 sm_103)."
        ),
        epilog="Exit status: 0 success, 1 a problem was found, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"blackwell-compat {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    modules = _command_modules()
    for module in modules.values():
        module.add_parser(subparsers)
    return parser, modules


def environment_problems() -> list[str]:
    """Malformed library variables, each reported once.

    The package import's own finding (a malformed ``BLACKWELL_COMPAT_EMULATE``, which it
    leaves for the command line to report when :func:`~blackwell_compat.invocation.
    running_the_cli`) is among them: the same variable, judged by the same function.
    """
    # Imported here, not with the parser: see list_cmd.rows (`--version` stays fast).
    from ..engine import known_strategies

    return list(dict.fromkeys(config.environment_problems(known_strategies())))


def _stdout_gone() -> None:
    """The reader of stdout left (``list --json | head``): write the rest nowhere, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout is not a real file
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, check the environment, run one command.

    One rule for every command: an unknown option or a malformed ``BLACKWELL_COMPAT_*``
    variable is a usage error, reported once per problem on stderr, exit status 2, and nothing
    runs.  A reader that closes stdout early ends the output quietly, never in a traceback.
    """
    parser, modules = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    prepare = getattr(modules.get(args.subcommand), "prepare_environment", None)
    if prepare is not None:
        prepare(os.environ)  # `run`: paths the user gave relative to where the command was typed
    problems = environment_problems()
    if problems:
        for problem in problems:
            print(f"blackwell-compat: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.subcommand is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code = int(modules[args.subcommand].run(args))
        sys.stdout.flush()
        return code
    except ConfigError as exc:
        print(f"blackwell-compat: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return 130
