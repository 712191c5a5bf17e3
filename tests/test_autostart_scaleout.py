"""Scale-out workers under emulation (no GPU): ``torchrun --nproc-per-node 2`` (gloo on the CPU,
loopback only) and a local Ray cluster started by the test on 127.0.0.1 (tasks and an actor).

Each worker computes complex ``abs`` and real ``lgamma`` (Jiterator ops on an affected GPU) on CPU
tensors standing in for the emulated sm_121, compares them with the unpatched CPU result computed
in the same process outside the emulation, and reports which rung serves it (``bc.ladder()``) and
what ``bc.status()`` says of the op guard.  The torchrun workers also sum their results with
``all_reduce``, which rank 0 checks against the references of every rank.  Each way of turning
it on is checked:

- ``python -m blackwell_compat run --emulate sm_121 -- torchrun ...`` (inherited environment):
  the patches serve every worker (the test session keeps the NVRTC remedy off);
- ``BLACKWELL_COMPAT_AUTO=1`` plus ``BLACKWELL_COMPAT_NVRTC`` naming a capable NVRTC: the NVRTC
  remedy serves every worker, nothing is patched;
- Ray: ``runtime_env={"env_vars": {...}}`` from a driver without the variables, and the
  driver's own environment inherited by the workers (driver under ``run``);
- without ``AUTO`` every worker fails with the NVRTC error (the checks can fail);
- ``audit`` over the whole job lists the workers' call site and every worker process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from support.environ import clean_env

from blackwell_compat.probing.locate import locate_torch

pytestmark = pytest.mark.slow

MAJOR = locate_torch().cuda_major
CAPABLE = {12: "12.9.86", 13: "13.0.88"}
needs_cuda_torch = pytest.mark.skipif(
    MAJOR not in CAPABLE, reason="needs a CUDA 12 or 13 build of torch (for a capable NVRTC)"
)
MARK = "@@scaleout@@ "
RUN = [sys.executable, "-m", "blackwell_compat", "run"]

WORK = '''
import json, os, sys


def inputs(rank):
    import torch

    gen = torch.Generator().manual_seed(1234 + rank)
    z = torch.complex(torch.randn(61, generator=gen), torch.randn(61, generator=gen))
    special = [complex("inf+1j"), complex(-0.0, 0.0), complex("nan"), 1e-40 + 0j, 3e38 + 4e38j]
    z = torch.cat([z, torch.tensor(special, dtype=torch.complex64)])[::2]  # strided
    x = torch.linspace(-5.5, 30.0, 33)  # lgamma, real float32: a Jiterator op too
    return z, x


def reference(rank):
    """The unpatched CPU result, outside the emulation (what the real CPU computes)."""
    from blackwell_compat.emulation import suspended

    z, x = inputs(rank)
    with suspended():
        return z.abs(), x.lgamma()


def same(got, want):
    import torch

    return (
        got.dtype == want.dtype
        and got.shape == want.shape
        and got.stride() == want.stride()
        and bool(torch.isclose(got, want, rtol=1.3e-6, atol=1e-5, equal_nan=True).all())
        and bool(((torch.signbit(got) == torch.signbit(want)) | torch.isnan(want)).all())
    )


def work(rank):
    import torch
    import blackwell_compat as bc

    z, x = inputs(rank)
    try:
        got = (z.abs(), x.lgamma())
        outcome = "ok"
    except RuntimeError as exc:
        got = None
        nvrtc = "invalid value for --gpu-architecture" in str(exc)
        outcome = "nvrtc-error" if nvrtc else f"error: {exc}"
    want = reference(rank)
    services = bc.ladder()
    guard = {s.name: s for s in bc.status()}["torch"]
    return {
        "rank": rank,
        "pid": os.getpid(),
        "outcome": outcome,
        "match": got is not None and all(same(g, w) for g, w in zip(got, want)),
        "rungs": [s.rung for s in services],
        "sources": [s.source for s in services],
        "planned": [s.planned for s in services],
        "guard": [guard.state, guard.reason, *guard.notes],
        "got": got,
    }
'''

TORCHRUN_WORKER = (
    WORK
    + """

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
result = work(rank)
got = result.pop("got")
total = got[0].clone() if got is not None else torch.zeros(31)
dist.all_reduce(total)  # the sum of every rank's |z|
expected = sum(reference(r)[0] for r in range(world))
result["all_reduce_matches"] = same(total, expected)
gathered = [None] * world
dist.all_gather_object(gathered, result)
if rank == 0:
    print(sys.argv[1] + json.dumps(gathered), flush=True)
dist.barrier()
# No destroy_process_group(): on torch 2.6 its gloo teardown can deadlock (the main thread joins
# gloo's worker thread while holding the GIL, and that thread needs the GIL to free the last
# all_gather tensors; seen here as two workers blocked forever). Every rank is done after the
# barrier, so leave without the teardown.
sys.stdout.flush()
os._exit(0)
"""
)

RAY_DRIVER = (
    WORK
    + """

