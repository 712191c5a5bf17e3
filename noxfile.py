"""Test environments for blackwell-compat.

``nox`` (or ``bash scripts/test.sh``, which installs nox first) runs the default sessions:

* ``lint``: ``ruff check`` and ``ruff format --check`` on the whole repository, and the
  documentation site (``mkdocs build --strict``: a warning, a broken link or a missing API
  reference fails the session; the site goes to ``.nox/_site``).
* ``typecheck``: ``mypy --strict`` on the package, next to torch 2.11 like a developer's setup.
* ``tests-oldest-torch``: torch 2.6.0 (lowest supported) with torchaudio 2.6.0 and no other
  target library, ``-m "not targets or torchaudio"`` (the ``torchaudio`` marker: a test that needs
  torchaudio and no other target, e.g. the doctor on the oldest stack).
* ``tests-newest-torch``: the newest torch on the registry, no torchaudio, ``-m "not targets"``.
* ``tests-full``: the full target stack of ``requirements/full*.txt`` (torch/torchaudio 2.11 CUDA 13
  builds, kokoro, chatterbox-tts, s3tokenizer, pyannote.audio, openai-whisper); the whole suite,
  slow tests included, and no test may be skipped (GPU tests are deselected when there is no
  CUDA device).  It includes coqui-tts 0.28 (``requirements/coqui028.txt``, additions only).
* ``tests-tts022``: Coqui TTS 0.22 (``requirements/tts022.txt``), ``-m tts022``: it cannot share
  tests-full's environment (transformers pins, the ``TTS`` package of coqui-tts).
* ``tests-packaging``: ``-m packaging``: builds the sdist and the wheel with ``python -m build``,
  installs the wheel into a fresh venv, runs ``twine check`` (``requirements/packaging.txt``; no
  torch).

Every test session installs the project (editable); the torch sessions also install the
``examples/third_party_patch`` package and fetch real NVRTC wheels into ``.nox/_nvrtc``
(``BLACKWELL_COMPAT_TEST_NVRTC_DIR``).  pytest prints the slowest tests (``--durations``).

Every install is pinned (``requirements/``), so a session built from scratch is the same
environment each time.  Virtualenvs are reused when they exist (``nox.options.reuse_venv``):
``nox -R`` also skips the installs, ``nox --reuse-venv=no`` rebuilds from scratch.  Arguments
after ``--`` go to pytest (``nox -s tests-full -- -k fbank -x``).  Tests run in two pytest-xdist
workers; ``BLACKWELL_COMPAT_TEST_WORKERS=0`` runs them in one process.

Each test session writes a JUnit report to ``.nox/_reports/<session>.xml``;
``scripts/junit_summary.py`` adds them up after a run.
"""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nox
import tomllib

ROOT = Path(__file__).resolve().parent
REQ = ROOT / "requirements"
NOX_DIR = ROOT / ".nox"
REPORTS = NOX_DIR / "_reports"
NVRTC_DIR = NOX_DIR / "_nvrtc"
FETCH_NVRTC = ROOT / "tests" / "support" / "fetch_nvrtc.py"
THIRD_PARTY_EXAMPLE = ROOT / "examples" / "third_party_patch"

PYTHON = "3.11"
TEST_SESSIONS = (
    "tests-oldest-torch",
    "tests-newest-torch",
    "tests-full",
    "tests-tts022",
    "tests-packaging",
)

nox.options.sessions = ["lint", "typecheck", *TEST_SESSIONS]
nox.options.reuse_venv = "yes"
# uv builds the environments (about ten times faster than pip for the torch stacks; it reads no
# pip configuration, so a local find-links folder cannot slip a different torch in); nox falls
# back to virtualenv + pip when uv is missing.  The pins are the same either way.
nox.options.default_venv_backend = "uv|virtualenv"
# uv must use the machine's Python 3.11, never download an interpreter.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

