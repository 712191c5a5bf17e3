"""``audit``: every Jiterator call site of a sample program, grouped, counted, and the program's
own output and exit code preserved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from blackwell_compat import audit, emulation, state
from blackwell_compat.cli import main

SAMPLE = textwrap.dedent(
    """
    import sys
    import torch

    def magnitude(x):
        spec = torch.stft(x, 64, window=torch.hann_window(64), return_complex=True)
        return spec.abs()  # site: magnitude

    def phase(x):
        spec = torch.stft(x, 64, window=torch.hann_window(64), return_complex=True)
        return torch.angle(spec)  # site: phase

    torch.manual_seed(0)
    x = torch.randn(1024)
    for _ in range(3):
        m = magnitude(x)
    p = phase(x)
    g = torch.tensor([1.5, 2.5]).lgamma()  # site: lgamma
    print(f"mag={float(m.sum()):.6f} phase={float(p.abs().sum()):.6f} lgamma={float(g.sum()):.6f}")
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    """
)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    state.reset_for_tests()
    assert not emulation.is_active()


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE)
    return path


def _plain_output(path: Path, *args: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True, check=False
    )
    return result.returncode, result.stdout


def test_every_site_is_listed_with_counts_and_the_program_continues(
    sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["audit", "--", str(sample)])
    captured = capsys.readouterr()
    assert status == 1
    # The program's own output is unchanged: every recorded call got the correct result.
    plain_code, plain_stdout = _plain_output(sample)
    assert plain_code == 0
    assert captured.out == plain_stdout
    report = captured.err
    assert "3 call site(s) would fail" in report
    assert "sample.py:7 in magnitude" in report
    assert "sample.py:11 in phase" in report
    assert "sample.py:18 in <module>" in report
    assert "abs [complex64] x 3" in report
    assert "angle [complex64] x 1" in report
    assert "lgamma [float32] x 1" in report
    assert "> return spec.abs()" in report


def test_json_report(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["audit", "--json", "--", str(sample), "3"])
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout holds only the report
    assert status == 1
    assert data["program"]["exit_code"] == 3
    assert data["exit_status"] == 1
    assert "mag=" in captured.err  # the program's stdout went to stderr
    assert "mag=" in data["program"]["stdout_tail"]
    sites = {(s["function"], s["line"]): s for s in data["sites"]}
    magnitude = sites[("magnitude", 7)]
    assert magnitude["calls"] == 3 and magnitude["failing"]
    (use,) = magnitude["ops"]
    assert use["entry"] == "abs" and use["op"] == "aten::abs.out" and use["mode"] == "emulate"
    assert use["kernel"] == "abs_name" and use["source"].endswith("AbsKernel.cu")
    assert use["shapes"] and len(use["shapes"][0][0]) == 2  # (freq, frames)
    assert data["summary"] == {"sites": 3, "failing_sites": 3, "guarded_sites": 0, "calls": 5}


def test_fix_applies_the_patches_and_reports_what_remains(
    sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["audit", "--fix", "--json", "--", str(sample)])
    data = json.loads(capsys.readouterr().out)
    assert status == 0, data["processes"]
    assert data["summary"]["failing_sites"] == 0
    assert data["summary"]["guarded_sites"] == 3
    assert {p["name"]: p["state"] for p in data["patches"]}["torch"] == "applied"
    assert all(u["mode"] == "guard" for s in data["sites"] for u in s["ops"])
    assert _plain_output(sample) == (0, data["program"]["stdout_tail"])


def test_fix_with_the_guard_disabled_leaves_failing_sites(
    sample: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "torch")
    status = main(["audit", "--fix", "--", str(sample)])
    assert status == 1
    assert "remain with every patch applied" in capsys.readouterr().err


def test_clean_program_exits_with_its_own_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "clean.py"
    script.write_text(
        "import sys, torch\n"
        "z = torch.tensor([1 + 1j]) * torch.tensor([2 - 1j])\n"
        "print(torch.view_as_real(z).tolist())\n"
        "sys.exit(4)\n"
    )
    assert main(["audit", "--", str(script)]) == 4
    captured = capsys.readouterr()
    assert "[[3.0, 1.0]]" in captured.out
    assert "No call reaches a Jiterator kernel" in captured.err


def test_uncaught_exception_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "boom.py"
    script.write_text("import torch\ntorch.tensor([2j]).exp()\nraise ValueError('boom')\n")
    assert main(["audit", "--", str(script)]) == 1
    err = capsys.readouterr().err
    assert "ValueError: boom" in err  # the traceback, as Python would print it
    assert "program exit code: 1 (ValueError: boom)" in err
    assert "exp [complex64] x 1" in err


def test_module_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "audited_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import sys, torch\nprint(sys.argv[1:])\nprint(torch.tensor([4, 6]).gcd(torch.tensor(8)))\n"
    )
    monkeypatch.chdir(tmp_path)
    status = main(["audit", "-m", "audited_pkg", "a", "b"])
    captured = capsys.readouterr()
    assert status == 1
    assert "['a', 'b']" in captured.out
    assert "gcd [int64] x 1" in captured.err
    assert "__main__.py:3 in <module>" in captured.err


def test_calls_from_other_threads_and_backward_are_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "threads.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading, torch

            def work():
                torch.tensor([1 + 1j]).sqrt()

            t = threading.Thread(target=work)
            t.start(); t.join()
            z = torch.tensor([3 + 4j], requires_grad=True)
            loss = torch.view_as_real(z * z).sum()
            loss.backward()
            w = torch.tensor([3 + 4j], requires_grad=True)
            torch.view_as_real(w.exp()).sum().backward()
            """
        )
    )
    main(["audit", "--json", "--", str(script)])
    data = json.loads(capsys.readouterr().out)
    found = {(s["function"], u["entry"]) for s in data["sites"] for u in s["ops"]}
    assert ("work", "sqrt") in found
    assert ("<module>", "exp") in found  # forward and backward of exp (exp again)


