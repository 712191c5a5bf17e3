"""The documentation: README links resolve, every page is in the site, the site build is strict.

The site itself is built by the ``lint`` session (``mkdocs build --strict``); these checks need no
MkDocs, so every test session makes them.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(markdown: str) -> list[str]:
    """Link targets that are paths in the repository (no URL, no bare anchor)."""
    without_code = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    return [
        target
        for target in LINK.findall(without_code)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


def test_readme_links_point_at_files_that_exist():
    links = relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "docs/index.md" in links
    missing = [t for t in links if not (ROOT / t.split("#", 1)[0]).exists()]
    assert missing == []


def test_readme_says_how_to_install_and_what_the_commands_cost():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install blackwell-compat" in readme
    assert "blackwell-compat doctor" in readme
    for extra in ("[torch]", "[torchaudio]", "[kokoro]", "[s3tokenizer]", "[whisper]"):
        assert extra in readme, extra
    # measured figures, and on what machine
    assert re.search(r"\d+ s on the first run", readme)
    assert re.search(r"\d+(\.\d+)? GB `\.venv`", readme)
    assert "2-core" in readme and "24 GiB" in readme


def nav_pages() -> list[str]:
    """Every ``something.md`` named in mkdocs.yml's nav (read without a YAML parser)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:") :]
    return re.findall(r":\s*([\w./-]+\.md)\s*$", nav, flags=re.MULTILINE)


def test_every_docs_page_is_in_the_site_nav_once():
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    listed = nav_pages()
    assert sorted(listed) == pages
    assert len(set(listed)) == len(listed)


def test_the_site_build_turns_every_problem_into_an_error():
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(r"^strict: true$", text, flags=re.MULTILINE)
    for check in ("omitted_files", "absolute_links", "unrecognized_links", "anchors", "not_found"):
        assert re.search(rf"^  {check}: warn$", text, flags=re.MULTILINE), check
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert '"mkdocs",\n        "build",\n        "--strict",' in noxfile
    lint = (ROOT / "requirements" / "lint.txt").read_text(encoding="utf-8")
    for package in ("mkdocs", "mkdocs-material", "mkdocstrings", "mkdocstrings-python"):
        assert re.search(rf"^{re.escape(package)}==\S+$", lint, flags=re.MULTILINE), package


def test_the_doctor_schema_has_one_source():
    shipped = ROOT / "blackwell_compat" / "doctor" / "schema.json"
    in_docs = DOCS / "doctor-schema.json"
    assert shipped.is_file()
    assert in_docs.is_symlink()
    assert in_docs.resolve() == shipped.resolve()


def reference_objects() -> dict[str, object]:
    """``{name: object}`` for every ``::: module.Name`` directive of the API reference."""
    import importlib

    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    found: dict[str, object] = {}
    for path in re.findall(r"^::: ([\w.]+)\s*$", text, flags=re.MULTILINE):
        module, _, name = path.rpartition(".")
        found[name] = getattr(importlib.import_module(module), name)
    return found


def test_the_api_reference_covers_every_public_name():
    # Issue 22: ladder() and GpuService were public but missing from the reference.
    import blackwell_compat as bc

    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    shown = reference_objects()
    missing = []
    for name in bc.__all__:
        if name == "__version__":  # a string: named in the text, not rendered from a docstring
            if "`bc.__version__`" not in text:
                missing.append(name)
        elif name not in shown or shown[name] is not getattr(bc, name):
            missing.append(name)
    assert missing == [], f"public names missing from docs/reference.md: {missing}"


def test_the_api_page_and_readme_name_ladder_fetch_and_every_variable():
    from blackwell_compat.config import ALL_VARIABLES

    api = (DOCS / "api.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "| `bc.ladder(" in api and "| `bc.GpuService` |" in api
    assert "bc.ladder()" in readme
    commands = api[api.index("## Command line") :]
    for command in ("doctor", "list", "audit", "run", "fetch nvrtc|ptxas"):
        assert f"`{command}" in commands, command
    table = api[api.index("## Environment variables") : api.index("## Command line")]
    public = [v for v in ALL_VARIABLES if not v.startswith("_")]
    assert [v for v in public if f"| `{v}` |" not in table] == []