# Target libraries beyond torch: absent from the torch-range sessions, present in tests-full.
TARGET_MODULES = (
    "torchaudio",
    "kokoro",
    "kokoro.model",
    "chatterbox.models.s3tokenizer",
    "chatterbox.models.s3gen.xvector",
    "s3tokenizer",
    "pyannote.audio",
    "whisper",
    "ray",  # not a target: the scale-out tests' local cluster (tests/test_autostart_scaleout.py)
)
FULL_TORCH = "2.11.0"

# Markers of tests that need an environment of their own (a stack that cannot share tests-full's,
# e.g. Coqui TTS 0.22): every session here deselects them, their own session selects them.
OWN_ENVIRONMENT_MARKERS = ("tts022", "coqui028", "packaging")

# No network for models at test time, no telemetry: fail fast instead of waiting on DNS.
TEST_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "PYANNOTE_METRICS_ENABLED": "false",
    "PYTHONFAULTHANDLER": "1",
}


def _req(name: str) -> str:
    return str(REQ / name)


def _pinned(name: str, package: str) -> str:
    """The exact version ``package`` is pinned to in ``requirements/<name>``."""
    pattern = re.compile(rf"^{re.escape(package)}==([^\s;#]+)", re.IGNORECASE | re.MULTILINE)
    found = pattern.search((REQ / name).read_text(encoding="utf-8"))
    if found is None:
        raise RuntimeError(f"requirements/{name} pins no {package}")
    return found.group(1)


def _python_check(session: nox.Session, code: str) -> None:
    session.run("python", "-c", code, env=TEST_ENV, silent=False)


def _check_torch(session: nox.Session, version: str) -> None:
    """Fail early when pip put a different torch (e.g. the local CPU-only wheel) in place."""
    _python_check(
        session,
        "import torch, sys\n"
        f"want = {version!r}\n"
        "got = torch.__version__.split('+')[0]\n"
        "print('torch', torch.__version__, 'CUDA available:', torch.cuda.is_available())\n"
        "sys.exit(0 if got == want else f'torch {torch.__version__} installed, {want} expected')",
    )


# Warnings the target libraries give at import on these machines, understood and harmless here:
# (module the warning comes from, start of its message) -> why.
KNOWN_IMPORT_WARNINGS = {
    ("pyannote", "torchcodec is not installed correctly"): (
        "no FFmpeg on this machine: torchcodec cannot decode audio files; pyannote works on "
        "in-memory waveforms, which is all the tests use"
    ),
    ("perth", "pkg_resources is deprecated as an API"): (
        "resemble-perth 1.0.1 (its newest release) imports pkg_resources"
    ),
}


def _check_targets(session: nox.Session, *, present: bool, torchaudio: str | None = None) -> None:
    """The target libraries import (full stack) or are all absent (torch-range sessions).

    *torchaudio*: a torch-range session that also holds torchaudio (tests-oldest-torch): that
    exact version must import, every other target library must be absent.

    Warnings raised by the imports come out as one line each (torchcodec's has 70 lines of
    tracebacks); a known one says why it is harmless, an unknown one is shown as a warning.
    """
    if present:
        code = (
            "import importlib, warnings\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            f"    for name in {TARGET_MODULES!r}:\n"
            "        importlib.import_module(name)\n"
            f"known = {KNOWN_IMPORT_WARNINGS!r}\n"
            "seen = set()\n"
            "for w in caught:\n"
            "    text = str(w.message).strip()\n"
            "    first = text.splitlines()[0] if text else ''\n"
            "    where = w.filename.replace('\\\\', '/').split('site-packages/')[-1]\n"
            "    why = next((f'{s}... ({v})' for (m, s), v in known.items()\n"
            "                if where.startswith(m + '/') and text.startswith(s)), None)\n"
            "    line = (f'known warning from {where}: {why}' if why else\n"
            "            f'WARNING from {where}:{w.lineno}: {w.category.__name__}: {first}')\n"
            "    if line not in seen:\n"
            "        seen.add(line)\n"
            "        print(line)\n"
            "print('target libraries import fine')"
        )
    else:
        absent = tuple(n for n in TARGET_MODULES if torchaudio is None or n != "torchaudio")
        code = (
            "import importlib.util, sys\n"
            f"found = [n for n in {absent!r}"
            " if importlib.util.find_spec(n.split('.')[0]) is not None]\n"
            "sys.exit(f'target libraries present in a torch-only session: {found}' if found "
            "else 0)\n"
        )
        if torchaudio is not None:
            code += (
                "import torchaudio\n"
                f"want = {torchaudio!r}\n"
                "got = torchaudio.__version__.split('+')[0]\n"
                "print('torchaudio', torchaudio.__version__)\n"
                "sys.exit(0 if got == want else f'torchaudio {got} installed, {want} expected')"
            )
    _python_check(session, code)