@pytest.mark.parametrize(
    "argv",
    [
        ["audit"],
        ["audit", "--", "does-not-exist.py"],
        ["audit", "-m", "no_such_module_blackwell"],
        ["audit", "--arch", "volta", "--", "x.py"],
    ],
)
def test_usage_errors_run_nothing(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_command_line_end_to_end(sample: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "audit", "--", str(sample), "0"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 1
    assert result.stdout.startswith("mag=")
    assert "STATUS" in result.stderr and "FAIL" in result.stderr


def test_report_object_api(sample: Path) -> None:
    report = audit.run(audit.Target("script", str(sample), ("5",)))
    assert report.exit_code == 5
    assert report.exit_status == 1
    assert len(report.failing_sites) == 3
    assert report.arch == "sm_121"
    text = audit.render(report)
    assert "program exit code: 5" in text


# -- every process of the program (issue 14, point 9) ----------------------------------------


def _audit_json(script: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    """Run `audit --json` as a user would; stdout must hold exactly one JSON document."""
    result = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "audit", "--json", "--", str(script), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=script.parent,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)  # one document, nothing else


FORKING = textwrap.dedent(
    """
    import os, sys
    import torch

    pid = os.fork()
    if pid == 0:
        torch.tensor([1 + 1j]).exp()  # site: child that ends with os._exit
        os._exit(5)
    os.waitpid(pid, 0)
    pid = os.fork()
    if pid == 0:
        torch.tensor([2.5]).lgamma()  # site: child that runs to the end of the script
    else:
        os.waitpid(pid, 0)
        torch.tensor([4j]).sqrt()  # site: parent
        os.write(1, b"raw write to fd 1\\n")
        print("parent done")
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_fork_children_are_in_the_one_report_and_fd_1_stays_clean(tmp_path: Path) -> None:
    script = tmp_path / "forking.py"
    script.write_text(FORKING)
    code, data = _audit_json(script)
    assert code == 1
    found = {(s["line"], u["entry"]): u["count"] for s in data["sites"] for u in s["ops"]}
    assert found == {(7, "exp"): 1, (12, "lgamma"): 1, (15, "sqrt"): 1}, found
    processes = data["processes"]
    assert processes["audited"] == 3
    assert processes["uncovered"] == []
    states = sorted((c["state"], c["exit_code"]) for c in processes["children"])
    assert states == [("complete", 0), ("complete", 5)]
    assert "parent done" in data["program"]["stdout_tail"]


@pytest.mark.slow
def test_spawn_workers_are_audited_and_a_process_that_cannot_join_is_named(
    tmp_path: Path,
) -> None:
    script = tmp_path / "pool.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, subprocess, sys
            import multiprocessing as mp
            import torch

            def work(n):
                return float(torch.tensor([1.5 + n]).lgamma())  # site: spawn workers

            if __name__ == "__main__":
                with mp.get_context("spawn").Pool(2) as pool:
                    print(pool.map(work, [1, 2, 3]))
                clean = {"PATH": os.environ.get("PATH", "")}
                subprocess.run([sys.executable, "-c", "print('unaudited')"], env=clean)
            """
        )
    )
    code, data = _audit_json(script)
    found = {(s["line"], u["entry"]): u["count"] for s in data["sites"] for u in s["ops"]}
    assert found == {(7, "lgamma"): 3}, found
    assert code == 1  # a failing site comes first
    uncovered = data["processes"]["uncovered"]
    assert len(uncovered) == 1 and "print('unaudited')" in uncovered[0]
    assert data["processes"]["audited"] >= 3  # the program and its two workers


def test_a_process_that_cannot_join_makes_a_clean_audit_incomplete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14, point 9: an audit that misses a process must not say 'all clear' with exit 0."""
    script = tmp_path / "launcher.py"
    script.write_text(
        "import os, subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'pass'], env={'PATH': os.environ['PATH']})\n"
    )
    status = main(["audit", "--", str(script)])
    err = capsys.readouterr().err
    assert status == audit.EXIT_INCOMPLETE == 3
    assert "INCOMPLETE" in err
    assert "No call reaches a Jiterator kernel: this program runs" not in err
    assert "No call reached a Jiterator kernel in the processes audited." in err


@pytest.mark.parametrize(
    ("body", "status", "sites"), [("torch.tensor([2j]).exp()", 1, 1), ("", 5, 0)]
)
def test_a_program_that_ends_with_os_exit_is_still_reported(
    tmp_path: Path, body: str, status: int, sites: int
) -> None:
    script = tmp_path / "exits.py"
    script.write_text(f"import os, torch\n{body}\nprint('bye', flush=True)\nos._exit(5)\n")
    code, data = _audit_json(script)
    assert code == status == data["exit_status"]
    assert data["program"]["exit_code"] == 5
    assert data["program"]["error"] == "the program ended with os._exit(5)"
    assert data["summary"]["sites"] == sites
    assert "bye" in data["program"]["stdout_tail"]
    # The text report too, on stderr after the program's output.
    result = subprocess.run(
        [sys.executable, "-m", "blackwell_compat", "audit", "--", str(script)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == status
    assert result.stdout == "bye\n"
    assert "program exit code: 5 (the program ended with os._exit(5))" in result.stderr


@pytest.mark.slow
def test_a_spawn_worker_that_cannot_join_is_counted(tmp_path: Path) -> None:
    """multiprocessing starts spawn interpreters without an audit event: they are counted too."""
    script = tmp_path / "lost_worker.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            import multiprocessing as mp

            if __name__ == "__main__":
                os.environ.pop("_BLACKWELL_COMPAT_AUDIT")  # as an interpreter without the hook
                p = mp.get_context("spawn").Process(target=print, args=("worker",))
                p.start()
                p.join()
            """
        )
    )
    code, data = _audit_json(script)
    assert code == audit.EXIT_INCOMPLETE
    (uncovered,) = data["processes"]["uncovered"]
    assert "1 Python process(es) the program started did not join" in uncovered
    assert "multiprocessing" in uncovered
    assert any(s["kind"] == "multiprocessing" for s in data["processes"]["started"])


