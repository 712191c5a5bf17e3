"""The pytest plugin's options, markers, header and laziness (no torch kernels touched here).

Runs that only parse options or collect are in-process (``pytester.runpytest``); anything that
could import torch or apply a patch runs in a subprocess, because the dispatcher is process-wide.
The torch-using behaviour is in ``test_pytest_plugin_torch.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from blackwell_compat import pytest_plugin
from blackwell_compat.errors import ConfigError
from blackwell_compat.probing import probe
from blackwell_compat.pytest_plugin.parity import worst_element

pytest_plugins = ("pytester",)

NO_TORCH_SUITE = """
import json, sys

def test_record_modules():
    loaded = sorted(sys.modules)
    with open("modules.json", "w") as fh:
        json.dump(loaded, fh)
"""

HEAVY = ("torch", "wrapt", "blackwell_compat.engine", "blackwell_compat.registry")


def _loaded(pytester: pytest.Pytester) -> set[str]:
    return set(json.loads((pytester.path / "modules.json").read_text()))


def _heavy(loaded: set[str]) -> set[str]:
    found = {name for name in loaded if name in HEAVY}
    found |= {name for name in loaded if name.startswith("blackwell_compat.patches")}
    return found


# -- laziness ---------------------------------------------------------------------------------


def test_importing_the_plugin_module_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, json, blackwell_compat.pytest_plugin; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert not _heavy(loaded), _heavy(loaded)
    # -X importtime names every module imported, in import order: torch is not among them.
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "blackwell_compat.pytest_plugin" in imported
    assert not {name for name in imported if name.split(".")[0] == "torch"}


def test_loading_the_plugin_loads_nothing_of_the_package_but_config() -> None:
    """Loading the plugin (as pytest does from the entry point) adds only its own light modules
    and config (with errors, config's one dependency) to what importing the package loads."""
    code = (
        "import sys, json\n"
        "import blackwell_compat\n"
        "before = {m for m in sys.modules if m.startswith('blackwell_compat')}\n"
        "import blackwell_compat.pytest_plugin\n"
        "after = {m for m in sys.modules if m.startswith('blackwell_compat')}\n"
        "print(json.dumps(sorted(after - before)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    added = set(json.loads(out.stdout.splitlines()[-1]))
    assert added == {
        "blackwell_compat.config",
        "blackwell_compat.errors",
        "blackwell_compat.pytest_plugin",
        "blackwell_compat.pytest_plugin.settings",
        "blackwell_compat.pytest_plugin.state",
    }


def test_plain_run_imports_neither_torch_nor_patches(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mods=NO_TORCH_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    loaded = _loaded(pytester)
    assert "blackwell_compat.pytest_plugin" in loaded  # the plugin was really active
    assert not _heavy(loaded), _heavy(loaded)


def test_emulate_option_alone_does_not_import_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mods=NO_TORCH_SUITE)
    result = pytester.runpytest_subprocess("--blackwell-emulate=sm_121")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*emulation: sm_121 (every test)*"])
    loaded = _loaded(pytester)
    assert "blackwell_compat.emulation" in loaded
    # The emulation kernels wait for ``import torch`` on a post-import hook (wrapt): allowed.
    assert not _heavy(loaded) - {"wrapt"}, _heavy(loaded)


# -- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("sm_120", "sm_120"), ("12.1", "sm_121"), ("103", "sm_103"), ("on", "sm_121"), ("off", None)],
)
def test_parse_emulate_accepts_arch_forms(value: str, expected: str | None) -> None:
    assert pytest_plugin.parse_emulate(value, source="x") == expected


def test_parse_emulate_explains_a_swallowed_test_path(tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(ConfigError, match="looks like a test path"):
        pytest_plugin.parse_emulate("tests/test_model.py", source="--blackwell-emulate")
    with pytest.raises(ConfigError, match="'blackwell' is not a GPU architecture"):
        pytest_plugin.parse_emulate("blackwell", source="--blackwell-emulate")


def test_parse_mode_rejects_unknown_values() -> None:
    assert pytest_plugin.parse_mode(" AUTO ", source="x") == "auto"
    with pytest.raises(ConfigError, match="'sometimes' is not one of auto, on, off"):
        pytest_plugin.parse_mode("sometimes", source="ini option blackwell_compat")


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (
            ["--blackwell-compat=maybe"],
            "",
            "*argument --blackwell-compat: invalid choice: 'maybe'*",
        ),
        (
            ["--blackwell-emulate=sm_x"],
            "",
            "*--blackwell-emulate: 'sm_x' is not a GPU architecture*",
        ),
        (
            ["--blackwell-emulate", "test_x.py"],
            "",
            "*'test_x.py' looks like a test path*--blackwell-emulate=sm_121*",
        ),
        ([], "blackwell_compat = sometimes", "*ini option blackwell_compat: 'sometimes' is not*"),
        ([], "blackwell_emulate = gb10", "*ini option blackwell_emulate: 'gb10' is not a GPU*"),
    ],
)
def test_bad_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_x="def test_ok():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_bad_environment_for_the_session_patches_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "no_such_patch")
    pytester.makepyfile(test_x="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("--blackwell-compat=on")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: blackwell-compat: BLACKWELL_COMPAT_DISABLE: unknown patch name(s) 'no_such*"]
    )


