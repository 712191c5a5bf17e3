"""apply / revert / status: the state of every patch in this process.

One lock guards everything.  A patch whose target module is not imported yet waits on a
post-import hook (wrapt); hooks cannot be unregistered, so each carries the generation it was
registered in and does nothing once :func:`revert` has moved the generation on.
"""

from __future__ import annotations

import sys
import threading
import types
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from . import config, devices
from .errors import BlackwellCompatWarning, ConfigError, logger
from .registry import Patch, PatchContext, Registration, discover
from .versions import in_range, installed_version

APPLIED = "applied"
PENDING = "pending-import"
SKIPPED = "skipped"
FAILED = "failed"
DRIFT = "drift"
NOT_APPLIED = "not-applied"


@dataclass(frozen=True)
class PatchStatus:
    """Where one known patch stands in this process, and why."""

    name: str
    state: str
    reason: str
    summary: str = ""
    distribution: str | None = None
    installed: str | None = None
    supported: str = ""
    strategy: str | None = None
    strategies: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    provider: str | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategies"] = list(self.strategies)
        data["modules"] = list(self.modules)
        data["notes"] = list(self.notes)
        return data


@dataclass(frozen=True)
class ApplyReport:
    """What one :func:`apply` call did, patch by patch."""

    entries: tuple[PatchStatus, ...]
    forced: bool = False

    def _names(self, *states: str) -> list[str]:
        return [e.name for e in self.entries if e.state in states]

    @property
    def applied(self) -> list[str]:
        return self._names(APPLIED)

    @property
    def pending(self) -> list[str]:
        return self._names(PENDING)

    @property
    def skipped(self) -> dict[str, str]:
        return {e.name: e.reason for e in self.entries if e.state == SKIPPED}

    @property
    def failed(self) -> dict[str, str]:
        return {e.name: e.reason for e in self.entries if e.state in (FAILED, DRIFT)}

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {"forced": self.forced, "patches": [e.as_dict() for e in self.entries]}

    def __str__(self) -> str:
        if not self.entries:
            return "blackwell-compat: no patches selected"
        width = max(len(e.name) for e in self.entries)
        lines = [f"{e.name:<{width}}  {e.state:<14}  {e.reason}" for e in self.entries]
        return "\n".join(lines)


@dataclass
class _Record:
    """A patch that passed its gates in this process: applied, or waiting for imports."""

    patch: Patch
    strategy: str | None
    generation: int
    contexts: dict[str, PatchContext] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    problems: dict[str, tuple[str, str]] = field(default_factory=dict)  # module -> (state, why)


_lock = threading.RLock()
_registrations: list[Registration] | None = None
_records: dict[str, _Record] = {}
_generation = 0


# -- registry access -----------------------------------------------------------------------


def registrations(refresh: bool = False) -> list[Registration]:
    """Every entry point of the group (cached; ``refresh`` re-reads the metadata)."""
    global _registrations
    with _lock:
        if _registrations is None or refresh:
            _registrations = discover()
        return list(_registrations)


def known_names() -> list[str]:
    return [r.name for r in registrations()]


def _lookup() -> dict[str, Registration]:
    # A duplicate keeps the first registration under its name; later ones only report.
    result: dict[str, Registration] = {}
    for reg in registrations():
        result.setdefault(reg.name, reg)
    return result


def _as_names(value: object, *, source: str) -> list[str] | None:
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


def _as_strategies(value: object) -> dict[str, str]:
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


def _as_flag(value: object, *, source: str) -> bool:
    """``force=`` checked: only ``True`` or ``False`` (``"no"`` is not false)."""
    if not isinstance(value, bool):
        raise TypeError(f"{source} takes True or False; got {type(value).__name__} {value!r}")
    return value


# -- gates -----------------------------------------------------------------------------------


def _version_gate(patch: Patch) -> tuple[bool, str, str | None]:
    if patch.distribution is None:
        return True, "", None
    version = installed_version(patch.distribution)
    if version is None:
        return False, f"{patch.distribution} is not installed", None
    if not in_range(version, patch.supported):
        return (
            False,
            f"{patch.distribution} {version} is outside the supported range {patch.supported!r}",
            version,
        )
    return True, "", version


