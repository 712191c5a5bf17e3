"""``python -m blackwell_compat doctor`` end to end, in a subprocess, on this machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest

from blackwell_compat.doctor.checks import CHECKS
from blackwell_compat.doctor.render import load_schema
from blackwell_compat.probing.locate import locate_torch

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


# -- issue 22: no two lines contradict each other, before and after `fetch nvrtc` -------------

MAJOR = locate_torch().cuda_major
CAPABLE = {12: "12.9.86", 13: "13.0.88"}  # a real NVRTC of torch's CUDA major that lists sm_121

#: Pairs of statements that must never appear in the same report (issue 22 found the first).
CONTRADICTIONS = (
    ("this machine's NVRTC is not the cause", "does not list sm_121 either"),
    ("so a real one would be fine", "does not list sm_121 either"),
    ("the NVRTC remedy will serve it", "$ python -m blackwell_compat fetch nvrtc"),
    ("the NVRTC remedy will serve it", "[FAIL] NVRTC"),
    ("the NVRTC remedy will serve it", "NVRTC remedy unavailable"),
    ("would not apply (the NVRTC remedy would load", "[FAIL] NVRTC"),
    ("refuses ptxas", "TRITON_PTXAS_PATH="),
    ("refuses ptxas", "TRITON_PTXAS_BLACKWELL_PATH="),
    ("refuses ptxas", "$ python -m blackwell_compat fetch ptxas"),
    ("native library loads", "[FAIL] torchaudio"),
    ("does not load with torch", "[PASS] torchaudio"),
)


def flat(text: str) -> str:
    """The report as one line: wrapped lines and continued commands joined."""
    return re.sub(r"\s+", " ", re.sub(r" \\\n\s*", " ", text))


def contradictions(text: str) -> list[tuple[str, str]]:
    joined = flat(text)
    return [(a, b) for a, b in CONTRADICTIONS if a in joined and b in joined]


def first_fail(text: str) -> str | None:
    marks = [line for line in text.splitlines() if line.startswith("[FAIL] ")]
    return marks[0][len("[FAIL] ") :].split(":", 1)[0] if marks else None


@pytest.fixture
def fetched(nvrtc_libraries, tmp_path) -> tuple[str, str]:
    """A cache holding the real NVRTC `fetch nvrtc` would leave for this torch: (cache, lib)."""
    from support.nvrtc_cache import fill_cache

    if MAJOR not in CAPABLE:
        pytest.fail(f"torch's CUDA major {MAJOR} has no capable NVRTC among the test wheels")
    version = CAPABLE[MAJOR]
    root = tmp_path / "fetched"
    library = fill_cache(root, nvrtc_libraries[version], version, MAJOR)
    return str(root), library


def test_emulated_sm_121_before_fetch_nvrtc_is_consistent(tmp_path):
    empty = tmp_path / "empty-cache"
    done = doctor(BLACKWELL_COMPAT_EMULATE="sm_121", BLACKWELL_COMPAT_CACHE_DIR=str(empty))
    text = done.stdout
    assert done.returncode == 1, text + done.stderr
    assert contradictions(text) == [], text
    joined = flat(text)
    if "its kernels do not cover sm_121" in joined:  # torch 2.6+cu124: no sm_12x kernels
        assert first_fail(text) == "PyTorch", text
    if "NVRTC remedy unavailable" in joined:  # no toolkit on this machine offers one
        assert "$ python -m blackwell_compat fetch nvrtc" in joined, text
        assert "[FAIL] NVRTC" in joined
    assert "Traceback" not in done.stderr


def test_emulated_sm_121_after_fetch_nvrtc_names_the_cached_library_and_run(fetched):
    cache_dir, library = fetched
    done = doctor(BLACKWELL_COMPAT_EMULATE="sm_121", BLACKWELL_COMPAT_CACHE_DIR=cache_dir)
    text = done.stdout
    assert contradictions(text) == [], text
    joined = flat(text)
    short = CAPABLE[MAJOR].rsplit(".", 1)[0]  # type: ignore[index]
    assert f"the NVRTC remedy will serve it with NVRTC {short} at {library}" in joined, text
    assert "[WARN] NVRTC (run-time compiled kernels)" in joined
    hints = joined.split("How to fix:", 1)[1]
    assert "$ python -m blackwell_compat run -- python your_script.py" in hints
    assert "fetch nvrtc" not in hints
    # apply() asks the remedy first: with the cached library, the op guard would not apply
    # (patches that fix something else than NVRTC, e.g. coqui_tts_fork's checkpoint loading,
    # still would).
    assert re.search(
        r"torch: torch [\d.]+ \(supports >=2\.6\): would not apply \(the NVRTC remedy would "
        r"load NVRTC",
        joined,
    ), text
    # The exit status is the torch build's (no sm_12x kernels in torch 2.6+cu124), not NVRTC's.
    no_kernels = "its kernels do not cover sm_121" in joined
    assert done.returncode == (1 if no_kernels else 0), text
    if no_kernels:
        assert first_fail(text) == "PyTorch"


def test_smoke_after_fetch_nvrtc_runs_the_remedy_it_recommends(fetched):
    cache_dir, _ = fetched
    done = doctor(
        "--json", "--smoke", BLACKWELL_COMPAT_EMULATE="sm_121", BLACKWELL_COMPAT_CACHE_DIR=cache_dir
    )
    smoke = checks(parsed(done))["smoke"]
    assert smoke["status"] == "pass", smoke
    assert "failure reproduced, the NVRTC remedy serves it" in smoke["summary"]
    runs = {r["mode"]: r for r in smoke["data"]["runs"]}
    assert sorted(runs) == ["remedy", "unpatched"]
    assert runs["remedy"]["rungs"] == ["nvrtc-remedy"]
    assert runs["remedy"]["results"] and all(
        r["status"] == "pass" for r in runs["remedy"]["results"] if r["status"] != "skip"
    )