def _cuda_available(session: nox.Session) -> bool:
    out = session.run(
        "python",
        "-c",
        "import importlib.util\n"
        "if importlib.util.find_spec('torch') is None:\n"
        "    print(0)\n"
        "else:\n"
        "    import torch; print(int(torch.cuda.is_available()))",
        silent=True,
        env=TEST_ENV,
    )
    return isinstance(out, str) and out.strip().endswith("1")


def _install_project(session: nox.Session) -> None:
    """The project (editable) and the third-party patch example the registry tests load."""
    # Dependencies (packaging, wrapt) come pinned from requirements/test.txt.
    session.install("--no-deps", "-e", str(ROOT))
    if THIRD_PARTY_EXAMPLE.is_dir():
        # Its only dependency is blackwell-compat, installed just above; it needs no torch.
        session.install("--no-deps", str(THIRD_PARTY_EXAMPLE))


def _log_install(session: nox.Session, started: float) -> None:
    """How long the installs took and how big the environment is (for CI time planning)."""
    location = getattr(session.virtualenv, "location", None)
    size = 0
    if location:
        for folder, _dirs, files in os.walk(location):
            for name in files:
                try:
                    size += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    pass
    session.log(
        f"environment ready in {time.monotonic() - started:.0f} s, {size / 2**30:.2f} GiB on disk"
    )


def _fetch_nvrtc(session: nox.Session) -> dict[str, str]:
    """Real NVRTC libraries for the probe tests, shared by every test session."""
    env = {"BLACKWELL_COMPAT_TEST_NVRTC_DIR": str(NVRTC_DIR)}
    if not FETCH_NVRTC.is_file():
        session.warn(f"{FETCH_NVRTC.relative_to(ROOT)} not found: NVRTC wheels not fetched")
        return env
    NVRTC_DIR.mkdir(parents=True, exist_ok=True)
    session.run("python", str(FETCH_NVRTC), str(NVRTC_DIR))
    return env


def _junit_path(session: nox.Session) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"{session.name}.xml"
    path.unlink(missing_ok=True)
    return path


def _skipped_tests(junit: Path) -> list[tuple[str, str, str]]:
    """(test id, skip type, message) for every skipped or xfailed test in a JUnit report."""
    found: list[tuple[str, str, str]] = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if skipped is None:
            continue
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        found.append((test_id, skipped.get("type", ""), skipped.get("message", "")))
    return found


_TARGET_IMPORT_SKIP = re.compile(
    r"could not import '(torchaudio|kokoro|misaki|chatterbox|s3tokenizer|pyannote|whisper)"
)


def _check_skips(session: nox.Session, junit: Path, *, strict: bool) -> None:
    """Refuse skips the project does not allow.

    ``strict`` (tests-full): any skip fails the session (GPU tests are deselected instead when
    there is no CUDA device; expected failures are listed, not refused).  Otherwise a test that
    skipped because a target library is missing fails the session: it needs the ``targets``
    marker; other skips are listed.
    """
    if not junit.is_file():
        session.error(f"pytest wrote no report at {junit}")
    refused: list[str] = []
    for test_id, kind, message in _skipped_tests(junit):
        line = f"{test_id}: {message}"
        if kind == "pytest.xfail":
            session.log(f"expected failure: {line}")
        elif strict or _TARGET_IMPORT_SKIP.search(message):
            refused.append(line)
        else:
            session.warn(f"skipped: {line}")
    if refused:
        why = (
            "no test may be skipped in tests-full"
            if strict
            else "tests that need a target library must carry the `targets` marker"
        )
        session.error(f"{len(refused)} skipped test(s) ({why}):\n  " + "\n  ".join(refused))


