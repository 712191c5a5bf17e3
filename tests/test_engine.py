"""apply / revert / status with synthetic patches on synthetic target modules."""

from __future__ import annotations

import importlib
import json
import sys
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from blackwell_compat import engine, registry
from blackwell_compat import state as process_state
from blackwell_compat.errors import BlackwellCompatWarning, ConfigError


@dataclass
class FakeDist:
    name: str


@dataclass
class FakeEntryPoint:
    name: str
    obj: Any
    provider: str = "thirdparty"

    @property
    def value(self) -> str:
        return f"fake:{self.name}"

    @property
    def dist(self) -> FakeDist:
        return FakeDist(self.provider)

    def load(self) -> Any:
        if isinstance(self.obj, BaseException):
            raise self.obj
        return self.obj


@pytest.fixture
def target_module(tmp_path, monkeypatch):
    """A fresh importable module (not yet imported) with a function to patch."""
    name = f"bc_target_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "def compute(x, scale=2):\n    return x * scale\n\nVALUE = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def make_patch(name: str, module: str, **attrs: Any) -> type[registry.Patch]:
    def apply(self, mod, ctx):
        original = ctx.replace_function(
            mod, "compute", lambda x, scale=2: ("patched", x, ctx.strategy)
        )
        ctx.set_attr(mod, "VALUE", 2)
        ctx.set_attr(mod, "ADDED", True)
        self.original = original

    body = {
        "name": name,
        "summary": f"{name} test patch",
        "modules": (module,),
        "requires_affected": False,
        "apply": apply,
        **attrs,
    }
    return type(f"Patch_{name}", (registry.Patch,), body)


@pytest.fixture
def use_patches(monkeypatch):
    def install(*eps: FakeEntryPoint) -> None:
        monkeypatch.setattr(process_state.patches, "registrations", registry.discover(eps))

    return install


def test_apply_now_and_revert_exactly(target_module, use_patches):
    mod = importlib.import_module(target_module)
    compute = mod.compute
    code = compute.__code__
    use_patches(FakeEntryPoint("p", make_patch("p", target_module)))
    report = engine.apply()
    assert report.applied == ["p"] and report.ok
    assert mod.compute is compute  # identity kept, behaviour changed in place
    assert mod.compute(3) == ("patched", 3, None)
    assert mod.VALUE == 2 and mod.ADDED is True
    [st] = engine.status()
    assert st.state == "applied" and target_module in st.reason
    engine.revert()
    assert mod.compute is compute and compute.__code__ is code
    assert mod.compute(3) == 6 and mod.VALUE == 1 and not hasattr(mod, "ADDED")
    assert engine.status()[0].state == "not-applied"


def test_pending_until_import_then_applied(target_module, use_patches):
    use_patches(FakeEntryPoint("p", make_patch("p", target_module)))
    report = engine.apply()
    assert report.pending == ["p"]
    assert engine.status()[0].state == "pending-import"
    mod = importlib.import_module(target_module)
    assert mod.compute(1) == ("patched", 1, None)
    assert engine.status()[0].state == "applied"


def test_revert_disarms_pending_hooks(target_module, use_patches):
    use_patches(FakeEntryPoint("p", make_patch("p", target_module)))
    engine.apply()
    engine.revert()
    mod = importlib.import_module(target_module)
    assert mod.compute(1) == 2


def test_apply_is_idempotent_and_strategy_change_reapplies(target_module, use_patches):
    mod = importlib.import_module(target_module)
    use_patches(FakeEntryPoint("p", make_patch("p", target_module, strategies=("a", "b"))))
    engine.apply()
    engine.apply()
    assert mod.compute(1) == ("patched", 1, "a")
    engine.apply(strategies={"p": "b"})
    assert mod.compute(1) == ("patched", 1, "b")
    engine.revert()
    assert mod.compute(1) == 2


