"""End to end, under emulation (no GPU): a program that never imports blackwell_compat computes
a complex ``abs`` in its main process, in multiprocessing pools (spawn, forkserver, fork), in a
ProcessPoolExecutor and in DataLoader workers (fork and spawn).

- ``BLACKWELL_COMPAT_EMULATE=sm_121`` alone: every one of them fails with the NVRTC error an
  affected GPU raises (the start-up hook turns emulation on in every interpreter, forked
  workers inherit the dispatcher registrations);
- plus ``BLACKWELL_COMPAT_AUTO=1``, or under ``python -m blackwell_compat run --emulate sm_121``:
  every one of them computes the right values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PROGRAM = r"""
import concurrent.futures
import json
import multiprocessing
import sys

import torch
import torch.utils.data

EXPECTED = [5.0, 1.0, 0.0]


def complex_abs(_=None):
    z = torch.tensor([3 + 4j, -1j, 0j], dtype=torch.complex64)
    try:
        values = z.abs().tolist()
    except RuntimeError as exc:
        nvrtc = "invalid value for --gpu-architecture" in str(exc)
        return "nvrtc-error" if nvrtc else f"other error: {exc}"
    return "ok" if values == EXPECTED else f"wrong values {values}"


class Items(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return complex_abs()


def main():
    results = {"main": complex_abs()}
    for method in ("spawn", "forkserver", "fork"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            results[f"pool-{method}"] = pool.apply(complex_abs)
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as executor:
        results["executor-spawn"] = executor.submit(complex_abs).result()
    with concurrent.futures.ProcessPoolExecutor(1) as executor:
        results["executor-default"] = executor.submit(complex_abs).result()
    for method in ("fork", "spawn"):
        loader = torch.utils.data.DataLoader(
            Items(), batch_size=None, num_workers=1, multiprocessing_context=method
        )
        outcomes = set(loader)
        results[f"dataloader-{method}"] = outcomes.pop() if len(outcomes) == 1 else sorted(outcomes)
    results["imported"] = sorted(m for m in sys.modules if m.startswith("blackwell_compat"))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
"""

CONTEXTS = (
    "main",
    "pool-spawn",
    "pool-forkserver",
    "pool-fork",
    "executor-spawn",
    "executor-default",
    "dataloader-fork",
    "dataloader-spawn",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BLACKWELL_COMPAT_", "_BLACKWELL_COMPAT_"))
    }
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("program") / "complex_abs_everywhere.py"
    path.write_text(PROGRAM)  # it names blackwell_compat only to report what got imported
    return str(path)


def outcomes(command: list[str], env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "BlackwellCompatWarning" not in result.stderr, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_emulation_alone_fails_in_every_process(program):
    found = outcomes([sys.executable, program], clean_env(BLACKWELL_COMPAT_EMULATE="sm_121"))
    assert {k: found[k] for k in CONTEXTS} == dict.fromkeys(CONTEXTS, "nvrtc-error")


def test_auto_makes_every_process_pass(program):
    env = clean_env(BLACKWELL_COMPAT_EMULATE="sm_121", BLACKWELL_COMPAT_AUTO="1")
    found = outcomes([sys.executable, program], env)
    assert {k: found[k] for k in CONTEXTS} == dict.fromkeys(CONTEXTS, "ok")
    assert "blackwell_compat.autostart" in found["imported"]


def test_run_makes_every_process_pass(program):
    command = [sys.executable, "-m", "blackwell_compat", "run", "--emulate", "sm_121", "--"]
    found = outcomes([*command, sys.executable, program], clean_env())
    assert {k: found[k] for k in CONTEXTS} == dict.fromkeys(CONTEXTS, "ok")