def test_command_line_overrides_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nblackwell_emulate = sm_120\nblackwell_compat = off\n")
    pytester.makepyfile(test_x="def test_ok():\n    pass\n")
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines(["*patches: off; emulation: sm_120 (every test)*"])
    result = pytester.runpytest("--collect-only", "--blackwell-emulate=off")
    result.stdout.fnmatch_lines(["*patches: off; emulation: off*"])
    result = pytester.runpytest("--collect-only", "--blackwell-emulate=12.0")
    result.stdout.fnmatch_lines(["*emulation: sm_120 (every test)*"])


def test_options_are_documented_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "blackwell-compat (GPUs whose architecture the installed NVRTC does not know):",
            "*--blackwell-compat={auto,on,off}*",
            "*--blackwell-emulate=*ARCH*",
            "*blackwell_compat (string):*",
            "*blackwell_emulate (string):*",
        ]
    )


# -- header -----------------------------------------------------------------------------------


def test_header_names_gpus_verdict_patches_and_emulation(pytester: pytest.Pytester) -> None:
    platform = probe()
    pytester.makepyfile(test_x="def test_ok():\n    pass\n")
    result = pytester.runpytest("--collect-only", "--blackwell-emulate=sm_103")
    verdict = "affected" if platform.affected else "not affected"
    result.stdout.fnmatch_lines(
        [f"blackwell-compat *: GPUs: *; NVRTC *; {verdict}; patches: off; emulation: sm_103 *"]
    )
    real = [gpu for gpu in platform.gpus if not gpu.emulated]
    if not real:
        result.stdout.fnmatch_lines(["*GPUs: none;*"])
    for gpu in real:
        result.stdout.fnmatch_lines([f"*{gpu.name} {gpu.arch}*"])


def test_header_auto_follows_the_probe(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mods=NO_TORCH_SUITE)
    result = pytester.runpytest_subprocess("--blackwell-compat=auto")
    result.assert_outcomes(passed=1)
    if probe().affected:  # a real affected GPU: auto applies (torch's guard waits for import)
        result.stdout.fnmatch_lines(["*; affected; patches auto: *torch*"])
    else:
        result.stdout.fnmatch_lines(["*patches: auto: no affected GPU here, not applied*"])
        assert not _heavy(_loaded(pytester))


def test_quiet_mode_prints_no_header(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_x="def test_ok():\n    pass\n")
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=1)
    assert "blackwell-compat" not in result.stdout.str()


# -- markers and disabling --------------------------------------------------------------------


STRICT_SUITE = """
import pytest

@pytest.mark.requires_affected_gpu
def test_needs_gpu():
    pass

@pytest.mark.project_marker
def test_own_marker():
    pass
"""


