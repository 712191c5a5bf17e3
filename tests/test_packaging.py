"""Release artefacts: what ``python -m build`` makes is what a user installs.

The ``packaging`` tests need ``build`` and ``twine`` (``requirements/packaging.txt``) and run in
their own nox session, ``tests-packaging``.  They build from a copy of the sources (so the
working tree gets no ``build/``, ``dist/`` or egg-info folders), offline: ``--no-isolation``
uses the setuptools of the test environment instead of downloading one.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import tomllib

from blackwell_compat.cli import main

ROOT = Path(__file__).resolve().parents[1]
HOOK = "zz_blackwell_compat_autostart.pth"
# What the sdist is made from: everything else in the repository is for developers.
SDIST_SOURCES = (
    "pyproject.toml",
    "setup.py",
    "README.md",
    "README-pypi.md",
    "LICENSE",
    "MANIFEST.in",
    "CHANGELOG.md",
)
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def source_version() -> str:
    """``__version__`` as written in the package (the one source of the version)."""
    tree = ast.parse((ROOT / "blackwell_compat" / "versions.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            assert isinstance(node.value, ast.Constant)
            return str(node.value.value)
    raise AssertionError("blackwell_compat/versions.py assigns no __version__")


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BLACKWELL_COMPAT_", "_BLACKWELL_COMPAT_", "PIP_"))
    }
    env.pop("PYTHONPATH", None)
    return env


def check(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(  # type: ignore[call-overload]
        cmd, capture_output=True, text=True, timeout=600, env=clean_env(), **kwargs
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result  # type: ignore[no-any-return]


# -- the console script's name (fast, every session) -----------------------------------------


@pytest.mark.parametrize(
    ("argv0", "usage"),
    [
        ("/venv/bin/blackwell-compat", "usage: blackwell-compat "),
        ("C:\\venv\\Scripts\\blackwell-compat.exe", "usage: blackwell-compat "),
        ("/src/blackwell_compat/__main__.py", "usage: python -m blackwell_compat "),
    ],
)
def test_help_names_the_command_the_user_typed(monkeypatch, capsys, argv0, usage):
    monkeypatch.setattr(sys, "argv", [argv0.replace("\\", os.sep), "--help"])
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


# -- build, install, check (slow, tests-packaging) ----------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """sdist + wheel from ``python -m build`` (the wheel is built from the sdist), and a wheel
    built straight from the source tree."""
    import importlib.util

    missing = [m for m in ("build", "twine") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: these tests run in `nox -s tests-packaging` "
            "(requirements/packaging.txt)"
        )
    source = tmp_path_factory.mktemp("source")
    for name in SDIST_SOURCES:
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "blackwell_compat",
        source / "blackwell_compat",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    dist = tmp_path_factory.mktemp("dist")
    direct = tmp_path_factory.mktemp("direct")
    build = [sys.executable, "-m", "build", "--no-isolation"]
    check([*build, "--outdir", str(dist), str(source)])
    check([*build, "--wheel", "--outdir", str(direct), str(source)])
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    return {
        "sdist": sdists[0],
        "wheel": wheels[0],
        "direct_wheel": next(direct.glob("*.whl")),
    }


def wheel_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.slow
@pytest.mark.packaging
def test_build_makes_an_sdist_and_a_wheel_named_after_the_one_version(built):
    version = source_version()
    assert built["sdist"].name == f"blackwell_compat-{version}.tar.gz"
    assert built["wheel"].name == f"blackwell_compat-{version}-py3-none-any.whl"
    assert pyproject()["project"]["dynamic"] == ["version"]  # type: ignore[index]


@pytest.mark.slow
@pytest.mark.packaging
def test_the_sdist_builds_the_same_wheel_as_the_source_tree(built):
    from_sdist = wheel_members(built["wheel"])
    from_tree = wheel_members(built["direct_wheel"])
    assert built["wheel"].name == built["direct_wheel"].name
    assert sorted(from_sdist) == sorted(from_tree)
    differing = [name for name in from_tree if from_sdist[name] != from_tree[name]]
    assert differing == []


@pytest.mark.slow
@pytest.mark.packaging
def test_wheel_metadata(built):
    members = wheel_members(built["wheel"])
    version = source_version()
    info = f"blackwell_compat-{version}.dist-info"
    metadata = Parser().parsestr(members[f"{info}/METADATA"].decode("utf-8"))
    assert metadata["Name"] == "blackwell-compat"
    assert metadata["Version"] == version
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert f"{info}/licenses/LICENSE" in members
    classifiers = metadata.get_all("Classifier") or []
    for python in SUPPORTED_PYTHONS:
        assert f"Programming Language :: Python :: {python}" in classifiers
    assert "Typing :: Typed" in classifiers
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"torch", "torchaudio", "kokoro", "s3tokenizer", "whisper"} <= extras
    assert "chatterbox" not in extras  # chatterbox-tts pins torch==2.6.0: --no-deps only
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "pip install blackwell-compat" in (metadata.get_payload() or "")


#: What only works for someone holding this repository: not for the package index's page.
REPOSITORY_ONLY = (
    "pip install .",
    "pip install -e",
    "python -m build",
    "dist/",
    "scripts/",
    "requirements/",
    "nox",
    "docs/",
    "examples/",
    "tests/",
    "mkdocs",
    "CHANGELOG.md",
)


def long_description_problems(text: str) -> list[str]:
    """Relative links, images and repository-only commands in a long description."""
    problems = [
        f"relative link {target!r}"
        for target in re.findall(r"\]\(([^)\s]+)", text)
        if not target.startswith(("https://", "http://", "#"))
    ]
    problems += [f"repository-only text {word!r}" for word in REPOSITORY_ONLY if word in text]
    return problems


def test_the_long_description_has_nothing_that_needs_the_repository():
    # Issue 22: the README carries `bash scripts/...`, `pip install .` and links into docs/;
    # the index page shows its own text (fast: it reads the file pyproject.toml names).
    readme = pyproject()["project"]["readme"]  # type: ignore[index]
    assert readme == {"file": "README-pypi.md", "content-type": "text/markdown"}
    text = (ROOT / "README-pypi.md").read_text(encoding="utf-8")
    assert long_description_problems(text) == []
    assert "pip install blackwell-compat" in text
    # The checker finds what the repository's README has (it is not a test that cannot fail).
    repository = (ROOT / "README.md").read_text(encoding="utf-8")
    found = long_description_problems(repository)
    assert any(p.startswith("relative link") for p in found), found
    assert "repository-only text 'pip install .'" in found, found
    # The wheel the README tells a reader to install is the one `python -m build` writes.
    assert f"pip install dist/blackwell_compat-{source_version()}-py3-none-any.whl" in repository


@pytest.mark.slow
@pytest.mark.packaging
def test_the_wheel_carries_that_long_description(built):
    members = wheel_members(built["wheel"])
    info = f"blackwell_compat-{source_version()}.dist-info"
    metadata = Parser().parsestr(members[f"{info}/METADATA"].decode("utf-8"))
    payload = (metadata.get_payload() or "").strip()
    assert payload == (ROOT / "README-pypi.md").read_text(encoding="utf-8").strip()
    assert long_description_problems(payload) == []


@pytest.mark.slow
@pytest.mark.packaging
def test_the_sdist_holds_the_sources_and_one_schema(built):
    import tarfile

    with tarfile.open(built["sdist"]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for name in (
        *SDIST_SOURCES,
        "blackwell_compat/doctor/schema.json",
        "blackwell_compat/py.typed",
    ):
        assert name in names, name
    assert [n for n in names if n.endswith("schema.json")] == [
        "blackwell_compat/doctor/schema.json"
    ]


@pytest.mark.slow
@pytest.mark.packaging
def test_twine_check_passes(built):
    result = check(
        [
            sys.executable,
            "-m",
            "twine",
            "check",
            "--strict",
            str(built["sdist"]),
            str(built["wheel"]),
        ]
    )
    assert result.stdout.count("PASSED") == 2, result.stdout


def expected_entry_points() -> list[list[str]]:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    found = [["console_scripts", k, v] for k, v in project["scripts"].items()]
    for group, table in project["entry-points"].items():
        found += [[group, k, v] for k, v in table.items()]
    return sorted(found)


@pytest.mark.slow
@pytest.mark.packaging
def test_the_wheel_installs_into_a_fresh_venv_with_everything_it_needs(built, tmp_path):
    venv = tmp_path / "venv"
    check([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    check([*pip, "install", "--no-deps", "--no-index", str(built["wheel"])])
    purelib = Path(
        check(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    # The runtime dependencies come from this environment (no registry at test time): a folder
    # with just those two packages, added after the venv's own site-packages.
    deps = tmp_path / "deps"
    deps.mkdir()
    import packaging
    import wrapt

    for module in (packaging, wrapt):
        assert module.__file__ is not None
        os.symlink(Path(module.__file__).parent, deps / module.__name__)
    (purelib / "_test_deps.pth").write_text(f"{deps}\n", encoding="utf-8")

    package = purelib / "blackwell_compat"
    assert (purelib / HOOK).is_file()
    assert (package / "py.typed").is_file()
    schema = json.loads((package / "doctor" / "schema.json").read_text(encoding="utf-8"))
    source_schema = (ROOT / "blackwell_compat" / "doctor" / "schema.json").read_text("utf-8")
    assert schema == json.loads(source_schema)

    # Every entry point is declared and loads (the pytest plugin needs pytest: found, not loaded).
    code = (
        "import importlib.metadata as md, importlib.util, json\n"
        "eps = md.distribution('blackwell-compat').entry_points\n"
        "for ep in eps:\n"
        "    if ep.group == 'pytest11':\n"
        "        assert importlib.util.find_spec(ep.value) is not None, ep\n"
        "    else:\n"
        "        ep.load()\n"
        "print(json.dumps(sorted([ep.group, ep.name, ep.value] for ep in eps)))\n"
    )
    loaded = check([str(python), "-I", "-c", code], cwd=tmp_path)
    assert json.loads(loaded.stdout) == expected_entry_points()

    # The console script, under its own name.
    script = bindir / ("blackwell-compat.exe" if os.name == "nt" else "blackwell-compat")
    helped = check([str(script), "--help"], cwd=tmp_path)
    assert helped.stdout.startswith("usage: blackwell-compat "), helped.stdout
    version = check([str(script), "--version"], cwd=tmp_path)
    assert version.stdout.strip() == f"blackwell-compat {source_version()}"