# -- fused kernels and user Jiterator kernels (issue 20) ------------------------------------------

ROBOT = textwrap.dedent(
    """
    import os
    import torch

    if os.environ.get("GPU_FUSER_OFF"):
        torch._C._jit_override_can_fuse_on_gpu(False)


    @torch.jit.script
    def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w1, x1, y1, z1 = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
        w2, x2, y2, z2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        w = w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2
        x = w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2
        y = w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2
        z = w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2
        return torch.stack([w, x, y, z], dim=-1)


    @torch.jit.script
    def normalize(q: torch.Tensor) -> torch.Tensor:
        return q / q.norm(p=2, dim=-1).clamp(min=1e-9).unsqueeze(-1)


    @torch.jit.script
    def wrap_to_pi(angles: torch.Tensor) -> torch.Tensor:
        return torch.atan2(torch.sin(angles), torch.cos(angles))


    def step(q, dq, yaw):
        q = normalize(quat_mul(q, dq))  # site: step
        return q, wrap_to_pi(yaw + 0.1)  # site: wrap


    torch.manual_seed(0)
    q, dq, yaw = torch.randn(32, 4), torch.randn(32, 4), torch.randn(32)
    for _ in range(4):
        q, yaw = step(q, dq, yaw)
    print(f"q={float(q.sum()):.6f} yaw={float(yaw.sum()):.6f}")
    """
)


