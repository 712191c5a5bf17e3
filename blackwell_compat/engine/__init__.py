"""apply / revert / status / evaluate / ladder: the state of every patch in this process.

The data the engine answers with lives in :mod:`.reports`, the gates in :mod:`.gates`, the
per-GPU ladder in :mod:`.rungs`; what it remembers (the discovered entry points, the record of
every patch, the generation of its import hooks) and its lock are one object held by the
process state, :data:`blackwell_compat.state.patches`, which ``state.reset_for_tests()``
resets with the rest.

One lock guards everything.  A patch whose target module is not imported yet waits on a
post-import hook (wrapt); hooks cannot be unregistered, so each carries the generation it was
registered in and does nothing once :func:`revert` has moved the generation on.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from .. import config, devices, import_trigger
from .. import state as process_state
from ..errors import BlackwellCompatWarning, ConfigError, logger
from ..ops import dispatcher
from ..probing import Platform, probe
from ..registry import Patch, PatchContext, Registration, discover
from ..remedies import nvrtc as nvrtc_remedy
from ..remedies import ptxas as ptxas_remedy
from ..versions import installed_version
from .gates import (
    VersionLookup,
    as_flag,
    as_names,
    as_strategies,
    device_gate,
    resolve_strategy,
    version_gate,
)
from .gates import (
    drift as drift_problems,
)
from .reports import (
    APPLIED,
    DRIFT,
    FAILED,
    GATE_CONFIG,
    GATE_DEVICE,
    GATE_DISABLED,
    GATE_DRIFT,
    GATE_LOAD,
    GATE_VERSION,
    NOT_APPLIED,
    PENDING,
    RUNG_FUSER,
    RUNG_NOT_AFFECTED,
    RUNG_NVRTC_REMEDY,
    RUNG_PATCHES,
    RUNG_UNSERVED,
    SKIPPED,
    ApplyReport,
    Evaluation,
    GpuService,
    PatchStatus,
)
from .rungs import services


@dataclass
class _Record:
    """A patch that passed its gates in this process: applied, or waiting for imports."""

    patch: Patch
    strategy: str | None
    generation: int
    contexts: dict[str, PatchContext] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    problems: dict[str, tuple[str, str]] = field(default_factory=dict)  # module -> (state, why)


__all__ = [
    "APPLIED",
    "DRIFT",
    "FAILED",
    "GATE_CONFIG",
    "GATE_DEVICE",
    "GATE_DISABLED",
    "GATE_DRIFT",
    "GATE_LOAD",
    "GATE_VERSION",
    "NOT_APPLIED",
    "PENDING",
    "RUNG_FUSER",
    "RUNG_NOT_AFFECTED",
    "RUNG_NVRTC_REMEDY",
    "RUNG_PATCHES",
    "RUNG_UNSERVED",
    "SKIPPED",
    "ApplyReport",
    "Evaluation",
    "GpuService",
    "PatchStatus",
    "apply",
    "evaluate",
    "evaluate_all",
    "known_names",
    "known_strategies",
    "ladder",
    "patched",
    "registrations",
    "revert",
    "status",
]

_book = process_state.patches
_lock = _book.lock
_records: dict[str, _Record] = _book.records


# -- registry access -----------------------------------------------------------------------


def registrations(refresh: bool = False) -> list[Registration]:
    """Every entry point of the group (cached; ``refresh`` re-reads the metadata)."""
    with _lock:
        if _book.registrations is None or refresh:
            _book.registrations = discover()
        return list(_book.registrations)


def known_names() -> list[str]:
    return [r.name for r in registrations()]


def known_strategies() -> dict[str, tuple[str, ...]]:
    """Patch name -> the strategies it offers (first registration of a name; none when it
    failed to load): what ``config.environment_problems`` checks names against."""
    result: dict[str, tuple[str, ...]] = {}
    for reg in registrations():
        if reg.name not in result:
            result[reg.name] = tuple(reg.patch.strategies) if reg.patch is not None else ()
    return result


def _lookup() -> dict[str, Registration]:
    # A duplicate keeps the first registration under its name; later ones only report.
    result: dict[str, Registration] = {}
    for reg in registrations():
        result.setdefault(reg.name, reg)
    return result


# -- gates -----------------------------------------------------------------------------------


def _environment(patch: Patch | None) -> tuple[set[str], str | None, list[str]]:
    """The disabled names, the strategy ``apply()`` would use and every problem with the
    library variables that would make ``apply()`` raise (names as the engine knows them)."""
    problems: list[str] = []
    known = known_names()
    disabled: set[str] = set()
    try:
        names = config.disabled_names()
        if "all" in names:
            disabled = set(known)
        else:
            config.check_known(names, known, source=config.DISABLE)
            disabled = set(names)
    except ConfigError as exc:
        problems.append(str(exc))
    strategy = patch.default_strategy if patch is not None else None
    try:
        requested = config.strategies_from_env()
        config.check_known(requested, known, source=config.STRATEGY)
        if patch is not None:
            strategy = resolve_strategy(patch, requested)
    except ConfigError as exc:
        problems.append(str(exc))
    return disabled, strategy, problems


def _registration(patch: str | Registration | Patch) -> Registration:
    if isinstance(patch, Registration):
        return patch
    if isinstance(patch, Patch):
        registered = _lookup().get(patch.name)
        if registered is not None and registered.patch is patch:
            return registered
        return Registration(patch.name, type(patch).__qualname__, None, patch=patch)
    if isinstance(patch, str):
        registered = _lookup().get(patch)
        if registered is None:
            config.check_known([patch], known_names(), source="evaluate(patch)")
        assert registered is not None
        return registered
    raise TypeError(
        "evaluate() takes a patch name (str), a Registration or a Patch; "
        f"got {type(patch).__name__} {patch!r}"
    )


def evaluate(
    patch: str | Registration | Patch,
    *,
    force: bool = False,
    platform: Platform | None = None,
    deep: bool = True,
    versions: VersionLookup | None = None,
) -> Evaluation:
    """Would *patch* apply here, and why: the one place ``list``, the doctor and ``status()``
    ask.  It changes nothing and never imports a target module.

    Args:
        patch: a registered patch's name, a :class:`Registration` or a :class:`Patch`.
        force: as ``apply(force=...)``: the device gate holds everywhere.
        platform: judge the device gate on this platform instead of probing this machine
            (the doctor judges the machine its facts describe).
        deep: ``False`` skips the device gate (no probe) and the drift checks, as
            ``status()`` does; ``device_checked`` then says it was skipped.
        versions: reads a distribution's installed version (default: package metadata).

    Raises:
        TypeError: *patch* is none of the accepted kinds.
        ConfigError: a name no registered patch has (``ConfigError`` is a ``ValueError``).
    """
    force = as_flag(force, source="evaluate(force=...)")
    with _lock:
        return _evaluate(
            _registration(patch),
            force=force,
            platform=platform,
            deep=deep,
            versions=installed_version if versions is None else versions,
        )


def evaluate_all(
    *, force: bool = False, platform: Platform | None = None, deep: bool = True
) -> list[Evaluation]:
    """:func:`evaluate` for every registration, in discovery order (what ``list`` shows)."""
    with _lock:
        return [
            _evaluate(reg, force=force, platform=platform, deep=deep, versions=installed_version)
            for reg in registrations()
        ]


def _evaluate(
    reg: Registration,
    *,
    force: bool,
    platform: Platform | None,
    deep: bool,
    versions: VersionLookup,
) -> Evaluation:
    """The body of :func:`evaluate`.  Called with the lock held."""
    patch = reg.patch
    disabled, strategy, problems = _environment(patch)
    registered = _lookup().get(reg.name) is reg
    record = _records.get(reg.name) if registered else None
    installed = versions(patch.distribution) if patch is not None and patch.distribution else None
    gate: str | None = None
    reason = "conditions hold"
    drift: tuple[str, ...] = ()
    if reg.name in disabled:
        gate, reason = GATE_DISABLED, f"disabled by {config.DISABLE}"
    elif patch is None:
        gate, reason = GATE_LOAD, reg.error or "could not be loaded"
    else:
        ok, why, installed = version_gate(patch, versions)
        if not ok:
            gate, reason = GATE_VERSION, why
        elif problems:
            gate, reason = GATE_CONFIG, "; ".join(problems)
        elif deep:
            ok, why = device_gate(patch, force, platform, planned=True)
            if not ok:
                gate, reason = GATE_DEVICE, why
            elif record is None:
                drift = drift_problems(patch)
                if drift:
                    gate = GATE_DRIFT
                    reason = "a target changed upstream: " + "; ".join(drift)
    if record is not None:
        current = _record_status(reg, record)
        state, state_reason = current.state, current.reason
    elif patch is None:
        state, state_reason = FAILED, reg.error or "could not be loaded"
    elif gate in (GATE_DISABLED, GATE_VERSION):
        state, state_reason = SKIPPED, reason
    else:
        state, state_reason = NOT_APPLIED, "not applied in this process"
        if problems:
            state_reason += f" ({'; '.join(problems)})"
    return Evaluation(
        name=reg.name,
        provider=reg.provider,
        entry_point=reg.value,
        loaded=patch is not None,
        would_apply=gate is None,
        gate=gate,
        reason=reason,
        state=state,
        state_reason=state_reason,
        error=reg.error,
        summary=patch.summary if patch is not None else "",
        distribution=patch.distribution if patch is not None else None,
        supported=patch.supported if patch is not None else "",
        installed=installed,
        modules=tuple(patch.modules) if patch is not None else (),
        strategies=tuple(patch.strategies) if patch is not None else (),
        strategy=strategy,
        requires_affected=patch.requires_affected if patch is not None else True,
        device_checked=deep,
        drift=drift,
    )


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
    def hook(module: types.ModuleType) -> None:
        _on_import(name, generation, module_name, module)

    # A target whose code is still running (it imported torch, which ran the start-up hook's
    # activation, before its own code was done) is patched when its import has finished.
    if import_trigger.when_finished(module_name, hook):
        return
    import wrapt  # 80-100 ms (it imports asyncio): only when a patch waits for an import

    wrapt.register_post_import_hook(hook, module_name)


def _start(patch: Patch, strategy: str | None) -> _Record:
    record = _Record(patch=patch, strategy=strategy, generation=_book.generation)
    _records[patch.name] = record
    for module_name in patch.modules:
        module = sys.modules.get(module_name)
        if module is not None and not import_trigger.in_progress(module_name):
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
    """Serve every affected GPU here, cheapest rung first (docs/remedies.md).

    First the NVRTC remedy: a capable NVRTC (from ``BLACKWELL_COMPAT_NVRTC``, the project's
    cache that ``python -m blackwell_compat fetch nvrtc`` fills, a CUDA toolkit or another
    NVIDIA wheel) is loaded for torch, so torch's own kernels run and nothing is patched; it
    needs to run before the first CUDA use (``run`` and ``BLACKWELL_COMPAT_AUTO=1`` do it before
    ``import torch``).  Then the ptxas remedy points Triton at a ``ptxas`` that knows each real
    GPU.  Then every selected patch whose conditions hold is applied, for what the NVRTC remedy
    does not serve.  ``ladder()`` says which rung serves each GPU.

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
        ConfigError: an unknown patch or strategy name, here or in
            ``BLACKWELL_COMPAT_DISABLE`` / ``BLACKWELL_COMPAT_STRATEGY`` (``ConfigError`` is a
            ``ValueError``).
    """
    only_list = as_names(only, source="apply(only=...)")
    exclude_list = as_names(exclude, source="apply(exclude=...)") or []
    force = as_flag(force, source="apply(force=...)")
    wanted = as_strategies(strategies)
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
                resolve_strategy(reg.patch, requested)
        _nvrtc_remedy()
        if force:
            devices.set_forced(True)
        entries = [_apply_one(reg, force, disabled, requested) for reg in chosen]
    ptxas_remedy.activate_for([gpu.arch for gpu in probe().real_gpus])  # Triton's ptxas
    return ApplyReport(tuple(entries), forced=force, gpus=ladder())


def _nvrtc_remedy() -> None:
    """Issue 12, the cheapest exact rung first: give torch an NVRTC that knows the GPU (before
    `import torch`, or after it while CUDA is not initialised); the device gates then see it."""
    config.nvrtc_from_env()  # a malformed BLACKWELL_COMPAT_NVRTC is a ConfigError, as others
    for name in (config.CACHE_DIR, config.PTXAS):
        config.absolute_path(name)  # a relative path would name a file of the working directory
    if nvrtc_remedy.activate().status == nvrtc_remedy.SERVED and "torch" in sys.modules:
        dispatcher.sync()  # emulation kernels of a now-served arch go


def _apply_one(
    reg: Registration, force: bool, disabled: set[str], requested: Mapping[str, str]
) -> PatchStatus:
    if reg.name in disabled:
        return _status_for(reg, SKIPPED, f"disabled by {config.DISABLE}")
    patch = reg.patch
    if patch is None:
        return _status_for(reg, FAILED, reg.error or "could not be loaded")
    strategy = resolve_strategy(patch, requested)
    existing = _records.get(reg.name)
    if existing is not None:
        if existing.strategy == strategy:
            return _record_status(reg, existing)
        _revert_record(reg.name)
    ok, why, _ = version_gate(patch)
    if not ok:
        return _status_for(reg, SKIPPED, why)
    try:
        ok, why = device_gate(patch, force)
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

    Pending import hooks are disarmed: a target imported later is left alone.  A full revert
    also undoes the ptxas remedy (the Triton variables it set) and logs, at warning level, what
    cannot be undone: an NVRTC the remedy loaded stays loaded, because torch may already have
    bound it (docs/remedies.md).

    Raises:
        TypeError: *names* is not a name or an iterable of names.
        ConfigError: a name no registered patch has (``ConfigError`` is a ``ValueError``).
    """
    selected = as_names(names, source="revert(names=...)")
    if selected is not None:
        config.check_known(selected, known_names(), source="revert(names=...)")
    with _lock:
        _book.generation += 1
        for name in reversed(list(_records)):
            if selected is None or name in selected:
                _revert_record(name)
        if not _records:
            devices.set_forced(False)
        if selected is None:
            ptxas_remedy.revert()
            for message in nvrtc_remedy.revert():
                logger.warning("revert: %s", message)


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