def test_unknown_names_are_value_errors(target_module, use_patches, monkeypatch):
    use_patches(FakeEntryPoint("p", make_patch("p", target_module, strategies=("a",))))
    with pytest.raises(ValueError, match=r"'nope'.*known patches: p"):
        engine.apply(only=["nope"])
    with pytest.raises(ConfigError, match="exclude"):
        engine.apply(exclude="nope")
    with pytest.raises(ConfigError, match="no strategy 'z'"):
        engine.apply(strategies={"p": "z"})
    with pytest.raises(ConfigError, match="unknown patch"):
        engine.apply(strategies={"q": "a"})
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "p,nope")
    with pytest.raises(ConfigError, match="BLACKWELL_COMPAT_DISABLE"):
        engine.apply()
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "")
    monkeypatch.setenv("BLACKWELL_COMPAT_STRATEGY", "p=z")
    with pytest.raises(ConfigError, match="no strategy"):
        engine.apply()
    assert engine._records == {}  # nothing half-applied


def test_disable_env_and_only_exclude(target_module, use_patches, monkeypatch):
    importlib.import_module(target_module)
    use_patches(
        FakeEntryPoint("p", make_patch("p", target_module)),
        FakeEntryPoint("q", make_patch("q", target_module)),
    )
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "p")
    report = engine.apply()
    assert report.skipped == {"p": "disabled by BLACKWELL_COMPAT_DISABLE"}
    assert report.applied == ["q"]
    engine.revert()
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "all")
    assert engine.apply().applied == []
    monkeypatch.delenv("BLACKWELL_COMPAT_DISABLE")
    assert [e.name for e in engine.apply(only="q").entries] == ["q"]
    engine.revert()
    assert [e.name for e in engine.apply(exclude=["q"]).entries] == ["p"]


def test_drift_is_refused_with_a_warning(target_module, use_patches):
    mod = importlib.import_module(target_module)

    def check(self, module):
        return ["compute() lost its 'scale' parameter"]

    use_patches(FakeEntryPoint("p", make_patch("p", target_module, check=check)))
    with pytest.warns(BlackwellCompatWarning, match="refused.*lost its 'scale'"):
        report = engine.apply()
    assert "p" in report.failed and report.entries[0].state == "drift"
    assert mod.compute(1) == 2


def test_failing_patch_is_rolled_back_and_others_apply(target_module, use_patches):
    mod = importlib.import_module(target_module)

    def bad_apply(self, module, ctx):
        ctx.set_attr(module, "VALUE", 99)
        raise RuntimeError("boom")

    use_patches(
        FakeEntryPoint("bad", make_patch("bad", target_module, apply=bad_apply)),
        FakeEntryPoint("good", make_patch("good", target_module)),
    )
    with pytest.warns(BlackwellCompatWarning, match="boom"):
        report = engine.apply()
    assert report.failed["bad"].endswith("apply raised RuntimeError: boom")
    assert report.applied == ["good"]
    engine.revert()
    assert mod.VALUE == 1


def test_load_failures_and_duplicates_are_reported(target_module, use_patches):
    use_patches(
        FakeEntryPoint("broken", ImportError("no module named acme")),
        FakeEntryPoint("p", make_patch("p", target_module), provider="blackwell-compat"),
        FakeEntryPoint("p", make_patch("p", target_module), provider="evil"),
        FakeEntryPoint("notapatch", object()),
        FakeEntryPoint("mismatch", make_patch("other", target_module)),
    )
    states = {(s.name, s.provider): s for s in engine.status()}
    assert "no module named acme" in states[("broken", "thirdparty")].reason
    assert "duplicate patch name 'p'" in states[("p", "evil")].reason
    assert states[("p", "blackwell-compat")].state == "not-applied"
    assert "neither a Patch" in states[("notapatch", "thirdparty")].reason
    assert "must be equal" in states[("mismatch", "thirdparty")].reason
    report = engine.apply()
    assert set(report.failed) == {"broken", "notapatch", "mismatch"}
    assert report.pending == ["p"]


