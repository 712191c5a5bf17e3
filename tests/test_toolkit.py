"""The public patch-author toolkit: router, CPU round trip, drift checks, declarations."""

from __future__ import annotations

import collections
import inspect
import sys
import types
from typing import Any, NamedTuple

import pytest
import torch

import blackwell_compat as bc
from blackwell_compat import toolkit
from blackwell_compat.toolkit import (
    AS_REWRITE,
    DeclaredPatch,
    Expect,
    PatchContext,
    Rewrite,
    move_tensors,
    route,
    served,
    served_device,
)

ARCH = "sm_121"
JIT_ERROR = "invalid value for --gpu-architecture"


def _complex_energy(signal: Any, n_fft: int = 16) -> Any:
    """Energy per bin with complex abs (a Jiterator kernel: fails under emulation)."""
    return torch.fft.rfft(signal, n=n_fft).abs() ** 2


def _real_energy(signal: Any, n_fft: int = 16) -> Any:
    return torch.view_as_real(torch.fft.rfft(signal, n=n_fft)).pow(2).sum(-1)


# -- served / router ----------------------------------------------------------------------------


def test_served_follows_emulation_through_nested_containers() -> None:
    x = torch.ones(3)
    nested = {"a": [1, (None, x)], "b": "text"}
    assert not served(x) and not served(nested) and served_device(nested) is None
    with bc.emulate(ARCH):
        assert served(x) and served(torch.device("cpu"))
        assert served_device(nested) == torch.device("cpu")
        assert not served({"a": [1, "x"], "b": None}) and not served(3.0)
        assert not served(torch.ones(2, device="meta"))  # not a served device
    assert not served(x)


def test_router_sends_served_tensors_to_the_rewrite_and_others_to_the_original() -> None:
    calls: list[str] = []

    def original(signal: Any, n_fft: int = 16) -> Any:
        calls.append("original")
        return _complex_energy(signal, n_fft)

    def rewrite(signal: Any, n_fft: int = 16) -> Any:
        calls.append("rewrite")
        return _real_energy(signal, n_fft)

    routed = route(original, rewrite)
    x = torch.linspace(-1, 1, 32)
    reference = routed(x)
    assert calls == ["original"]
    with bc.emulate(ARCH):
        with pytest.raises(RuntimeError, match=JIT_ERROR):
            original(x)
        calls.clear()
        torch.testing.assert_close(routed(x), reference)
        torch.testing.assert_close(routed(signal=x, n_fft=16), reference)  # by keyword too
        assert calls == ["rewrite", "rewrite"]
        calls.clear()
        routed(x.to("meta"))  # a device that is not served reaches the original
        assert calls == ["original"]
    assert inspect.signature(routed) == inspect.signature(original)
    assert routed.__wrapped__ is original  # type: ignore[attr-defined]
    assert "blackwell-compat" in (routed.__doc__ or "")


def test_router_decides_on_the_named_argument_or_a_selector() -> None:
    def original(scale: float, signal: Any) -> str:
        return "original"

    def rewrite(scale: float, signal: Any) -> str:
        return "rewrite"

    by_name = route(original, rewrite, on="signal")
    by_selector = route(original, rewrite, on=lambda scale, signal: [signal])
    x = torch.ones(2)
    with bc.emulate(ARCH):
        assert by_name(2.0, x) == "rewrite" and by_name(2.0, signal=x) == "rewrite"
        assert by_name(x, 2.0) == "original"  # the first argument does not decide
        assert by_selector(1.0, x) == "rewrite" and by_selector(1.0, None) == "original"
        # Arguments the selector refuses reach the original, which says what is wrong.
        with pytest.raises(TypeError, match=r"original\(\) takes 2 positional arguments"):
            by_selector(1.0, x, 3)


def test_round_trip_runs_the_original_outside_emulation() -> None:
    x = torch.linspace(-1, 1, 32, requires_grad=True)
    reference = _complex_energy(x)
    (want,) = torch.autograd.grad(reference.sum(), x)
    routed = route(_complex_energy, round_trip=True)
    with bc.emulate(ARCH):
        out = routed(x)
        torch.testing.assert_close(out, reference)
        (got,) = torch.autograd.grad(out.sum(), x)  # backward outside emulation too
    torch.testing.assert_close(got, want)


def test_route_refuses_unclear_routes() -> None:
    with pytest.raises(TypeError, match="give a rewrite or round_trip=True"):
        route(_complex_energy)
    with pytest.raises(TypeError, match=r"on='sig' is not one of its parameters \(signal, n_fft"):
        route(_complex_energy, _real_energy, on="sig")
    with pytest.raises(TypeError, match="no parameter at position 5"):
        route(_complex_energy, _real_energy, on=5)


# -- the CPU round trip --------------------------------------------------------------------------