import ray


@ray.remote
def task(rank):
    result = work(rank)
    result.pop("got")
    return result


@ray.remote
class Worker:
    def run(self, rank):
        result = work(rank)
        result.pop("got")
        return result


def main():
    mark, temp_dir, env_vars = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    options = {"runtime_env": {"env_vars": env_vars}} if env_vars else {}
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=2,
        object_store_memory=100 * 2**20,
        _temp_dir=temp_dir,
        **options,
    )
    try:
        results = ray.get([task.remote(0), task.remote(1)], timeout=240)
        results.append(ray.get(Worker.remote().run.remote(2), timeout=240))
    finally:
        ray.shutdown()
    print(mark + json.dumps(results), flush=True)


main()
"""
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below *pid* (torchrun starts its workers in sessions of their own, so
    killing the job's process group would miss them)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def launch(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a job within ten minutes; past that, kill it with every worker it started (a hung
    job must not leave workers behind) and fail."""
    with subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as job:
        try:
            out, err = job.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for pid in [*descendants(job.pid), job.pid]:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            out, err = job.communicate()
            pytest.fail(
                f"job timed out after 600 s\nstdout:\n{out[-4000:]}\nstderr:\n{err[-6000:]}"
            )
    return subprocess.CompletedProcess(argv, job.returncode, out, err)


