"""``run [--patches NAMES] [--emulate ARCH] -- command [args]``: patches active in a whole program.

``run`` validates its options, sets ``BLACKWELL_COMPAT_AUTO=1`` (plus the selection, emulation,
force and strategy variables) in the environment, says on stderr which rung of the remedy ladder
will serve each affected GPU (one line each; ``--quiet``: none) and then *replaces itself* with
the command (``os.execvpe``): the command keeps the process id, stdin, stdout and stderr, and
its exit status is the status of ``run``, a death by signal included (no shell-style ``128 + N``
translation is needed because no parent process stands in between).  The installed start-up
hook applies the remedy and the patches in the command, if it is a Python program, and in every
Python process it starts, which inherit the variables, when each first imports torch.

On Windows, where ``exec`` does not replace the process, ``run`` starts the command as a child,
waits for it and exits with its exit code.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from .. import config, startup_checks
from ..errors import ConfigError

EXIT_NOT_EXECUTABLE = 126  # shell conventions for a command that cannot be started
EXIT_NOT_FOUND = 127


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a command with the patches active in it and in every Python process it starts",
        description=(
            "Run COMMAND with blackwell-compat active in it and in every Python process it "
            "starts (subprocess, multiprocessing spawn/forkserver, ProcessPoolExecutor, "
            "DataLoader workers). Sets BLACKWELL_COMPAT_AUTO=1 and the variables for the "
            "options below, then replaces itself with COMMAND: stdin, stdout, stderr, the "
            "process id and the exit status (a death by signal included) are COMMAND's own."
        ),
        epilog=(
            f"Examples: {_program()} run -- python serve.py --port 8000; "
            f"{_program()} run --emulate sm_121 -- pytest tests/. "
            "Exit status: COMMAND's; 2 for a usage error (nothing is run); 126 when COMMAND "
            "cannot be executed, 127 when it is not found."
        ),
    )
    parser.add_argument(
        "--patches",
        metavar="NAMES",
        help="comma-separated patches to apply (default: every patch; see the list command)",
    )
    parser.add_argument(
        "--exclude",
        metavar="NAMES",
        help="comma-separated patches never to apply (added to BLACKWELL_COMPAT_DISABLE)",
    )
    parser.add_argument(
        "--emulate",
        metavar="ARCH",
        help=(
            "make CPU tensors fail as on a GPU of this architecture (e.g. sm_121), in every "
            "process: test a program for the problem on a machine without such a GPU"
        ),
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="apply device-conditioned patches even where no affected GPU is found",
    )
    parser.add_argument(
        "--strategy",
        action="append",
        default=[],
        metavar="PATCH=STRATEGY",
        help="choose a patch's strategy (repeatable), e.g. --strategy torchaudio=cpu",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="do not print which rung serves each affected GPU before the command starts",
    )
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND [ARGS...]",
        help="the command to run, after '--'",
    )


def prepare_environment(env: MutableMapping[str, str]) -> list[str]:
    """Make the library's path variables absolute, once, here: the user typed ``run`` in this
    working directory, so a relative ``BLACKWELL_COMPAT_CACHE_DIR``, ``BLACKWELL_COMPAT_NVRTC``
    or ``BLACKWELL_COMPAT_PTXAS`` means a path relative to it; the command and every process it
    starts get the absolute path (they would refuse a relative one).  The names changed."""
    changed = []
    for name in config.PATH_VARIABLES:
        raw = env.get(name, "").strip()
        if not raw or (name == config.NVRTC and raw.lower() in config.FALSE_WORDS):
            continue
        value = os.path.expanduser(raw)
        if not os.path.isabs(value):
            env[name] = os.path.abspath(value)
            changed.append(name)
    return changed


def _names(raw: str | None, *, source: str) -> list[str]:
    if raw is None:
        return []
    names = list(config.parse_name_list(raw, source=source))
    if not names:
        raise ConfigError(f"{source}: no patch name given")
    return names


def build_environment(
    base: Mapping[str, str],
    *,
    patches: str | None = None,
    exclude: str | None = None,
    emulate: str | None = None,
    force: bool = False,
    strategies: Sequence[str] = (),
) -> dict[str, str]:
    """The environment the command runs in.  Raises ConfigError for any bad input.

    ``--patches`` is expressed through ``BLACKWELL_COMPAT_DISABLE`` (every other known patch is
    disabled), so children, ``status()`` and the doctor all explain it the same way.  Values
    inherited from *base* are validated too: the command never starts with a configuration its
    start-up hook would reject.
    """
    from ..engine import registrations
    from ..registry import Registration

    env = dict(base)
    env[config.AUTO] = "1"
    env.pop("_BLACKWELL_COMPAT_AUTOSTART_WARNED", None)  # a fresh tree warns afresh

    if emulate is not None:
        env[config.EMULATE] = config.parse_arch(emulate, source="--emulate")
    else:
        config.emulated_arch_from_env(env)  # validate what the command would inherit

    if force:
        env[config.FORCE] = "1"
    else:
        config.parse_bool(config.FORCE, env)

    regs: dict[str, Registration] = {}
    for reg in registrations():
        regs.setdefault(reg.name, reg)
    known = list(regs)

    disabled = list(config.disabled_names(env))
    if "all" not in disabled:
        config.check_known(disabled, known, source=config.DISABLE)
    selected = _names(patches, source="--patches")
    if "all" in selected:
        selected = []
    config.check_known(selected, known, source="--patches")
    excluded = _names(exclude, source="--exclude")
    config.check_known(excluded, known, source="--exclude")
    if "all" in disabled:
        new_disabled = ["all"]
    else:
        unselected = [n for n in known if selected and n not in selected]
        new_disabled = sorted(set(disabled) | set(excluded) | set(unselected))
    if new_disabled:
        env[config.DISABLE] = ",".join(new_disabled)

    chosen = config.strategies_from_env(env)
    given: dict[str, str] = {}  # --strategy overrides the inherited value, never itself
    for item in strategies:
        patch, sep, strategy = item.partition("=")
        if not sep or not patch.strip() or not strategy.strip():
            raise ConfigError(f"--strategy {item!r}: use PATCH=STRATEGY, e.g. torchaudio=cpu")
        patch, strategy = patch.strip(), strategy.strip()
        if patch in given:
            raise ConfigError(
                f"--strategy: patch {patch!r} is given twice ({given[patch]!r} and "
                f"{strategy!r}); give each patch one strategy"
            )
        given[patch] = chosen[patch] = strategy
    config.check_known(chosen, known, source="--strategy / " + config.STRATEGY)
    for name, strategy in chosen.items():
        patch_obj = regs[name].patch
        offered = patch_obj.strategies if patch_obj is not None else ()
        if strategy not in offered:
            raise ConfigError(
                f"patch {name!r} has no strategy {strategy!r}; its strategies: "
                f"{', '.join(offered) or 'none'}"
            )
    if chosen:
        env[config.STRATEGY] = ",".join(f"{p}={s}" for p, s in chosen.items())
    # Every name is checked: the command's processes need not check them at their start-up.
    env[startup_checks.CHECKED] = startup_checks.selection(env)
    return env


def service_lines(env: Mapping[str, str]) -> list[str]:
    """One line per affected GPU (the emulated one included): which rung of the remedy ladder
    will serve it in the command, and from where.  Planned here, with the command's
    environment: this process is about to become the command (``exec``), so it takes that
    environment over; nothing is loaded into it (the NVRTC remedy's candidates are tested in
    child processes, as for ``list``)."""
    from .. import state
    from ..engine import RUNG_NOT_AFFECTED, RUNG_NVRTC_REMEDY, RUNG_PATCHES, ladder

    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    os.environ.update(env)
    state.env_arch = config.emulated_arch_from_env(env)  # the probe's emulated GPU, if any
    lines = []
    for service in ladder(planned=True):
        if service.rung == RUNG_NOT_AFFECTED:
            continue
        if service.rung == RUNG_NVRTC_REMEDY:
            served = (
                f"NVRTC remedy, {service.source}: loaded by every Python process of the command "
                "when it imports torch; nothing is patched"
            )
        elif service.rung == RUNG_PATCHES:
            served = f"patches ({', '.join(service.patches)}), because {service.why}"
        else:
            served = f"NOT SERVED: {service.why}"
        lines.append(f"blackwell-compat: run: {service.gpu}: {served}")
    return lines


def _command(args: argparse.Namespace) -> list[str]:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    return command


def _restore_default_signals() -> None:
    """Undo the dispositions Python sets for itself, so the command starts as from a shell.

    Python ignores SIGPIPE (and SIGXFSZ); an ignored signal stays ignored across exec, which
    would make ``run -- sh -c 'yes | head -1'`` behave differently from the plain command.
    """
    for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ"):
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, signal.SIG_DFL)


def exec_command(command: list[str], env: dict[str, str]) -> int:
    """Replace this process with *command*; returns only when it could not be started."""
    sys.stdout.flush()
    sys.stderr.flush()
    _restore_default_signals()
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        print(f"blackwell-compat: run: command not found: {command[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument
        print(f"blackwell-compat: run: cannot execute {command[0]}: {exc}", file=sys.stderr)
        return EXIT_NOT_EXECUTABLE
    raise AssertionError("unreachable: execvpe returned")  # pragma: no cover


def spawn_and_wait(command: list[str], env: dict[str, str]) -> int:
    """Run *command* as a child and return its exit code (Windows; no exec there).

    A POSIX death by signal N comes back as ``128 + N`` (the shell's convention), since a
    parent process cannot die "of" its child's signal without re-raising it.
    """
    try:
        process = subprocess.Popen(command, env=env)
    except FileNotFoundError:
        print(f"blackwell-compat: run: command not found: {command[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (OSError, ValueError) as exc:
        print(f"blackwell-compat: run: cannot execute {command[0]}: {exc}", file=sys.stderr)
        return EXIT_NOT_EXECUTABLE
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:  # the console sent Ctrl-C to the child too: keep waiting
            continue
    return 128 - code if code < 0 else code


def _bad_command_word(word: str) -> str:
    """Why *word* cannot be a command name (empty when it can)."""
    if not word:
        return 'the command name is empty (run -- "")'
    if "\0" in word:
        return f"the command name {word!r} contains a NUL character"
    return ""


def _program() -> str:
    """How the user started us (``blackwell-compat`` or ``python -m blackwell_compat``)."""
    from . import program_name

    return program_name()


def run(args: argparse.Namespace) -> int:
    from ..autostart import HOOK_FILENAME, hook_installed, site_directories

    command = _command(args)
    if not command:
        print(
            f"blackwell-compat: run: no command given; usage: {_program()} run "
            "[options] -- COMMAND [ARGS...]",
            file=sys.stderr,
        )
        return 2
    bad = _bad_command_word(command[0])
    if bad:
        print(
            f"blackwell-compat: run: {bad}; usage: {_program()} run [options] -- COMMAND [ARGS...]",
            file=sys.stderr,
        )
        return 2
    env = build_environment(
        os.environ,
        patches=args.patches,
        exclude=args.exclude,
        emulate=args.emulate,
        force=args.force,
        strategies=args.strategy,
    )
    if not hook_installed():
        where = ", ".join(str(d) for d in site_directories()) or "(no site directory)"
        print(
            f"blackwell-compat: run: the start-up hook {HOOK_FILENAME} is not installed for "
            f"{sys.executable} (looked in {where}), so the command would run unpatched. "
            "Install blackwell-compat with pip (a regular or an editable install) into this "
            "environment and retry.",
            file=sys.stderr,
        )
        return 2
    if not args.quiet:
        for line in service_lines(env):
            print(line, file=sys.stderr)
    if os.name == "nt":
        return spawn_and_wait(command, env)
    return exec_command(command, env)