def _serving_patches() -> tuple[str, ...]:
    """Patches of the device-gated kind applied or waiting for an import in this process."""
    with _lock:
        return tuple(
            name
            for name, record in _records.items()
            if record.patch.requires_affected and (record.contexts or record.pending)
        )


def ladder(platform: Platform | None = None, *, planned: bool = False) -> tuple[GpuService, ...]:
    """Per GPU (real, or the emulated one), which rung of the remedy ladder serves it and why a
    cheaper one could not (docs/remedies.md).  Never raises; never loads a library.

    By default: what serves *in this process* now, or, before :func:`apply` has run here, what
    it would do.  ``planned=True``: always what :func:`apply` would choose here (the NVRTC
    remedy's search, in test processes, and the patches that would apply): the answer of
    ``list`` and the doctor, which run in a process of their own.  Each answer says which it is
    (:attr:`GpuService.planned`).
    """
    try:
        # apply() always asks the NVRTC remedy first: untried, apply() has not run here.
        planned = planned or nvrtc_remedy.state().status == nvrtc_remedy.INACTIVE
        here = probe() if platform is None else platform
        remedy = nvrtc_remedy.plan(here) if planned else nvrtc_remedy.state()
        if planned:
            patches = tuple(e.name for e in evaluate_all() if e.would_apply and e.requires_affected)
        else:
            patches = _serving_patches()
    except Exception as exc:  # the probe and the plan never raise by contract; be safe anyway
        why = f"the ladder could not be read: {type(exc).__name__}: {exc}"
        return (GpuService("this machine", "", RUNG_UNSERVED, why),)
    return services(here, remedy, patches, planned=planned, forced=devices.is_forced())