class _Pair(NamedTuple):
    left: Any
    right: Any


def test_move_tensors_reaches_every_container_and_keeps_their_types() -> None:
    a, b, c, d = (torch.full((2,), float(i)) for i in range(4))
    other = torch.ones(1, device="meta")  # on another device: left alone
    counts = collections.defaultdict(list, {"d": [d]})
    value = {
        "list": [a, (b, "s")],
        "pair": _Pair(c, {"deep": [[a]]}),
        "ordered": collections.OrderedDict(x=b),
        "counts": counts,
        "other": other,
        "plain": 7,
    }
    moved = move_tensors(value, torch.device("cpu"), torch.device("meta"))
    assert moved["list"][0].device.type == "meta" and moved["list"][1][0].device.type == "meta"
    assert isinstance(moved["list"][1], tuple) and moved["list"][1][1] == "s"
    assert isinstance(moved["pair"], _Pair) and moved["pair"].left.device.type == "meta"
    assert moved["pair"].right["deep"][0][0].device.type == "meta"
    assert type(moved["ordered"]) is collections.OrderedDict
    assert moved["ordered"]["x"].device.type == "meta"
    assert type(moved["counts"]) is collections.defaultdict
    assert moved["counts"].default_factory is list and moved["counts"]["d"][0].is_meta
    assert moved["other"] is other and moved["plain"] == 7
    assert a.device.type == "cpu"  # the input is not changed


def test_map_tensors_converts_every_tensor() -> None:
    value = ([torch.ones(1)], {"k": (torch.zeros(1), 3)})
    mapped = toolkit.map_tensors(value, lambda t: t + 1)
    assert mapped[0][0].item() == 2.0 and mapped[1]["k"][0].item() == 1.0
    assert mapped[1]["k"][1] == 3 and isinstance(mapped, tuple)


def test_call_on_cpu_moves_nested_arguments_and_results_back() -> None:
    seen: list[Any] = []

    def fn(items: dict[str, list[Any]]) -> dict[str, Any]:
        seen.append(items["xs"][0].device)
        return {"sum": [items["xs"][0] + items["xs"][1]]}

    xs = [torch.ones(2), torch.ones(2)]
    out = toolkit.call_on_cpu(fn, torch.device("cpu"), ({"xs": xs},), {})
    assert seen == [torch.device("cpu")]
    torch.testing.assert_close(out["sum"][0], torch.full((2,), 2.0))


# -- drift -------------------------------------------------------------------------------------


def _module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


TARGET_SOURCE = """
import torch
N_FFT = 16
def energy(signal, n_fft=16):
    return torch.fft.rfft(signal, n=n_fft).abs() ** 2 + 1e-10
class Box:
    def energy(self, signal, n_fft=16):
        return torch.fft.rfft(signal, n=n_fft).abs()
"""


def test_expectations_describe_each_drift() -> None:
    good = _module("acme_dsp", TARGET_SOURCE)
    expectations = [
        Expect("acme_dsp", "energy", params=("signal", "n_fft"), names=("rfft", "abs")),
        Expect("acme_dsp", "energy", signature=_real_energy, constants=(1e-10,)),
        Expect("acme_dsp", "Box.energy", params=("self", "signal", "n_fft"), names=("abs",)),
        Expect("acme_dsp", "N_FFT", value=16),
        Expect("acme_dsp", "Box", is_class=True),
    ]
    assert [e.problems(good) for e in expectations] == [[], [], [], [], []]
    drifted = _module(
        "acme_dsp",
        TARGET_SOURCE.replace(".abs() ** 2 + 1e-10", ".real ** 2")
        .replace("N_FFT = 16", "N_FFT = 32")
        .replace("def energy(signal, n_fft=16)", "def energy(signal, n_fft=32, norm=None)"),
    )
    assert [e.problems(drifted) for e in expectations] == [
        [
            "acme_dsp.energy takes (signal, n_fft, norm), expected (signal, n_fft)",
            "acme_dsp.energy no longer uses abs",
        ],
        [
            "acme_dsp.energy takes (signal, n_fft, norm), expected (signal, n_fft)",
            "acme_dsp.energy no longer uses the constant(s) 1e-10",
        ],
        [],
        ["acme_dsp.N_FFT is 32, expected 16"],
        [],
    ]
    empty = types.ModuleType("acme_dsp")
    assert [e.problems(empty) for e in expectations] == [
        ["acme_dsp.energy is missing"],
        ["acme_dsp.energy is missing"],
        ["acme_dsp.Box is missing"],
        ["acme_dsp.N_FFT is None, expected 16"],
        ["acme_dsp.Box is missing"],
    ]