def _device_gate(patch: Patch, force: bool) -> tuple[bool, str]:
    if not patch.requires_affected or force:
        return True, ""
    from .probing import probe

    platform = probe()
    if platform.affected:
        return True, ""
    from .remedies import nvrtc as nvrtc_remedy  # issue 12: say which rung serves

    served = nvrtc_remedy.active()
    if served is not None:
        return False, f"{served.describe()}; nothing left for the patches"
    why = "; ".join(platform.reasons) if platform.reasons else "no affected GPU"
    return False, f"no affected GPU here ({why}); use apply(force=True) to apply anyway"


def _resolve_strategy(patch: Patch, requested: Mapping[str, str]) -> str | None:
    wanted = requested.get(patch.name)
    if wanted is None:
        return patch.default_strategy
    if wanted not in patch.strategies:
        offered = ", ".join(patch.strategies) or "none"
        raise ConfigError(
            f"patch {patch.name!r} has no strategy {wanted!r}; its strategies: {offered}"
        )
    return wanted


# -- applying --------------------------------------------------------------------------------


def _warn(message: str) -> None:
    logger.warning("%s", message)
    warnings.warn(message, BlackwellCompatWarning, stacklevel=4)


def _apply_module(record: _Record, module_name: str, module: types.ModuleType) -> None:
    """Check and patch one target module of one patch.  Called with the lock held."""
    patch = record.patch
    record.pending.discard(module_name)
    version = installed_version(patch.distribution) if patch.distribution else None
    where = f"{patch.distribution} {version}" if patch.distribution else module_name
    try:
        problems = list(patch.check(module))
    except Exception as exc:
        problems = [f"drift check raised {type(exc).__name__}: {exc}"]
    if problems:
        why = "; ".join(problems)
        record.problems[module_name] = (DRIFT, f"{module_name} changed upstream ({where}): {why}")
        _warn(
            f"blackwell-compat: patch {patch.name!r} refused for {module_name} ({where}): "
            f"the target no longer looks like what the patch was written for: {why}"
        )
        return
    ctx = PatchContext(patch=patch.name, strategy=record.strategy)
    try:
        patch.apply(module, ctx)
    except Exception as exc:
        undo_errors = ctx.revert()
        why = f"apply raised {type(exc).__name__}: {exc}"
        if undo_errors:
            why += f" (and undoing it failed: {'; '.join(undo_errors)})"
        record.problems[module_name] = (FAILED, f"{module_name}: {why}")
        _warn(f"blackwell-compat: patch {patch.name!r} failed on {module_name} ({where}): {why}")
        return
    record.contexts[module_name] = ctx
    logger.debug("applied %s to %s", patch.name, module_name)


def _on_import(name: str, generation: int, module_name: str, module: types.ModuleType) -> None:
    with _lock:
        record = _records.get(name)
        if record is None or record.generation != generation or module_name not in record.pending:
            return
        _apply_module(record, module_name, module)


def _register_hook(name: str, generation: int, module_name: str) -> None:
    import wrapt

    def hook(module: types.ModuleType) -> None:
        _on_import(name, generation, module_name, module)

    wrapt.register_post_import_hook(hook, module_name)


def _start(patch: Patch, strategy: str | None) -> _Record:
    record = _Record(patch=patch, strategy=strategy, generation=_generation)
    _records[patch.name] = record
    for module_name in patch.modules:
        module = sys.modules.get(module_name)
        if module is not None:
            _apply_module(record, module_name, module)
        else:
            record.pending.add(module_name)
            _register_hook(patch.name, record.generation, module_name)
    return record


def _selected(
    only: list[str] | None, exclude: list[str], env: Mapping[str, str] | None = None
) -> tuple[list[Registration], set[str]]:
    lookup = _lookup()
    known = list(lookup)
    if only is not None:
        config.check_known(only, known, source="apply(only=...)")
    config.check_known(exclude, known, source="apply(exclude=...)")
    disabled = list(config.disabled_names(env))
    if "all" in disabled:
        disabled_set = set(known)
    else:
        config.check_known(disabled, known, source=config.DISABLE)
        disabled_set = set(disabled)
    chosen = [reg for name, reg in lookup.items() if only is None or name in only]
    chosen = [reg for reg in chosen if reg.name not in exclude]
    return chosen, disabled_set


