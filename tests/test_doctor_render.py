"""Text and JSON rendering of doctor reports; the JSON validated against the shipped schema."""

from __future__ import annotations

import json
import os

import jsonschema
import pytest
from support.doctor_fakes import GB10, H100, RTX5090, at, machine, torch_cu128

from blackwell_compat.doctor.checks import CHECKS
from blackwell_compat.doctor.model import FAIL, PASS, SKIP, WARN
from blackwell_compat.doctor.render import (
    WIDTH,
    command_lines,
    load_schema,
    render_json,
    render_text,
    schema_path,
)
from blackwell_compat.doctor.runner import build_report
from blackwell_compat.doctor.smoke import SmokeReport, SmokeRun, SmokeTarget, WorkloadResult
from blackwell_compat.probing import read_nvml, read_nvrtc

SCENARIOS = ("no-driver", "gb10-12.8", "rtx5090-12.6", "rtx5090-12.8", "h100", "mixed", "emulated")


def scenario(name, libs, tmp_path):
    if name == "no-driver":
        driver, _ = read_nvml(tmp_path / "nope" / "libnvidia-ml.so.1")
        return machine([], driver=driver, torch=torch_cu128(()))
    if name == "emulated":
        return machine(
            [],
            nvrtc=read_nvrtc(libs["13.0.88"]),
            torch=torch_cu128((), version="2.11.0+cu130", cuda="13.0"),
            emulated_arch="sm_121",
            env={"BLACKWELL_COMPAT_EMULATE": "sm_121"},
            smoke=_smoke(),
        )
    gpu, version = {
        "gb10-12.8": ([GB10], "12.8.93"),
        "rtx5090-12.6": ([RTX5090], "12.6.77"),
        "rtx5090-12.8": ([RTX5090], "12.8.93"),
        "h100": ([H100], "12.8.93"),
        "mixed": ([at(H100, 0), at(GB10, 1)], "12.8.93"),
    }[name]
    return machine(gpu, nvrtc=read_nvrtc(libs[version]))


def _smoke():
    target = SmokeTarget(device="cpu", label="CPU emulating sm_121", emulate="sm_121")
    err = "RuntimeError: nvrtc: error: invalid value for --gpu-architecture (-arch)"
    plain = SmokeRun(
        target,
        "unpatched",
        results=(WorkloadResult("stft_abs", "complex unary", "abs", "fail", err, 0.01),),
        seconds=3.0,
    )
    patched = SmokeRun(
        target,
        "patched",
        results=(WorkloadResult("stft_abs", "complex unary", "abs", "pass", None, 0.01),),
        applied=("torch",),
        seconds=3.0,
    )
    return SmokeReport(runs=(plain, patched), targets=(target,))


@pytest.fixture(scope="module")
def schema():
    data = load_schema()
    jsonschema.Draft202012Validator.check_schema(data)
    return data


@pytest.mark.parametrize("name", SCENARIOS)
def test_json_matches_the_schema(name, nvrtc_libraries, tmp_path, schema):
    report = build_report(scenario(name, nvrtc_libraries, tmp_path))
    data = json.loads(render_json(report))
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    assert data["exit_code"] == report.exit_code
    assert data["platform"] == json.loads(json.dumps(report.platform))
    ids = [c["id"] for c in data["checks"]]
    assert ids == [check_id for check_id, _, _ in CHECKS]
    core = ["driver", "gpus", "torch", "nvrtc", "torchaudio", "triton", "patches", "environment"]
    assert [i for i in ids if i in core] == core and ids[-1] == "smoke"


def test_schema_rejects_a_wrong_report(nvrtc_libraries, tmp_path, schema):
    data = json.loads(render_json(build_report(scenario("h100", nvrtc_libraries, tmp_path))))
    data["checks"][0]["status"] = "ok"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    del data["checks"][0]
    data.pop("platform")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