def results_of(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    assert done.returncode == 0 and lines, (
        f"exit {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-6000:]}"
    )
    return json.loads(lines[-1][len(MARK) :])  # type: ignore[no-any-return]


def job_env(**extra: str) -> dict[str, str]:
    """The test session's environment (NVRTC remedy off, its verdict store) for a job on the
    loopback interface, one thread per worker, no Ray telemetry; the library's test processes
    get two minutes (a loaded CI machine can take longer than the default 20 s to load an
    NVRTC, and the remedy would then, rightly, count it as unusable)."""
    return clean_env(
        BLACKWELL_COMPAT_CACHE_DIR=os.environ["BLACKWELL_COMPAT_CACHE_DIR"],
        BLACKWELL_COMPAT_PROBE_TIMEOUT="120",
        OMP_NUM_THREADS="1",
        GLOO_SOCKET_IFNAME="lo",
        RAY_USAGE_STATS_ENABLED="0",
        **extra,
    )


def assert_served(results: list[dict[str, Any]], rung: str, count: int) -> None:
    assert len(results) == count and len({r["pid"] for r in results}) == count, results
    for result in results:
        assert result["outcome"] == "ok", result
        assert result["match"] is True, result
        assert result["rungs"] == [rung] and result["planned"] == [False], result
        state, reason, *notes = result["guard"]
        if rung == "patches":
            assert state == "applied", result
            (ladder,) = [n for n in notes if n.startswith("ladder: ")]
            head = "ladder: emulated sm_121 (CPU tensors): patches ("
            assert ladder.startswith(head), result
            assert "torch" in ladder[len(head) :].split(")")[0].split(", "), result
        else:
            assert state == "skipped" and "served by the NVRTC remedy" in reason, result


@pytest.fixture
def torchrun(tmp_path: Path):
    """``torchrun(*prefix)``: the command of a two-worker job, after *prefix*."""
    script = tmp_path / "worker.py"
    script.write_text(TORCHRUN_WORKER)

    def command(*prefix: str, launcher: tuple[str, ...] = (sys.executable, "-m")) -> list[str]:
        audited = "audit" in launcher  # audit -m MODULE -- ARGS: the module's options after --
        return [
            *prefix,
            *launcher,
            "torch.distributed.run",
            *(["--"] if audited else []),
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            str(script),
            MARK,
        ]

    return command


# -- torchrun ----------------------------------------------------------------------------------


def test_torchrun_workers_under_run_are_served_by_the_patches(torchrun, tmp_path):
    done = launch(torchrun(*RUN, "--emulate", "sm_121", "--"), job_env(), tmp_path)
    results = results_of(done)
    assert_served(results, "patches", 2)
    assert all(r["all_reduce_matches"] for r in results), results
    assert "BlackwellCompatWarning" not in done.stderr


@needs_cuda_torch
def test_torchrun_workers_with_auto_are_served_by_the_nvrtc_remedy(
    torchrun, tmp_path, nvrtc_libraries
):
    library = nvrtc_libraries[CAPABLE[MAJOR]]  # type: ignore[index]
    env = job_env(
        BLACKWELL_COMPAT_AUTO="1", BLACKWELL_COMPAT_EMULATE="sm_121", BLACKWELL_COMPAT_NVRTC=library
    )
    results = results_of(launch(torchrun(), env, tmp_path))
    assert_served(results, "nvrtc-remedy", 2)
    assert all(r["all_reduce_matches"] for r in results), results
    assert all(library in r["sources"][0] for r in results), results


def test_torchrun_workers_fail_without_auto(torchrun, tmp_path):
    results = results_of(launch(torchrun(), job_env(BLACKWELL_COMPAT_EMULATE="sm_121"), tmp_path))
    assert [r["outcome"] for r in results] == ["nvrtc-error", "nvrtc-error"], results
    assert not any(r["match"] or r["all_reduce_matches"] for r in results)
    # Before apply() has run, ladder() says what apply() would do.
    assert all(r["planned"] == [True] for r in results), results


def test_audit_covers_the_torchrun_workers(torchrun, tmp_path):
    audit = (sys.executable, "-m", "blackwell_compat", "audit", "--json", "-m")
    done = launch(torchrun(launcher=audit), job_env(), tmp_path)
    assert done.returncode == 1, done.stderr[-4000:]  # failing sites found
    report = json.loads(done.stdout)
    workers = [c for c in report["processes"]["children"] if "worker.py" in " ".join(c["argv"])]
    assert len({c["pid"] for c in workers}) == 2, report["processes"]
    assert all(c["state"] == "complete" for c in workers), workers
    assert report["processes"]["uncovered"] == []
    sites = {(Path(s["file"]).name, s["code"]): s for s in report["sites"]}
    for code in ("got = (z.abs(), x.lgamma())",):
        site = sites[("worker.py", code)]
        assert site["failing"] and site["calls"] == 2 * 2, site  # two ops in each of two workers


# -- Ray ------------------------------------------------------------------------------------------


@pytest.fixture
def ray_job(tmp_path: Path):
    script = tmp_path / "driver.py"
    script.write_text(RAY_DRIVER)
    # Ray's unix sockets live under its temp dir; their paths must stay short (107 bytes).
    short = tempfile.mkdtemp(prefix="bcray-")

    def command(env_vars: dict[str, str], *prefix: str) -> list[str]:
        python = [] if "audit" in prefix else [sys.executable]  # audit -- SCRIPT runs a script
        return [*prefix, *python, str(script), MARK, short, json.dumps(env_vars)]

    yield command
    subprocess.run(["rm", "-rf", short], check=False)


def ray_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"  # Ray writes its cluster token under ~/.ray
    home.mkdir(exist_ok=True)
    return job_env(HOME=str(home), **extra)


@pytest.mark.targets
@needs_cuda_torch
def test_ray_tasks_and_actors_get_it_through_runtime_env(ray_job, tmp_path, nvrtc_libraries):
    library = nvrtc_libraries[CAPABLE[MAJOR]]  # type: ignore[index]
    env_vars = {
        "BLACKWELL_COMPAT_AUTO": "1",
        "BLACKWELL_COMPAT_EMULATE": "sm_121",
        "BLACKWELL_COMPAT_NVRTC": library,
    }
    results = results_of(launch(ray_job(env_vars), ray_env(tmp_path), tmp_path))
    assert_served(results, "nvrtc-remedy", 3)
    assert all(library in r["sources"][0] for r in results), results


@pytest.mark.targets
def test_ray_workers_inherit_it_from_a_driver_under_run(ray_job, tmp_path):
    done = launch(ray_job({}, *RUN, "--emulate", "sm_121", "--"), ray_env(tmp_path), tmp_path)
    assert_served(results_of(done), "patches", 3)


@pytest.mark.targets
def test_ray_workers_fail_without_auto(ray_job, tmp_path):
    env_vars = {"BLACKWELL_COMPAT_EMULATE": "sm_121"}
    results = results_of(launch(ray_job(env_vars), ray_env(tmp_path), tmp_path))
    assert [r["outcome"] for r in results] == ["nvrtc-error"] * 3, results


@pytest.mark.targets
def test_audit_covers_the_ray_workers(ray_job, tmp_path):
    argv = ray_job({}, sys.executable, "-m", "blackwell_compat", "audit", "--json", "--")
    done = launch(argv, ray_env(tmp_path), tmp_path)
    assert done.returncode == 1, done.stderr[-4000:]  # failing sites found
    report = json.loads(done.stdout)
    # With --json the program's own output goes to stderr.
    results = results_of(subprocess.CompletedProcess(argv, 0, done.stderr, ""))
    audited = {c["pid"]: c for c in report["processes"]["children"]}
    for result in results:  # every task and actor process joined the audit
        assert result["pid"] in audited, (result, sorted(audited))
        assert "default_worker.py" in " ".join(audited[result["pid"]]["argv"])
    assert report["processes"]["uncovered"] == []
    site = {(Path(s["file"]).name, s["code"]): s for s in report["sites"]}[
        ("driver.py", "got = (z.abs(), x.lgamma())")
    ]
    assert site["failing"] and site["calls"] == 3 * 2, site  # two ops in each of three workers