def test_fused_kernel_sites_text_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "robot.py"
    script.write_text(ROBOT)
    status = main(["audit", "--", str(script)])
    text = capsys.readouterr().err
    assert status == 1
    assert "2 call site(s) would fail" in text
    assert "robot.py:31 in step" in text and "robot.py:32 in step" in text
    assert "fused fused_mul_mul_add_m_<hash> in quat_mul [float32] x 3" in text
    assert "fused fused_sin_cos_atan2 in wrap_to_pi [float32] x 3" in text
    assert "> q = normalize(quat_mul(q, dq))  # site: step" in text
    assert "fused ops of fused_clamp_unsqueeze_div: aten::clamp, aten::unsqueeze, aten::div" in text
    assert "fused ops of fused_mul_mul_add_m_<hash>: aten::mul, aten::mul, aten::add," in text
    assert ", ... (28 ops) (at " in text  # a long chain is abbreviated (JSON: all of them)
    assert "run a fused kernel of a scripted function" in text

    status = main(["audit", "--json", "--", str(script)])
    data = json.loads(capsys.readouterr().out)
    assert status == 1 and data["program"]["exit_code"] == 0
    sites = {s["line"]: s for s in data["sites"]}
    assert sorted(sites) == [31, 32]
    uses = {u["entry"]: u for u in sites[31]["ops"]}
    assert set(uses) == {"quat_mul", "normalize"}
    norm = uses["normalize"]
    assert norm["op"] == "prim::TensorExprGroup" and norm["kind"] == "fused"
    assert norm["kernel"] == "fused_clamp_unsqueeze_div"
    assert norm["fused_ops"] == ["aten::clamp", "aten::unsqueeze", "aten::div"]
    assert norm["mode"] == "emulate" and norm["served_by"] == "unserved"
    assert norm["dtype"] == "float32" and norm["count"] == 3  # the 1st call only profiles
    assert norm["source"] == f"{script}:22"
    assert uses["quat_mul"]["kernel"].endswith("_<hash>")  # over 40 characters, as NNC names it
    assert uses["quat_mul"]["fused_ops"].count("aten::mul") == 16
    (wrap,) = sites[32]["ops"]
    assert wrap["entry"] == "wrap_to_pi" and wrap["fused_ops"] == [
        "aten::sin",
        "aten::cos",
        "aten::atan2",
    ]