def test_docs_schema_is_the_shipped_schema():
    docs = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "doctor-schema.json")
    with open(docs, encoding="utf-8") as handle:
        assert json.load(handle) == load_schema(), (
            "docs/doctor-schema.json differs from blackwell_compat/doctor/schema.json; "
            f"copy {schema_path()} over it"
        )


@pytest.mark.parametrize("name", SCENARIOS)
def test_text_fits_80_columns(name, nvrtc_libraries, tmp_path):
    report = build_report(scenario(name, nvrtc_libraries, tmp_path))
    text = render_text(report)
    for line in text.splitlines():
        if len(line) > WIDTH:
            # only a single word longer than the line (a path) may stick out
            words = line.split()
            assert any(len(w) > WIDTH // 2 for w in words), f"{len(line)} columns: {line!r}"
    marks = [line[:6] for line in text.splitlines() if line[:1] == "["]
    assert len(marks) >= len(report.checks)


def test_text_has_one_line_per_check_then_hints_last(nvrtc_libraries, tmp_path):
    report = build_report(scenario("gb10-12.8", nvrtc_libraries, tmp_path))
    text = render_text(report)
    lines = text.splitlines()
    assert lines[1].startswith("Verdict: AFFECTED: sm_121 (NVIDIA GB10)")
    starts = [i for i, line in enumerate(lines) if line.startswith("[")]
    titles = [lines[i] for i in starts]
    assert [t[:6] for t in titles[:4]] == ["[PASS]", "[PASS]", "[PASS]", "[FAIL]"]
    fix_at = lines.index("How to fix:")
    assert fix_at > max(starts)
    assert "      $ pip install nvidia-cuda-nvrtc-cu12==12.9.86" in lines[fix_at:]
    counts = {s: sum(1 for c in report.checks if c.status == s) for s in (FAIL, WARN, PASS, SKIP)}
    assert counts[FAIL] == 1 and counts[WARN] == 0
    assert lines[-1] == (
        f"Result: 1 failed, 0 warning(s), {counts[PASS]} passed, {counts[SKIP]} skipped "
        "(exit status 1)"
    )


def test_fine_machine_has_no_hints(nvrtc_libraries, tmp_path):
    report = build_report(scenario("rtx5090-12.8", nvrtc_libraries, tmp_path))
    text = render_text(report)
    assert "How to fix:" not in text
    assert text.splitlines()[1].startswith("Verdict: not affected: sm_120")
    assert not any(c.status == FAIL for c in report.checks)


def test_long_commands_are_continued_not_broken():
    command = (
        'pip install --upgrade "torch>=2.9" torchaudio --index-url '
        "https://download.pytorch.org/whl/cu130"
    )
    lines = command_lines(command, "      $ ", 60)
    assert len(lines) > 1
    assert all(line.endswith(" \\") for line in lines[:-1])
    joined = " ".join(line.strip().removesuffix("\\").strip() for line in lines)
    assert joined == "$ " + command
    long_path = "export X=/" + "a" * 100
    assert command_lines(long_path, "  ", 80) == ["  " + long_path]


def test_emulated_failure_is_named_as_emulated_once(nvrtc_libraries, tmp_path):
    emulated = render_text(build_report(scenario("emulated", nvrtc_libraries, tmp_path)))
    result_at = next(
        i for i, line in enumerate(emulated.splitlines()) if line.startswith("Result:")
    )
    tail = " ".join(line.strip() for line in emulated.splitlines()[result_at:])
    assert tail.startswith("Result: 1 failed")
    assert "The NVRTC failure is the emulated sm_121's (BLACKWELL_COMPAT_EMULATE)" in tail
    assert "not a problem of this machine" in tail
    assert " ".join(emulated.split()).count("not a problem of this machine") == 1
    # a real affected GPU: its failure is real, no such note
    real = render_text(build_report(scenario("gb10-12.8", nvrtc_libraries, tmp_path)))
    assert real.splitlines()[-1].startswith("Result: 1 failed")
    assert "emulated" not in real.split("Result:")[-1]