def apply(
    *,
    only: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] = (),
    force: bool = False,
    strategies: Mapping[str, str] | None = None,
) -> ApplyReport:
    """Apply every selected patch whose conditions hold here.

    Args:
        only: apply just these patches (names as in ``list``).
        exclude: never apply these.
        force: apply device-conditioned patches even where no affected GPU is found (and make
            the op guard treat every CUDA device as affected).  Version gates and drift checks
            still hold: a patch never runs on a target it was not written for.
        strategies: ``{"torchaudio": "cpu"}``; defaults come from
            ``BLACKWELL_COMPAT_STRATEGY`` and then from each patch's first strategy.

    Raises:
        TypeError: an argument of the wrong type (``only=b"torch"``, ``force="no"``,
            ``strategies="torchaudio=cpu"``), before anything changes.
        ConfigError (a ``ValueError``): an unknown patch or strategy name, here or in
            ``BLACKWELL_COMPAT_DISABLE`` / ``BLACKWELL_COMPAT_STRATEGY``.
    """
    only_list = _as_names(only, source="apply(only=...)")
    exclude_list = _as_names(exclude, source="apply(exclude=...)") or []
    force = _as_flag(force, source="apply(force=...)")
    wanted = _as_strategies(strategies)
    requested = config.strategies_from_env()
    config.check_known(requested, known_names(), source=config.STRATEGY)
    if wanted:
        config.check_known(wanted, known_names(), source="apply(strategies=...)")
        requested.update(wanted)
    with _lock:
        chosen, disabled = _selected(only_list, exclude_list)
        # Validate every strategy before changing anything.
        for reg in chosen:
            if reg.patch is not None:
                _resolve_strategy(reg.patch, requested)
        _nvrtc_remedy()
        if force:
            devices.set_forced(True)
        entries = [_apply_one(reg, force, disabled, requested) for reg in chosen]
    return ApplyReport(tuple(entries), forced=force)


def _nvrtc_remedy() -> None:
    """Issue 12, the cheapest exact rung first: give torch an NVRTC that knows the GPU (before
    `import torch`, or after it while CUDA is not initialised); the device gates then see it."""
    from .remedies import nvrtc as nvrtc_remedy

    config.nvrtc_from_env()  # a malformed BLACKWELL_COMPAT_NVRTC is a ConfigError, as others
    if nvrtc_remedy.activate().status == nvrtc_remedy.SERVED and "torch" in sys.modules:
        from . import dispatch

        dispatch.sync()  # emulation kernels of a now-served arch go


def _apply_one(
    reg: Registration, force: bool, disabled: set[str], requested: Mapping[str, str]
) -> PatchStatus:
    if reg.name in disabled:
        return _status_for(reg, SKIPPED, f"disabled by {config.DISABLE}")
    patch = reg.patch
    if patch is None:
        return _status_for(reg, FAILED, reg.error or "could not be loaded")
    strategy = _resolve_strategy(patch, requested)
    existing = _records.get(reg.name)
    if existing is not None:
        if existing.strategy == strategy:
            return _record_status(reg, existing)
        _revert_record(reg.name)
    ok, why, _ = _version_gate(patch)
    if not ok:
        return _status_for(reg, SKIPPED, why)
    try:
        ok, why = _device_gate(patch, force)
    except Exception as exc:  # the probe never raises by contract; be safe anyway
        ok, why = False, f"device check failed: {type(exc).__name__}: {exc}"
    if not ok:
        return _status_for(reg, SKIPPED, why)
    record = _start(patch, strategy)
    return _record_status(reg, record)


# -- reverting ------------------------------------------------------------------------------


def _revert_record(name: str) -> None:
    record = _records.pop(name, None)
    if record is None:
        return
    for module_name, ctx in reversed(list(record.contexts.items())):
        errors = ctx.revert()
        if errors:
            _warn(
                f"blackwell-compat: reverting {name!r} on {module_name} was incomplete: "
                + "; ".join(errors)
            )