def test_version_gate(target_module, use_patches):
    importlib.import_module(target_module)
    use_patches(
        FakeEntryPoint(
            "old", make_patch("old", target_module, distribution="packaging", supported="<1")
        ),
        FakeEntryPoint(
            "absent", make_patch("absent", target_module, distribution="no-such-dist-xyz")
        ),
        FakeEntryPoint(
            "fine", make_patch("fine", target_module, distribution="packaging", supported=">=20")
        ),
    )
    report = engine.apply()
    assert "outside the supported range '<1'" in report.skipped["old"]
    assert report.skipped["absent"] == "no-such-dist-xyz is not installed"
    assert report.applied == ["fine"]


def test_patched_context_reverts_only_what_it_applied(target_module, use_patches):
    mod = importlib.import_module(target_module)
    use_patches(
        FakeEntryPoint("p", make_patch("p", target_module)),
        FakeEntryPoint("q", make_patch("q", target_module)),
    )
    engine.apply(only="p")
    with engine.patched(only="q") as report:
        assert report.applied == ["q"]
        assert {s.name for s in engine.status() if s.state == "applied"} == {"p", "q"}
    assert {s.name for s in engine.status() if s.state == "applied"} == {"p"}
    engine.revert()
    assert mod.compute(2) == 4


def test_concurrent_apply_and_revert_from_threads(target_module, use_patches):
    mod = importlib.import_module(target_module)
    compute = mod.compute
    code = compute.__code__
    use_patches(FakeEntryPoint("p", make_patch("p", target_module)))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                engine.apply()
                engine.revert()
                engine.apply()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert mod.compute(1) == ("patched", 1, None)
    engine.revert()
    assert compute.__code__ is code and mod.compute(1) == 2


def test_device_gate_skips_without_affected_gpu(target_module, use_patches, monkeypatch):
    importlib.import_module(target_module)
    use_patches(
        FakeEntryPoint("gpu_only", make_patch("gpu_only", target_module, requires_affected=True))
    )
    monkeypatch.delenv("BLACKWELL_COMPAT_EMULATE", raising=False)
    from blackwell_compat.probing import probe

    if probe(refresh=True).affected:  # pragma: no cover - only on an affected machine
        pytest.fail("this test expects a machine without an affected GPU")
    report = engine.apply()
    assert "no affected GPU" in report.skipped["gpu_only"]
    assert engine.apply(force=True).applied == ["gpu_only"]


def test_device_gate_passes_under_emulation(target_module, use_patches):
    importlib.import_module(target_module)
    use_patches(
        FakeEntryPoint("gpu_only", make_patch("gpu_only", target_module, requires_affected=True))
    )
    from blackwell_compat.emulation import emulate

    with emulate("sm_121"):
        assert engine.apply().applied == ["gpu_only"]


def test_report_renders_and_serialises(target_module, use_patches):
    import json

    importlib.import_module(target_module)
    use_patches(FakeEntryPoint("p", make_patch("p", target_module)))
    report = engine.apply()
    assert "p  applied" in str(report)
    json.dumps(report.as_dict())
    json.dumps([s.as_dict() for s in engine.status()])


def test_disabled_patch_that_fails_to_load_is_skipped_not_failed(use_patches, monkeypatch):
    use_patches(FakeEntryPoint("broken", ImportError("no module named acme")))
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "broken")
    report = engine.apply()
    assert report.skipped == {"broken": "disabled by BLACKWELL_COMPAT_DISABLE"}
    assert report.ok