def test_changed_default_is_drift() -> None:
    changed = _module("acme_dsp", TARGET_SOURCE.replace("n_fft=16)", "n_fft=8)", 1))
    assert Expect("acme_dsp", "energy", signature=_real_energy).problems(changed) == [
        "acme_dsp.energy: default of n_fft is 8, expected 16"
    ]


def test_version_expectation(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("acme_dsp")
    expect = Expect("acme_dsp", distribution="acme-dsp", supported=">=1,<2")
    monkeypatch.setattr(toolkit.drift, "installed_version", lambda name: "1.5")
    assert expect.problems(module) == []
    monkeypatch.setattr(toolkit.drift, "installed_version", lambda name: None)
    assert expect.problems(module) == [
        "acme-dsp (version unknown) is outside the supported range '>=1,<2'"
    ]


# -- declarations --------------------------------------------------------------------------------


@pytest.fixture
def acme_dsp() -> Any:
    module = _module("acme_dsp", TARGET_SOURCE)
    sys.modules["acme_dsp"] = module
    yield module
    del sys.modules["acme_dsp"]


class AcmePatch(DeclaredPatch):
    name = "acme_dsp"
    summary = "test patch"
    strategies = ("real", "cpu")
    declarations = (
        Rewrite(
            Expect("acme_dsp", "energy", signature=AS_REWRITE, names=("rfft", "abs")),
            rewrite=_real_energy,
            round_trip=("cpu",),
            note="energy: real-valued on served devices",
        ),
        Rewrite(
            Expect("acme_dsp", "Box.energy"),
            build=lambda module, original: lambda self, signal, n_fft=16: "box rewrite",
            on="signal",
            strategies=("real",),
            skipped_note="Box.energy is left alone by the cpu strategy",
        ),
        Expect("acme_dsp", "N_FFT", value=16),
    )


def test_declared_patch_checks_applies_and_reverts(acme_dsp: types.ModuleType) -> None:
    patch = AcmePatch()
    assert patch.modules == ("acme_dsp",)  # derived from the declarations
    assert patch.check(acme_dsp) == []
    function, box = acme_dsp.energy, acme_dsp.Box()
    method = acme_dsp.Box.__dict__["energy"]
    captured = acme_dsp.energy
    x = torch.linspace(-1, 1, 32)
    reference = _complex_energy(x)
    ctx = PatchContext(patch="acme_dsp", strategy="real")
    patch.apply(acme_dsp, ctx)
    assert ctx.notes == ["energy: real-valued on served devices"]
    assert acme_dsp.energy is function and toolkit.is_swapped(function)  # replaced in place
    with bc.emulate(ARCH):
        torch.testing.assert_close(captured(x), reference)
        assert box.energy(x) == "box rewrite"  # an instance built before apply()
    assert box.energy(x).shape == reference.shape  # not served: the original
    assert ctx.revert() == []
    assert not toolkit.is_swapped(function) and acme_dsp.Box.__dict__["energy"] is method
    with bc.emulate(ARCH), pytest.raises(RuntimeError, match=JIT_ERROR):
        acme_dsp.energy(x)


def test_declared_round_trip_strategy(acme_dsp: types.ModuleType) -> None:
    x = torch.linspace(-1, 1, 32)
    reference = _complex_energy(x)
    ctx = PatchContext(patch="acme_dsp", strategy="cpu")
    AcmePatch().apply(acme_dsp, ctx)
    try:
        assert ctx.notes == [
            "energy: real-valued on served devices",
            "Box.energy is left alone by the cpu strategy",
        ]
        with bc.emulate(ARCH):
            assert torch.equal(acme_dsp.energy(x), reference)  # the original's own kernels
            with pytest.raises(RuntimeError, match=JIT_ERROR):
                acme_dsp.Box().energy(x)
    finally:
        assert ctx.revert() == []


def test_declared_patch_refuses_drift(acme_dsp: types.ModuleType) -> None:
    drifted = _module("acme_dsp", TARGET_SOURCE.replace(".abs()", ".real", 1))
    assert AcmePatch().check(drifted) == ["acme_dsp.energy no longer uses abs"]
    other = types.ModuleType("acme_other")
    assert AcmePatch().check(other) == ["the acme_dsp patch declares nothing for acme_other"]


def test_declared_patch_refuses_an_unknown_strategy(acme_dsp: types.ModuleType) -> None:
    with pytest.raises(bc.ConfigError, match="unknown acme_dsp strategy 'fast'; use one of real"):
        AcmePatch().apply(acme_dsp, PatchContext(patch="acme_dsp", strategy="fast"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give rewrite, build or round_trip"),
        ({"rewrite": _real_energy, "build": lambda m, o: o}, "give rewrite or build, not both"),
        ({"rewrite": 3}, "rewrite must be callable, got int"),
        ({"rewrite": _real_energy, "round_trip": "cpu"}, "round_trip is a sequence"),
        ({"round_trip": ("cpu",), "strategies": ("real", "cpu")}, r"no rewrite for .*'real'"),
        ({"rewrite": _real_energy, "always": True, "on": "x"}, "always=True routes nothing"),
    ],
)
def test_rewrite_declaration_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Rewrite(Expect("acme_dsp", "energy"), **kwargs)


def test_rewrite_target_errors() -> None:
    with pytest.raises(TypeError, match="nothing deeper"):
        Rewrite(Expect("acme_dsp", "A.B.c"), rewrite=_real_energy)
    with pytest.raises(TypeError, match="module must be a non-empty module name"):
        Rewrite(Expect("", "energy"), rewrite=_real_energy)
    with pytest.raises(TypeError, match="distribution and supported go together"):
        Expect("acme_dsp", distribution="acme")
    with pytest.raises(TypeError, match="params and names are sequences"):
        Expect("acme_dsp", "energy", params="signal")
    # The old form, module and attribute as strings, says what to write instead.
    with pytest.raises(TypeError, match=r"Rewrite takes its target as an Expect"):
        Rewrite("acme_dsp", "energy", rewrite=_real_energy)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="names no attribute"):
        Rewrite(Expect("acme_dsp"), rewrite=_real_energy)
    with pytest.raises(TypeError, match="is a function or a method"):
        Rewrite(Expect("acme_dsp", "N_FFT", value=16), rewrite=_real_energy)


