"""The maintainer tool scripts/torchaudio_cuda_suite.py (issue 23, point 4): it counts the
outcomes of a test module run three ways, splits failures into the NVRTC error and other kinds,
and reports a run that aborted the interpreter instead of hiding it.  torchaudio's own test
sources are not needed here: a small module of the same shape stands in for them."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "scripts" / "torchaudio_cuda_suite.py"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bc_torchaudio_cuda_suite", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


NVRTC = "RuntimeError: nvrtc: error: invalid value for --gpu-architecture (-arch)"
NUMPY = "TypeError: can't convert cuda:0 device type tensor to numpy."
REPORT = f"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="2" tests="6">
<testcase classname="m.C" name="test_ok"/>
<testcase classname="m.C" name="test_nvrtc">
  <failure message="{NVRTC}">E   {NVRTC}</failure></testcase>
<testcase classname="m.C" name="test_numpy"><failure message="{NUMPY}">self = x
E   {NUMPY}
E   more</failure></testcase>
<testcase classname="m.C" name="test_setup">
  <error message="error at setup">E   ValueError: bad fixture 12</error></testcase>
<testcase classname="m.C" name="test_skip">
  <skipped type="pytest.skip" message="CUDA is not available."/></testcase>
<testcase classname="m.C" name="test_xfail">
  <skipped type="pytest.xfail" message="expected"/></testcase>
</testsuite></testsuites>
"""


def test_counts_and_kinds_of_a_report(tmp_path: Path) -> None:
    tool = _tool()
    report = tmp_path / "r.xml"
    report.write_text(REPORT)
    outcome = tool.Outcome(module="m.py", mode="emulated")
    tool.parse_report(report, outcome)
    assert (outcome.passed, outcome.failed, outcome.errors) == (1, 2, 1)
    assert (outcome.skipped, outcome.xfailed) == (1, 1)
    kinds = sorted(tool.classify(text) for text in outcome.problems.values())
    assert kinds == [
        "TypeError: can't convert cuda:N device type tensor to numpy.",
        "ValueError: bad fixture N",
        "nvrtc",
    ]


MODULE = """
import os
import unittest

import torch


@unittest.skipIf(not torch.cuda.is_available(), "CUDA is not available.")
class Demo(unittest.TestCase):
    def test_add(self):
        x = torch.ones(3, device="cuda")
        self.assertTrue(x.is_cuda)
        self.assertEqual((x + x).sum().item(), 6.0)

    def test_jiterator_op(self):
        torch.special.i0e(torch.rand(4, device="cuda"))

    @unittest.expectedFailure
    def test_known_bad(self):
        raise AssertionError("known")
"""

ABORTS = """
import os


def test_aborts():
    os.abort()
"""


def _sources(root: Path) -> Path:
    pkg = root / "test" / "torchaudio_unittest" / "functional"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "demo_cuda_test.py").write_text(textwrap.dedent(MODULE))
    (pkg / "aborts_test.py").write_text(textwrap.dedent(ABORTS))
    return root


@pytest.mark.slow
def test_runs_a_module_plain_and_on_the_emulated_device(tmp_path: Path) -> None:
    tool = _tool()
    root = _sources(tmp_path) / "test"
    plain = tool.run_module(root, "functional/demo_cuda_test.py", "plain", [], 300, None)
    assert (plain.passed, plain.failed, plain.skipped, plain.status) == (0, 0, 3, "ok")
    extra = tool.MODES["emulated"]
    emulated = tool.run_module(root, "functional/demo_cuda_test.py", "emulated", extra, 300, None)
    assert (emulated.passed, emulated.failed, emulated.xfailed) == (1, 1, 1), emulated.problems
    assert [tool.classify(t) for t in emulated.problems.values()] == ["nvrtc"]


def test_a_run_that_aborts_is_reported_not_counted(tmp_path: Path) -> None:
    tool = _tool()
    root = _sources(tmp_path) / "test"
    outcome = tool.run_module(root, "functional/aborts_test.py", "plain", [], 300, None)
    assert outcome.status.startswith("ABORTED"), outcome.status
    argv = [str(tmp_path), "--module", "functional/aborts_test.py", "--mode", "plain"]
    assert tool.main(argv) == 1