def _registered_markers() -> set[str]:
    """Marker names registered in pyproject.toml (pytest refuses unknown names in ``-m``)."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        config = tomllib.load(handle)
    lines = config.get("tool", {}).get("pytest", {}).get("ini_options", {}).get("markers", [])
    return {str(line).split(":", 1)[0].split("(", 1)[0].strip() for line in lines}


def _xdist_args(session: nox.Session) -> list[str]:
    """pytest-xdist workers: ``BLACKWELL_COMPAT_TEST_WORKERS`` (default 2, 0 = one process).

    Much of the suite waits on child interpreters (CLI, start-up hook, pytester runs), so two
    workers cut a session's time by about 40 % on a 2-core machine (measured: 498 s -> 300 s for
    tests-oldest-torch).  An ``-n``/``--numprocesses`` given after ``--`` wins.
    """
    if any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in session.posargs):
        return []
    raw = os.environ.get("BLACKWELL_COMPAT_TEST_WORKERS", "2").strip()
    if not raw.isdigit():
        session.error(f"BLACKWELL_COMPAT_TEST_WORKERS={raw!r}: expected a whole number")
    return [] if int(raw) == 0 else ["-n", raw]


def _pytest(
    session: nox.Session,
    *,
    marker: str | None,
    strict_skips: bool,
    env: dict[str, str],
    paths: tuple[str, ...] = (),
) -> None:
    junit = _junit_path(session)
    registered = _registered_markers()
    markers = [m for m in (marker, None if _cuda_available(session) else "not gpu") if m]
    markers += [f"not {m}" for m in OWN_ENVIRONMENT_MARKERS if m in registered and m != marker]
    args = ["python", "-m", "pytest", f"--junitxml={junit}", "-o", "junit_family=xunit2"]
    # The slowest tests, to see where the time goes (an argument after `--` wins).
    if not any(a.startswith("--durations") for a in session.posargs):
        args += ["--durations=15", "--durations-min=2"]
    if markers:
        args += ["-m", " and ".join(f"({m})" for m in markers)]
    args += _xdist_args(session)
    # pytest's exit status 5 ("no tests ran") is not a success code: a session whose selection
    # ran nothing is broken.
    session.run(*args, *paths, *session.posargs, env={**TEST_ENV, **env})
    if session._runner.global_config.install_only:
        return  # `--install-only`: nox skipped pytest, so there is no report to check
    _check_skips(session, junit, strict=strict_skips)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    started = time.monotonic()
    session.install("-r", _req("lint.txt"))
    _log_install(session, started)
    session.run("ruff", "check", str(ROOT))
    session.run("ruff", "format", "--check", str(ROOT))
    # The architecture: layers in one direction, nothing imports the CLI, the ops layer never
    # imports the emulation, the runtime never imports the tools ([tool.importlinter] in
    # pyproject.toml).  It reads the sources from the working directory; nothing is imported.
    session.chdir(ROOT)
    session.run("lint-imports", env={"PYTHONPATH": str(ROOT)})
    # The documentation site: strict, so a broken link, a missing page in the nav or a reference
    # to an API name that does not exist fails here.  It reads the sources, never imports them.
    # (NO_MKDOCS_2_WARNING: the Material theme's banner about its successor, not a build problem.)
    session.chdir(ROOT)
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        str(NOX_DIR / "_site"),
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    started = time.monotonic()
    session.install("--no-deps", "-r", _req("typecheck.txt"))
    _log_install(session, started)
    session.chdir(ROOT)
    session.run("mypy", "--strict", "blackwell_compat")


def _torch_range_session(
    session: nox.Session,
    requirement_file: str,
    *,
    check_newest: bool = False,
    with_torchaudio: bool = False,
) -> None:
    """torch alone (``-m "not targets"``), or with its torchaudio (*with_torchaudio*: the tests
    marked ``torchaudio`` run too; those marked ``targets`` only still need tests-full)."""
    version = _pinned(requirement_file, "torch")
    audio = _pinned(requirement_file, "torchaudio") if with_torchaudio else None
    started = time.monotonic()
    session.install("-r", _req(requirement_file), "-r", _req("test.txt"))
    _install_project(session)
    _log_install(session, started)
    if check_newest:
        _warn_if_newer_torch(session, version)
    _check_torch(session, version)
    _check_targets(session, present=False, torchaudio=audio)
    env = _fetch_nvrtc(session)
    marker = "not targets or torchaudio" if with_torchaudio else "not targets"
    _pytest(session, marker=marker, strict_skips=False, env=env)


@nox.session(name="tests-oldest-torch", python=PYTHON)
def tests_oldest_torch(session: nox.Session) -> None:
    _torch_range_session(session, "torch-oldest.txt", with_torchaudio=True)


@nox.session(name="tests-newest-torch", python=PYTHON)
def tests_newest_torch(session: nox.Session) -> None:
    _torch_range_session(session, "torch-newest.txt", check_newest=True)


@nox.session(name="tests-full", python=PYTHON)
def tests_full(session: nox.Session) -> None:
    started = time.monotonic()
    # coqui-tts 0.28 only adds packages to this stack (requirements/coqui028.txt).
    session.install("-r", _req("full.txt"), "-r", _req("coqui028.txt"), "-r", _req("test.txt"))
    session.install("--no-deps", "-r", _req("full-nodeps.txt"))
    _install_project(session)
    _log_install(session, started)
    _check_torch(session, FULL_TORCH)
    _check_targets(session, present=True)
    env = _fetch_nvrtc(session)
    _pytest(session, marker=None, strict_skips=True, env=env)


@nox.session(name="tests-tts022", python=PYTHON)
def tests_tts022(session: nox.Session) -> None:
    """Coqui TTS 0.22 (XTTS v2, the ``coqui_tts`` patch): tests marked ``tts022``.

    Its own environment: TTS 0.22 needs transformers <= 4.51.3 (chatterbox-tts pins 5.2.0) and
    installs the same ``TTS`` package as coqui-tts 0.28 (which tests-full has).
    """
    started = time.monotonic()
    session.install("-r", _req("tts022.txt"), "-r", _req("test.txt"))
    _install_project(session)
    _log_install(session, started)
    _check_torch(session, _pinned("tts022.txt", "torch"))
    _pytest(session, marker="tts022", strict_skips=True, env={})


@nox.session(name="tests-packaging", python=PYTHON)
def tests_packaging(session: nox.Session) -> None:
    """The release artefacts (tests marked ``packaging``): no torch, build and twine only."""
    started = time.monotonic()
    session.install("-r", _req("test.txt"), "-r", _req("packaging.txt"))
    session.install("--no-deps", "-e", str(ROOT))
    _log_install(session, started)
    # Only its test module: the others import torch at collection.
    _pytest(
        session,
        marker="packaging",
        strict_skips=True,
        env={},
        paths=(str(ROOT / "tests" / "test_packaging.py"),),
    )


def _warn_if_newer_torch(session: nox.Session, pinned: str) -> None:
    """A registry look-up that only informs: the pin in torch-newest.txt decides."""
    out = session.run(
        "python",
        "-m",
        "pip",
        "index",
        "versions",
        "torch",
        "--timeout",
        "20",
        silent=True,
        success_codes=range(256),
    )
    match = re.search(r"^torch \(([^)]+)\)", out if isinstance(out, str) else "", re.MULTILINE)
    if match is None:
        session.warn("could not ask the registry for the newest torch")
        return
    newest = match.group(1)

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", v.split("+")[0])[:3])

    if key(newest) > key(pinned):
        session.warn(
            f"torch {newest} is on the registry, requirements/torch-newest.txt pins {pinned}: "
            "bump the pin"
        )
    else:
        session.log(f"torch {pinned} is the newest on the registry")
