"""The gates a patch passes before it applies, and the checked arguments of ``apply()``:
the version range, the device (an affected GPU, or one the NVRTC remedy would serve), the
strategy, drift of imported targets.  Pure functions of the patch and the machine."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping

from .. import import_trigger
from ..errors import ConfigError
from ..probing import Platform, probe
from ..registry import Patch
from ..remedies import nvrtc as nvrtc_remedy
from ..versions import in_range, installed_version

VersionLookup = Callable[[str], "str | None"]


def as_names(value: object, *, source: str) -> list[str] | None:
    """A name or an iterable of names, checked: bytes, numbers and mappings are refused."""
    accepted = "a patch name (str) or an iterable of names, e.g. 'torch' or ['torch', 'kokoro']"
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"{source} takes {accepted}; got {type(value).__name__} {value!r}")
    names = list(value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"{source} takes {accepted}; got an element {name!r} of type {type(name).__name__}"
            )
    return names


def as_strategies(value: object) -> dict[str, str]:
    """``strategies=`` checked: a mapping of patch name to strategy name, both str."""
    accepted = "a mapping of patch name to strategy name, e.g. {'torchaudio': 'cpu'}"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"apply(strategies=...) takes {accepted}; got {type(value).__name__} {value!r}"
        )
    result: dict[str, str] = {}
    for name, strategy in value.items():
        if not isinstance(name, str) or not isinstance(strategy, str):
            raise TypeError(
                f"apply(strategies=...) takes {accepted}; got the item {name!r}: {strategy!r}"
            )
        result[name] = strategy
    return result


def as_flag(value: object, *, source: str) -> bool:
    """``force=`` checked: only ``True`` or ``False`` (``"no"`` is not false)."""
    if not isinstance(value, bool):
        raise TypeError(f"{source} takes True or False; got {type(value).__name__} {value!r}")
    return value


def version_gate(
    patch: Patch, versions: VersionLookup = installed_version
) -> tuple[bool, str, str | None]:
    if patch.distribution is None:
        return True, "", None
    version = versions(patch.distribution)
    if version is None:
        return False, f"{patch.distribution} is not installed", None
    if not in_range(version, patch.supported):
        return (
            False,
            f"{patch.distribution} {version} is outside the supported range {patch.supported!r}",
            version,
        )
    return True, "", version


def device_gate(
    patch: Patch, force: bool, platform: Platform | None = None, *, planned: bool = False
) -> tuple[bool, str]:
    """Whether the patch's device condition holds.  ``planned`` (``evaluate``, for ``list``
    and the doctor): an NVRTC remedy that :func:`apply` would load for every affected GPU
    counts as serving them, as it would after ``apply()``."""
    if not patch.requires_affected or force:
        return True, ""
    try:
        here = probe() if platform is None else platform
    except Exception as exc:  # the probe never raises by contract; be safe anyway
        return False, f"device check failed: {type(exc).__name__}: {exc}"
    if here.affected:
        if planned:
            plan = nvrtc_remedy.plan(here)
            affected = {gpu.arch for gpu in here.gpus if gpu.affected}
            if plan.status == nvrtc_remedy.AVAILABLE and affected <= plan.archs:
                return False, f"{plan.describe()}; nothing left for the patches"
        return True, ""
    served = nvrtc_remedy.active() if platform is None else None
    if served is not None:  # the cheapest rung serves: say so
        return False, f"{served.describe()}; nothing left for the patches"
    why = "; ".join(here.reasons) if here.reasons else "no affected GPU"
    return False, f"no affected GPU here ({why}); use apply(force=True) to apply anyway"


def resolve_strategy(patch: Patch, requested: Mapping[str, str]) -> str | None:
    wanted = requested.get(patch.name)
    if wanted is None:
        return patch.default_strategy
    if wanted not in patch.strategies:
        offered = ", ".join(patch.strategies) or "none"
        raise ConfigError(
            f"patch {patch.name!r} has no strategy {wanted!r}; its strategies: {offered}"
        )
    return wanted


def drift(patch: Patch) -> tuple[str, ...]:
    """What the drift check says about the patch's targets that are imported already."""
    found: list[str] = []
    for module_name in patch.modules:
        module = sys.modules.get(module_name)
        if module is None or import_trigger.in_progress(module_name):
            continue  # checked when it is imported: evaluating never imports a target
        try:
            problems = list(patch.check(module))
        except Exception as exc:
            problems = [f"drift check raised {type(exc).__name__}: {exc}"]
        found.extend(f"{module_name}: {problem}" for problem in problems)
    return tuple(found)