def test_as_rewrite_belongs_to_a_rewrites_target_only(acme_dsp: types.ModuleType) -> None:
    loose = Expect("acme_dsp", "energy", signature=AS_REWRITE)
    with pytest.raises(TypeError, match="only the target of a Rewrite"):
        loose.problems(acme_dsp)
    with pytest.raises(TypeError, match="compares with AS_REWRITE, which only the target"):

        class Loose(DeclaredPatch):
            name = "x"
            declarations = (loose,)

    # Resolved by the rewrite: its parameters and defaults are what the target must have.
    def other(signal: Any, n_fft: int = 32) -> Any:
        return signal

    drifted = Rewrite(Expect("acme_dsp", "energy", signature=AS_REWRITE), rewrite=other)
    assert drifted.problems(acme_dsp) != []
    assert Rewrite(loose, rewrite=_real_energy).problems(acme_dsp) == []


def test_declared_patch_class_errors() -> None:
    with pytest.raises(TypeError, match="is neither a Rewrite nor an Expect"):

        class NotADeclaration(DeclaredPatch):
            name = "x"
            declarations = ("acme_dsp.energy",)  # type: ignore[assignment]

    with pytest.raises(TypeError, match=r"strategies \['cpu'\] the patch does not offer"):

        class UnknownStrategy(DeclaredPatch):
            name = "x"
            strategies = ("real",)
            declarations = (Rewrite(Expect("acme_dsp", "energy"), round_trip=("cpu",)),)

    with pytest.raises(TypeError, match="nothing is declared for module 'acme_other'"):

        class UndeclaredModule(DeclaredPatch):
            name = "x"
            modules = ("acme_dsp", "acme_other")
            declarations = (Expect("acme_dsp", "energy"),)

    with pytest.raises(TypeError, match="which is not in modules"):

        class StrayModule(DeclaredPatch):
            name = "x"
            modules = ("acme_dsp",)
            declarations = (Expect("acme_other", "energy"),)


def test_builtin_patches_use_only_the_public_toolkit() -> None:
    """No built-in patch imports a private helper; targeted ones are declarations."""
    import ast
    from pathlib import Path

    from blackwell_compat import patches

    folder = Path(patches.__file__).parent
    for path in folder.glob("*.py"):
        assert not path.name.startswith("_") or path.name == "__init__.py", path.name
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module not in (None, "__future__"):
                names = [node.module, *(a.name for a in node.names)]
                private = [n for n in names if any(p.startswith("_") for p in n.split("."))]
                assert not private or path.name == "__init__.py", (path.name, private)
            if isinstance(node, ast.Compare):
                for operand in (node.left, *node.comparators):
                    assert not (
                        isinstance(operand, ast.Attribute)
                        and operand.attr == "__name__"
                        and isinstance(operand.value, ast.Name)
                        and operand.value.id == "module"
                    ), f"{path.name} branches on module.__name__"
    from blackwell_compat.patches import chatterbox, kokoro, s3tokenizer, torchaudio, whisper

    for module in (chatterbox, kokoro, s3tokenizer, torchaudio, whisper):
        patch_classes = [
            v for v in vars(module).values() if isinstance(v, type) and issubclass(v, DeclaredPatch)
        ]
        assert [c for c in patch_classes if c is not DeclaredPatch], module.__name__
