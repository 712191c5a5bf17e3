"""``import blackwell_compat`` is cheap: no torch, no target library, no heavy dependency."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import blackwell_compat as bc

HEAVY = ["torch", "torchaudio", "wrapt", "packaging", "importlib.metadata", "kokoro", "numpy"]


def _modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_pulls_in_nothing_heavy():
    loaded = _modules_after("import blackwell_compat")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_import_does_no_work_the_environment_does_not_ask_for():
    """Without BLACKWELL_COMPAT_EMULATE or the audit's variable, importing the package loads
    neither the emulation, the dispatcher, the probe nor the audit."""
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BLACKWELL_COMPAT_EMULATE", "_BLACKWELL_COMPAT_AUDIT")
    }
    loaded = _modules_after("import blackwell_compat", env=env)
    internal = {name for name in loaded if name.startswith("blackwell_compat")}
    assert internal == {
        "blackwell_compat",
        "blackwell_compat._forksafe",
        "blackwell_compat.versions",
    }, internal


def test_apply_without_affected_gpu_does_not_import_torch():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    loaded = _modules_after(
        "import blackwell_compat as bc\nr = bc.apply()\nassert r.applied == [], r", env=env
    )
    assert "torch" not in loaded


def test_public_names_resolve_lazily():
    for name in bc.__all__:
        assert getattr(bc, name) is not None
    assert set(bc.__all__) <= set(dir(bc))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bc.nope  # noqa: B018


def test_malformed_emulate_env_is_a_clear_error_at_import():
    import os

    env = dict(os.environ, BLACKWELL_COMPAT_EMULATE="blackwell")
    proc = subprocess.run(
        [sys.executable, "-c", "import blackwell_compat"], capture_output=True, text=True, env=env
    )
    assert proc.returncode != 0
    assert "BLACKWELL_COMPAT_EMULATE: 'blackwell' is not a GPU architecture" in proc.stderr


def test_malformed_emulate_env_is_a_usage_error_for_the_cli():
    import os

    env = dict(os.environ, BLACKWELL_COMPAT_EMULATE="blackwell")
    proc = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "list"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert "\nblackwell-compat: error: BLACKWELL_COMPAT_EMULATE" in "\n" + proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("arch", [None, 123, b"sm_121", 12.1])
def test_emulate_refuses_a_non_string_at_the_call(arch):
    with pytest.raises(TypeError, match=r"emulate\(arch=\.\.\.\): expected a str such as 'sm_121'"):
        bc.emulate(arch)


def test_emulate_refuses_a_malformed_name_at_the_call():
    with pytest.raises(bc.ConfigError, match="use a form like 'sm_121'"):
        bc.emulate("sm_999")  # no `with`: the call itself checks