def test_markers_are_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    project_marker: the project's own\n")
    pytester.makepyfile(test_strict=STRICT_SUITE)
    result = pytester.runpytest("--strict-markers", "--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.blackwell_compat(patches=None, strategies=None): *",
            "*requires_affected_gpu*",
        ]
    )
    result = pytester.runpytest("--strict-markers", "-rs")
    if any(gpu.affected and not gpu.emulated for gpu in probe().gpus):
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(
            ["SKIPPED [[]1[]] test_strict.py:*: requires an affected GPU (one whose *"]
        )


def test_requires_affected_gpu_ignores_the_emulated_gpu(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_strict=STRICT_SUITE)
    pytester.makeini("[pytest]\nmarkers =\n    project_marker: the project's own\n")
    result = pytester.runpytest_subprocess("--strict-markers", "--blackwell-emulate", "-rs")
    if any(gpu.affected and not gpu.emulated for gpu in probe().gpus):
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(passed=1, skipped=1)


def test_disabled_plugin_leaves_a_suite_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        import pytest

        def test_ok():
            pass

        def test_no_fixture(request):
            with pytest.raises(pytest.FixtureLookupError):
                request.getfixturevalue("assert_cpu_parity")
        """
    )
    result = pytester.runpytest("-p", "no:blackwell_compat")
    result.assert_outcomes(passed=2)
    assert "blackwell-compat" not in result.stdout.str()
    result = pytester.runpytest("-p", "no:blackwell_compat", "--blackwell-emulate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --blackwell-emulate*"])
    pytester.makepyfile(test_strict=STRICT_SUITE)
    pytester.makeini("[pytest]\nmarkers =\n    project_marker: the project's own\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:blackwell_compat", "--strict-markers", "test_strict.py"
    )
    result.stdout.fnmatch_lines(["*'requires_affected_gpu' not found in `markers`*"])


def test_plugin_is_registered_under_its_entry_point_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_ok():\n    pass\n")
    config = pytester.parseconfigure()
    assert config.pluginmanager.get_plugin("blackwell_compat") is pytest_plugin


# -- the parity report ------------------------------------------------------------------------


def test_worst_element_names_index_values_and_tolerance() -> None:
    expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    actual = expected.clone()
    actual[1, 0] = 3.5
    actual[0, 1] = 2.0001
    text = worst_element(actual, expected)
    assert text.startswith("2 of 4 elements differ; worst at index (1, 0): device 3.5, reference 3")
    assert "|difference| 0.5 (relative 0.166667)" in text
    assert "rtol 1.3e-06, atol 1e-05, dtype float32" in text
    assert worst_element(expected, expected.clone()) == ""


def test_worst_element_handles_nan_inf_and_complex() -> None:
    expected = torch.tensor([1.0, float("inf"), float("nan"), 2.0])
    same = expected.clone()
    assert worst_element(same, expected) == ""
    actual = torch.tensor([1.0, float("inf"), 7.0, 2.0])
    assert "worst at index (2,): device 7, reference nan" in worst_element(actual, expected)
    z = torch.tensor([3 + 4j, 1e30 + 0j], dtype=torch.complex128)
    w = z.clone()
    w[1] = complex("inf")
    text = worst_element(w, z)
    assert "1 of 2 elements differ; worst at index (1,)" in text
    assert "dtype complex128" in text
    # Given tolerances replace the per-dtype defaults.
    loose = worst_element(torch.tensor([1.05]), torch.tensor([1.0]), rtol=0.1, atol=0.0)
    assert loose == ""


def test_worst_element_leaves_shape_and_dtype_mismatches_to_assert_close() -> None:
    assert worst_element(torch.zeros(2), torch.zeros(3)) == ""
    assert worst_element(torch.zeros(2), torch.zeros(2, dtype=torch.float64)) == ""
    assert worst_element(torch.zeros(0), torch.zeros(0)) == ""