def test_fix_shows_the_rung_that_serves_fused_sites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "robot.py"
    script.write_text(ROBOT)
    monkeypatch.setenv("GPU_FUSER_OFF", "1")
    try:
        status = main(["audit", "--fix", "--", str(script)])
    finally:
        import torch

        torch._C._jit_override_can_fuse_on_gpu(True)
    text = capsys.readouterr().err
    assert status == 0
    assert "fuser    " in text and "FAIL" not in text
    assert "2 call site(s) of scripted functions run unfused" in text

    monkeypatch.delenv("GPU_FUSER_OFF")
    state.nvrtc_served_archs = frozenset({"sm_121"})  # as the NVRTC remedy sets it
    status = main(["audit", "--json", "--", str(script)])
    data = json.loads(capsys.readouterr().out)
    assert status == 0
    served = {u["served_by"] for s in data["sites"] for u in s["ops"]}
    assert served == {"remedy"}
    assert data["summary"]["failing_sites"] == 0


def test_user_jiterator_kernel_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "gain.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch

            gain = torch.cuda.jiterator._create_jit_fn(
                "template <typename T> T my_gain(T x, T g) { return x * g; }", g=2.0
            )
            print(gain(torch.randn(3, 2)))  # site: gain
            """
        )
    )
    status = main(["audit", "--json", "--", str(script)])
    data = json.loads(capsys.readouterr().out)
    assert status == 1
    assert "nvrtc: error: invalid value for --gpu-architecture" in data["program"]["error"]
    (site,) = data["sites"]
    assert site["line"] == 7 and site["failing"]
    (use,) = site["ops"]
    assert use["kind"] == "user" and use["op"] == "torch.cuda.jiterator"
    assert use["kernel"] == "my_gain" and use["dtype"] == "float32"
    assert use["shapes"] == [[[3, 2]]]
    main(["audit", "--", str(script)])
    text = capsys.readouterr().err
    assert "jiterator my_gain (user kernel) [float32] x 1" in text
    assert "only the NVRTC remedy serves those" in text


def test_model_names_match_the_emulation() -> None:
    from blackwell_compat import fused_kernels, user_kernels
    from blackwell_compat.audit import model
    from blackwell_compat.ops import spec

    assert model.FUSED_OP == fused_kernels.FUSED_OP
    assert model.USER_OP == user_kernels.USER_OP
    modes = {spec.MODE_EMULATE, spec.MODE_GUARD, spec.MODE_FUSER, spec.MODE_REMEDY}
    assert set(model.RUNGS) == modes


GPU_PROGRAM = textwrap.dedent(
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.linspace(-2, 2, 8, device=device)
    shape = torch.tensor(x.shape).prod()  # a CPU shape tensor: never a GPU call
    y = torch.exp2(x)  # site: device exp2
    print(device, int(shape), f"{float(y.sum().cpu()):.4f}")
    """
)


def test_audit_device_cuda_runs_the_gpu_path_and_lists_only_device_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "gpu_program.py"
    script.write_text(GPU_PROGRAM)
    assert main(["audit", "--device", "cuda", "--json", "--", str(script)]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["device"] == "cuda" and report["arch"] == "sm_121"
    assert "cuda 8 " in captured.err  # the program took its GPU branch, with correct results
    (site,) = report["sites"]
    assert site["line"] == 7 and site["failing"]
    (use,) = site["ops"]
    assert use["entry"] == "exp2" and use.get("device", "cuda:0") == "cuda:0"
    assert not torch_cuda_available_after()
    # The default device (cpu) runs the CPU branch: the shape product is a (false) site there.
    assert main(["audit", "--json", "--", str(script)]) == 1
    cpu_report = json.loads(capsys.readouterr().out)
    assert cpu_report["device"] == "cpu"
    assert {o["entry"] for s in cpu_report["sites"] for o in s["ops"]} == {"exp2", "prod"}


def torch_cuda_available_after() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def test_audit_device_bad_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:  # argparse's own usage error
        main(["audit", "--device", "gpu", "--", "x.py"])
    assert info.value.code == 2
    assert "--device: invalid choice: 'gpu' (choose from" in capsys.readouterr().err
