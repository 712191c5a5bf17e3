"""Measure what each TorchScript fuser switch does in a live process (issue 20).

For every candidate switch, in a fresh child process: turn CPU fusion on as the observable
stand-in for the GPU fuser (``_jit_override_can_fuse_on_cpu(True)`` and
``_jit_set_te_must_use_llvm_cpu(False)``: the wheels have no LLVM), then

* BEFORE: flip the switch, script a fusible function, call it several times and say whether
  the last executed optimised graph holds a ``prim::TensorExprGroup``;
* AFTER: script and call it until its plan holds a fusion group, flip the switch, call it again
  (also with 2-D inputs, which fail the plan's type guard: the plan read back is still the
  outer one, so "fused" there means the plan kept its group) and script a new function.

The GPU switch (``_jit_override_can_fuse_on_gpu``) cannot fuse anything on the CPU: its rows
show the getters and whether it changes the CPU plan.  What it does on CUDA is inferred from
the sources (the profiling executor asks ``canFuseOnGPU`` when it builds a plan for CUDA
tensors), not observed here.

Usage: python scripts/fuser_switches.py   (prints one table for the torch of this interpreter)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CASES = {
    "none (control)": "pass",
    "_jit_override_can_fuse_on_gpu(False)": "torch._C._jit_override_can_fuse_on_gpu(False)",
    "_jit_override_can_fuse_on_cpu(False)": "torch._C._jit_override_can_fuse_on_cpu(False)",
    "_jit_set_texpr_fuser_enabled(False)": "torch._C._jit_set_texpr_fuser_enabled(False)",
    'torch.jit.fuser("none") context': "CTX = torch.jit.fuser('none'); CTX.__enter__()",
    'torch.jit.fuser("fuser0") context': "CTX = torch.jit.fuser('fuser0'); CTX.__enter__()",
    "torch.jit.enable_fusion(False)": "torch.jit.enable_fusion(False)",
    "PYTORCH_TENSOREXPR_FALLBACK=1": "os.environ['PYTORCH_TENSOREXPR_FALLBACK'] = '1'",
}

CHILD = r"""
import json, os, sys
import torch
torch._C._jit_override_can_fuse_on_cpu(True)
torch._C._jit_set_te_must_use_llvm_cpu(False)

def groups():
    graph = torch.jit.last_executed_optimized_graph()
    return len(graph.findAllNodes("prim::TensorExprGroup", True))

def getters():
    return {
        "gpu": torch._C._jit_can_fuse_on_gpu(),
        "cpu": torch._C._jit_can_fuse_on_cpu(),
        "texpr": torch._C._jit_texpr_fuser_enabled(),
    }

def make():
    @torch.jit.script
    def f(x, y):
        return (x * 2.0 + y).sin() * y - x
    return f

x, y = torch.randn(64), torch.randn(64)
out = {}
switch = sys.argv[1]
when = sys.argv[2]
try:
    if when == "before":
        exec(switch)
        f = make()
        for _ in range(5):
            f(x, y)
        out["groups"] = groups()
    else:
        f = make()
        for _ in range(5):
            f(x, y)
        out["groups_before_switch"] = groups()
        exec(switch)
        for _ in range(3):
            f(x, y)
        out["groups"] = groups()
        x2, y2 = torch.randn(7, 9), torch.randn(7, 9)
        for _ in range(5):
            f(x2, y2)
        out["groups_new_shape"] = groups()
        g = make()
        for _ in range(5):
            g(x, y)
        out["groups_new_function"] = groups()
    out["getters"] = getters()
    exact = torch.equal(f(x, y), (x * 2.0 + y).sin() * y - x)
    out["equal_eager"] = exact
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def run(switch: str, when: str, child: str) -> dict:
    done = subprocess.run(
        [sys.executable, child, switch, when],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}


def _cell(result: dict, key: str) -> str:
    if "error" in result:
        kind = result["error"].split(":", 1)[0]
        return "missing" if kind == "AttributeError" else f"error ({kind})"
    value = result.get(key)
    return "-" if value is None else ("fused" if value else "op by op")


def main() -> None:
    import torch

    print(f"torch {torch.__version__} (python {sys.version.split()[0]})")
    print("stand-in: CPU fusion on (_jit_override_can_fuse_on_cpu(True), te_must_use_llvm_cpu off)")
    head = (
        "switch",
        "before first calls",
        "after: same fn",
        "after: 2-D input",
        "after: new fn",
        "getters gpu/cpu/texpr after",
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        child = os.path.join(folder, "fuser_child.py")  # TorchScript reads the source file
        with open(child, "w", encoding="utf-8") as stream:
            stream.write(CHILD)
        results = {
            name: (run(s, "before", child), run(s, "after", child)) for name, s in CASES.items()
        }
    for name, (before, after) in results.items():
        g = after.get("getters") or {}
        getters = "/".join(str(g.get(k, "-")) for k in ("gpu", "cpu", "texpr"))
        rows.append(
            (
                name,
                _cell(before, "groups"),
                _cell(after, "groups"),
                _cell(after, "groups_new_shape"),
                _cell(after, "groups_new_function"),
                getters if "error" not in after else "",
            )
        )
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    for row in (head, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