# -- argument checks (issue 14, point 12) ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        (
            {"strategies": "torchaudio=cpu"},
            TypeError,
            r"apply\(strategies=\.\.\.\) takes a mapping",
        ),
        ({"strategies": ["torchaudio"]}, TypeError, r"apply\(strategies=\.\.\.\) takes a mapping"),
        ({"strategies": {"p": 1}}, TypeError, r"the item 'p': 1"),
        ({"only": b"torch"}, TypeError, r"apply\(only=\.\.\.\) takes a patch name \(str\)"),
        ({"only": [b"torch"]}, TypeError, r"got an element b'torch' of type bytes"),
        ({"only": 3}, TypeError, r"apply\(only=\.\.\.\).*got int 3"),
        ({"exclude": {"p": 1}}, TypeError, r"apply\(exclude=\.\.\.\) takes a patch name"),
        ({"force": "no"}, TypeError, r"apply\(force=\.\.\.\) takes True or False; got str 'no'"),
        ({"force": 1}, TypeError, r"apply\(force=\.\.\.\) takes True or False"),
    ],
)
def test_wrong_argument_types_are_refused_before_anything_changes(
    target_module, use_patches, kwargs, error, needle
):
    importlib.import_module(target_module)
    use_patches(FakeEntryPoint("p", make_patch("p", target_module, strategies=("a",))))
    with pytest.raises(error, match=needle):
        engine.apply(**kwargs)
    assert engine._records == {}
    assert engine.apply(only=("p",), force=False, strategies={"p": "a"}).applied == ["p"]


def test_revert_checks_its_argument(target_module, use_patches):
    importlib.import_module(target_module)
    use_patches(FakeEntryPoint("p", make_patch("p", target_module)))
    engine.apply()
    with pytest.raises(ConfigError, match=r"revert\(names=\.\.\.\): unknown patch.*'nope'"):
        engine.revert("nope")
    with pytest.raises(TypeError, match=r"revert\(names=\.\.\.\) takes a patch name"):
        engine.revert(b"p")  # type: ignore[arg-type]
    assert [s.state for s in engine.status()] == ["applied"]  # nothing was reverted
    engine.revert("p")
    assert [s.state for s in engine.status()] == ["not-applied"]


# -- evaluate: would it apply here, and why (issue 11) ----------------------------------------


def _platform(affected: bool, nvrtc_folder=None):
    """A described machine: a GB10 with NVRTC 12.8 (affected), or no GPU at all."""
    from blackwell_compat.probing import GPU, DriverInfo, SystemInfo, build_platform, read_nvrtc

    gpu = GPU(0, "NVIDIA GB10", capability=(12, 1))
    return build_platform(
        gpus=[gpu] if affected else [],
        driver=DriverInfo(available=True, library="libnvidia-ml.so.1", driver_version="580"),
        nvrtc=read_nvrtc(nvrtc_folder) if affected else None,
        versions={},
        system=SystemInfo(os="Linux", machine="x86_64", python="3.12"),
    )


def test_evaluate_names_the_gate_that_says_no(
    target_module, use_patches, monkeypatch, nvrtc_libraries
):
    use_patches(
        FakeEntryPoint("broken", ImportError("no module named acme")),
        FakeEntryPoint("fine", make_patch("fine", target_module)),
        FakeEntryPoint(
            "old", make_patch("old", target_module, distribution="packaging", supported="<1")
        ),
        FakeEntryPoint(
            "absent", make_patch("absent", target_module, distribution="no-such-dist-xyz")
        ),
        FakeEntryPoint("off", make_patch("off", target_module)),
        FakeEntryPoint("gpu", make_patch("gpu", target_module, requires_affected=True)),
    )
    monkeypatch.setenv("BLACKWELL_COMPAT_DISABLE", "off")
    found = {e.name: e for e in engine.evaluate_all(platform=_platform(affected=False))}
    assert (found["broken"].gate, found["broken"].loaded) == ("load", False)
    assert "no module named acme" in found["broken"].reason
    assert found["fine"].would_apply and found["fine"].gate is None
    assert found["fine"].reason == "conditions hold"
    assert found["old"].gate == "version" and "outside the supported range" in found["old"].reason
    assert found["absent"].reason == "no-such-dist-xyz is not installed"
    assert found["absent"].state == "skipped"
    assert found["off"].gate == "disabled" and found["off"].state == "skipped"
    assert found["gpu"].gate == "device" and "no affected GPU here" in found["gpu"].reason
    affected = _platform(affected=True, nvrtc_folder=nvrtc_libraries["12.8.93"])
    assert affected.affected
    assert engine.evaluate("gpu", platform=affected).would_apply
    assert engine.evaluate("gpu", platform=_platform(affected=False), force=True).would_apply
    skipped = engine.evaluate("gpu", deep=False)
    assert skipped.would_apply and not skipped.device_checked
    # evaluate changes nothing and imports no target
    assert target_module not in sys.modules and engine._records == {}
    json.dumps([e.as_dict() for e in found.values()])


