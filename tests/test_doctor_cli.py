"""``python -m blackwell_compat doctor`` end to end, in a subprocess, on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest

from blackwell_compat.doctor.checks import CHECKS
from blackwell_compat.doctor.render import load_schema

pytestmark = pytest.mark.slow


def doctor(*args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )


def parsed(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.stdout, done.stderr
    data = json.loads(done.stdout)
    jsonschema.validate(data, load_schema(), cls=jsonschema.Draft202012Validator)
    return data


def checks(data: dict) -> dict[str, dict]:
    return {c["id"]: c for c in data["checks"]}


def test_json_on_this_machine():
    done = doctor("--json")
    data = parsed(done)
    assert done.returncode == data["exit_code"], done.stderr
    assert done.returncode == (1 if any(c["status"] == "fail" for c in data["checks"]) else 0)
    platform = data["platform"]
    assert data["affected"] == platform["affected"]
    assert platform["affected"] == any(g["affected"] for g in platform["gpus"])
    by_id = checks(data)
    if not platform["gpus"]:
        assert by_id["gpus"]["status"] == "skip"
        assert by_id["driver"]["status"] in ("skip", "fail")
        assert by_id["smoke"]["status"] == "skip"
    assert "Traceback" not in done.stderr


def test_text_on_this_machine_fits_and_ends_with_the_result():
    done = doctor()
    lines = done.stdout.splitlines()
    assert lines[0].startswith("blackwell-compat ")
    assert lines[1].startswith("Verdict: ")
    assert lines[-1].endswith(f"(exit status {done.returncode})")
    marks = [line for line in lines if line[:6] in ("[PASS]", "[WARN]", "[FAIL]", "[SKIP]")]
    assert len(marks) == len(CHECKS)  # one line per check (hints are indented)
    assert "Traceback" not in done.stderr


def test_emulated_gb10_is_reported_affected_with_patches_and_hints():
    done = doctor("--json", BLACKWELL_COMPAT_EMULATE="sm_121")
    data = parsed(done)
    assert done.returncode == 1
    assert data["affected"] is True
    emulated = [g for g in data["platform"]["gpus"] if g["emulated"]]
    assert [g["arch"] for g in emulated] == ["sm_121"]
    assert "BLACKWELL_COMPAT_EMULATE=sm_121" in emulated[0]["reason"]
    by_id = checks(data)
    nvrtc = by_id["nvrtc"]
    assert nvrtc["status"] == "fail"
    assert nvrtc["hint"] and nvrtc["commands"]
    assert "python -m blackwell_compat run -- python your_script.py" in nvrtc["commands"]
    patches = {p["name"]: p for p in by_id["patches"]["data"]["patches"]}
    assert patches["torch"]["would_apply"] is True, patches["torch"]
    assert by_id["environment"]["status"] == "warn"
    assert "emulation active (sm_121)" in by_id["environment"]["summary"]


def test_emulated_smoke_proves_the_machinery_on_cpu():
    done = doctor("--json", "--smoke", BLACKWELL_COMPAT_EMULATE="sm_121")
    data = parsed(done)
    smoke = checks(data)["smoke"]
    assert smoke["status"] == "pass", smoke
    assert "failure reproduced, patches fix it" in smoke["summary"]


def test_a_probe_out_of_time_is_a_failed_result_not_a_hung_doctor():
    done = doctor("--json", "--timeout", "0.01")
    data = parsed(done)
    assert done.returncode == 1
    torch = checks(data)["torch"]
    if torch["status"] != "skip":  # torch installed: its probe could not finish in 10 ms
        assert torch["status"] == "fail"
        assert "timed out after 0.01 s" in " ".join(torch["details"])


def test_malformed_variable_is_a_usage_error_with_the_exact_problem():
    # One rule for every command (issue 14, point 13): exit 2, the problem said once.
    done = doctor("--json", BLACKWELL_COMPAT_STRATEGY="torchaudio")
    assert done.returncode == 2
    assert done.stdout == ""
    needle = "'torchaudio' is malformed; use 'patch=strategy[,patch=strategy]'"
    assert done.stderr.count(needle) == 1, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--timeout", "0"), "give a positive number of seconds"),
        (("--timeout", "soon"), "is not a number of seconds"),
        (("--frobnicate",), "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2(args, needle):
    done = doctor(*args)
    assert done.returncode == 2
    assert needle in done.stderr
    assert "Traceback" not in done.stderr


def test_malformed_emulation_is_a_usage_error():
    done = doctor("--json", BLACKWELL_COMPAT_EMULATE="gb10")
    assert done.returncode == 2
    assert "'gb10' is not a GPU architecture" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_doctor_process_never_imports_torch():
    code = (
        "import sys\n"
        "from blackwell_compat.doctor import diagnose\n"
        "report = diagnose()\n"
        "print(sorted(m for m in ('torch', 'torchaudio', 'triton') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKWELL_COMPAT_")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_schema_option_prints_the_documented_schema():
    done = doctor("--schema")
    assert done.returncode == 0
    assert json.loads(done.stdout) == load_schema()