def revert(names: str | Iterable[str] | None = None) -> None:
    """Undo patches (all of them by default), restoring every patched object exactly.

    Pending import hooks are disarmed: a target imported later is left alone.

    Raises:
        TypeError: *names* is not a name or an iterable of names.
        ConfigError (a ``ValueError``): a name no registered patch has.
    """
    global _generation
    selected = _as_names(names, source="revert(names=...)")
    if selected is not None:
        config.check_known(selected, known_names(), source="revert(names=...)")
    with _lock:
        _generation += 1
        for name in reversed(list(_records)):
            if selected is None or name in selected:
                _revert_record(name)
        if not _records:
            devices.set_forced(False)


@contextmanager
def patched(
    *,
    only: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] = (),
    force: bool = False,
    strategies: Mapping[str, str] | None = None,
) -> Iterator[ApplyReport]:
    """Apply for the duration of a ``with`` block; revert what this block applied."""
    with _lock:
        before = set(_records)
        was_forced = devices.is_forced()
        report = apply(only=only, exclude=exclude, force=force, strategies=strategies)
        added = [name for name in _records if name not in before]
    try:
        yield report
    finally:
        with _lock:
            revert(added)
            devices.set_forced(was_forced)


# -- status ---------------------------------------------------------------------------------


def _status_for(reg: Registration, state: str, reason: str, **extra: Any) -> PatchStatus:
    patch = reg.patch
    installed = (
        installed_version(patch.distribution) if patch is not None and patch.distribution else None
    )
    return PatchStatus(
        name=reg.name,
        state=state,
        reason=reason,
        summary=patch.summary if patch else "",
        distribution=patch.distribution if patch else None,
        installed=installed,
        supported=patch.supported if patch else "",
        strategies=patch.strategies if patch else (),
        modules=patch.modules if patch else (),
        provider=reg.provider,
        **extra,
    )


def _record_status(reg: Registration, record: _Record) -> PatchStatus:
    notes = tuple(note for ctx in record.contexts.values() for note in ctx.notes)
    failed = [why for state, why in record.problems.values() if state == FAILED]
    drifted = [why for state, why in record.problems.values() if state == DRIFT]
    done = sorted(record.contexts)
    waiting = sorted(record.pending)
    parts = []
    if done:
        parts.append(f"patched {', '.join(done)}")
    if waiting:
        parts.append(f"waiting for import of {', '.join(waiting)}")
    if failed or drifted:
        state = FAILED if failed else DRIFT
        parts = [*failed, *drifted, *parts]
    elif waiting:
        state = PENDING
    else:
        state = APPLIED
    return _status_for(
        reg, state, "; ".join(parts) or "nothing to patch", strategy=record.strategy, notes=notes
    )


def status() -> list[PatchStatus]:
    """Every known patch (including ones that failed to load) and where it stands."""
    with _lock:
        result = []
        try:
            disabled = set(config.disabled_names())
        except ConfigError as exc:
            disabled = set()
            bad_env = str(exc)
        else:
            bad_env = ""
        for reg in registrations():
            lookup_reg = _lookup().get(reg.name)
            record = _records.get(reg.name) if lookup_reg is reg else None
            if reg.patch is None:
                result.append(_status_for(reg, FAILED, reg.error or "could not be loaded"))
            elif record is not None:
                result.append(_record_status(reg, record))
            elif reg.name in disabled or "all" in disabled:
                result.append(_status_for(reg, SKIPPED, f"disabled by {config.DISABLE}"))
            else:
                ok, why, _ = _version_gate(reg.patch)
                if not ok:
                    result.append(_status_for(reg, SKIPPED, why))
                else:
                    reason = "not applied in this process"
                    if bad_env:
                        reason += f" ({bad_env})"
                    result.append(_status_for(reg, NOT_APPLIED, reason))
        return result


def _reset_for_tests() -> None:
    """Revert everything and forget discovered entry points (tests only)."""
    global _registrations
    revert()
    with _lock:
        _registrations = None