def test_evaluate_agrees_with_apply(target_module, use_patches):
    importlib.import_module(target_module)
    use_patches(
        FakeEntryPoint(
            "old", make_patch("old", target_module, distribution="packaging", supported="<1")
        ),
        FakeEntryPoint("fine", make_patch("fine", target_module, strategies=("a", "b"))),
    )
    before = {e.name: e for e in engine.evaluate_all()}
    report = engine.apply()
    assert report.skipped["old"] == before["old"].reason
    assert report.applied == ["fine"] and before["fine"].strategy == "a"
    after = engine.evaluate("fine")
    assert (after.state, after.would_apply) == ("applied", True)
    assert after.state_reason.startswith("patched ")
    statuses = {s.name: s for s in engine.status()}
    assert (statuses["old"].state, statuses["old"].reason) == ("skipped", before["old"].reason)


def test_evaluate_runs_the_drift_check_on_imported_targets_only(target_module, use_patches):
    def check(self, module):
        return ["compute() lost its scale argument"]

    use_patches(FakeEntryPoint("p", make_patch("p", target_module, check=check)))
    assert engine.evaluate("p").would_apply  # not imported yet: checked when it is
    assert target_module not in sys.modules
    importlib.import_module(target_module)
    evaluation = engine.evaluate("p")
    assert evaluation.gate == "drift" and not evaluation.would_apply
    assert evaluation.drift == (f"{target_module}: compute() lost its scale argument",)
    with pytest.warns(BlackwellCompatWarning, match="lost its scale argument"):
        assert engine.apply().failed["p"].startswith(f"{target_module} changed upstream")


def test_evaluate_reports_a_malformed_variable_as_apply_would_raise(
    target_module, use_patches, monkeypatch
):
    use_patches(FakeEntryPoint("p", make_patch("p", target_module, strategies=("a",))))
    monkeypatch.setenv("BLACKWELL_COMPAT_STRATEGY", "p=zzz")
    evaluation = engine.evaluate("p")
    assert evaluation.gate == "config" and "has no strategy 'zzz'" in evaluation.reason
    assert evaluation.state == "not-applied" and "has no strategy 'zzz'" in evaluation.state_reason
    with pytest.raises(ConfigError, match="has no strategy 'zzz'"):
        engine.apply()
    monkeypatch.setenv("BLACKWELL_COMPAT_STRATEGY", "p=a")
    assert engine.evaluate("p").strategy == "a"


def test_evaluate_checks_its_argument(use_patches, target_module):
    use_patches(FakeEntryPoint("p", make_patch("p", target_module)))
    with pytest.raises(ConfigError, match=r"evaluate\(patch\): unknown patch name\(s\) 'nope'"):
        engine.evaluate("nope")
    with pytest.raises(TypeError, match=r"evaluate\(\) takes a patch name"):
        engine.evaluate(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"evaluate\(force=\.\.\.\) takes True or False"):
        engine.evaluate("p", force="yes")  # type: ignore[arg-type]
    unregistered = make_patch("solo", target_module)()
    assert engine.evaluate(unregistered).name == "solo"