def status() -> list[PatchStatus]:
    """Every known patch (including ones that failed to load) and where it stands.

    A device-gated patch applied in this process carries, in its ``notes``, one ``ladder:``
    line per GPU: which rung serves it and why a cheaper one could not (:func:`ladder`).  Where
    the NVRTC remedy serves, a device-gated patch not applied is ``skipped`` with the remedy's
    line as its reason, and the same notes.
    """
    served = nvrtc_remedy.active()
    with _lock:
        result = []
        for reg in registrations():
            evaluation = _evaluate(
                reg, force=False, platform=None, deep=False, versions=installed_version
            )
            record = _records.get(reg.name) if _lookup().get(reg.name) is reg else None
            if record is not None:
                entry = _record_status(reg, record)
                if record.patch.requires_affected:
                    # Which rung serves each GPU, and why a cheaper one could not (the probe
                    # already ran: apply() needed it for this patch's device gate).
                    gpus = tuple(f"ladder: {service}" for service in ladder())
                    entry = replace(entry, notes=entry.notes + gpus)
                result.append(entry)
            elif (
                served is not None
                and evaluation.state == NOT_APPLIED
                and evaluation.requires_affected
            ):
                # A device-gated patch the NVRTC remedy made unnecessary: say so, as apply() did.
                why = f"{served.describe()}; nothing left for the patches"
                gpus = tuple(f"ladder: {service}" for service in ladder())
                result.append(_status_for(reg, SKIPPED, why, notes=gpus))
            else:
                result.append(_status_for(reg, evaluation.state, evaluation.state_reason))
        return result
