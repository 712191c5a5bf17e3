"""The start-up hook is installed with the package and removed with it (regular and editable).

Builds the project (a copy of its sources, so the working tree gets no build/ or egg-info
folders) with its own PEP 517 backend, installs the wheel into a throwaway virtual environment
with pip, checks the hook, uninstalls with pip and checks that nothing is left behind.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from blackwell_compat.autostart import HOOK_FILENAME

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BLACKWELL_COMPAT_", "_BLACKWELL_COMPAT_", "PIP_"))
    }
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def check(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(  # type: ignore[call-overload]
        cmd, capture_output=True, text=True, timeout=600, **kwargs
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    probe = subprocess.run(
        [sys.executable, "-c", "import setuptools"], capture_output=True, env=clean_env()
    )
    assert probe.returncode == 0, (
        "setuptools (the project's build backend) must be importable by the test interpreter "
        "to build the project offline"
    )
    dest = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(
        ROOT / "blackwell_compat",
        dest / "blackwell_compat",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return dest


def build(source: Path, hook: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    code = f"import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))"
    result = check([sys.executable, "-c", code, str(out)], cwd=source, env=clean_env())
    return out / result.stdout.strip().splitlines()[-1]


def make_venv(path: Path) -> tuple[Path, Path]:
    check([sys.executable, "-m", "venv", "--without-pip", str(path)], env=clean_env())
    bindir = "Scripts" if os.name == "nt" else "bin"
    python = path / bindir / ("python.exe" if os.name == "nt" else "python")
    purelib = check(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env=clean_env(),
    ).stdout.strip()
    return python, Path(purelib)


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return check(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            *args,
            "--disable-pip-version-check",
        ],
        env=clean_env(),
    )


def imported_modules(python: Path, **env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; print(sorted(m for m in sys.modules "
        "if m == 'blackwell_compat' or m.startswith('blackwell_compat.')))"
    )
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=clean_env(**env), timeout=120
    )


def expected_hook_text() -> str:
    return str(runpy.run_path(str(ROOT / "setup.py"), run_name="not_main")["HOOK_TEXT"])


def leftovers(purelib: Path) -> list[str]:
    if not purelib.exists():  # pip removes a site-packages folder it left empty
        return []
    return sorted(p.name for p in purelib.iterdir() if "blackwell" in p.name.lower())


@pytest.mark.parametrize("kind", ["wheel", "editable"])
def test_install_puts_the_hook_in_site_packages_and_uninstall_removes_it(
    source_copy, tmp_path, kind
):
    hook_name = "build_wheel" if kind == "wheel" else "build_editable"
    wheel = build(source_copy, hook_name, tmp_path / "dist")
    python, purelib = make_venv(tmp_path / "venv")
    assert leftovers(purelib) == []

    pip(python, "install", "--no-deps", "--no-index", str(wheel))
    hook = purelib / HOOK_FILENAME
    assert hook.is_file(), sorted(p.name for p in purelib.iterdir())
    assert hook.read_text(encoding="ascii") == expected_hook_text()
    record = next(purelib.glob("blackwell_compat-*.dist-info")) / "RECORD"
    assert any(line.startswith(HOOK_FILENAME + ",") for line in record.read_text().splitlines())

    # unset: the interpreter starts without importing the package
    unset = imported_modules(python)
    assert unset.returncode == 0, unset.stderr
    assert unset.stdout.strip() == "[]"
    assert unset.stderr == ""
    # set: the hook arms the activation before user code (it runs at `import torch`, which
    # this throwaway venv does not have: nothing more is imported, nothing is said)
    auto = imported_modules(python, BLACKWELL_COMPAT_AUTO="1")
    assert auto.returncode == 0, auto.stderr
    assert "'blackwell_compat.startup_hook'" in auto.stdout
    assert "'blackwell_compat.autostart'" not in auto.stdout
    assert auto.stderr == ""

    pip(python, "uninstall", "--yes", "blackwell-compat")
    assert not hook.exists()
    assert leftovers(purelib) == []
    after = subprocess.run(
        [str(python), "-c", "print('clean')"],
        capture_output=True,
        text=True,
        env=clean_env(BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_EMULATE="sm_121"),
        timeout=120,
    )
    assert after.returncode == 0
    assert after.stdout == "clean\n"
    assert after.stderr == ""


def test_this_environment_has_exactly_one_hook():
    purelib = Path(sysconfig.get_paths()["purelib"])
    assert (purelib / HOOK_FILENAME).is_file()
    copies = [p for p in purelib.iterdir() if p.name.endswith(".pth") and "blackwell" in p.name]
    assert [p.name for p in copies if "editable" not in p.name] == [HOOK_FILENAME]
