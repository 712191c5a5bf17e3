"""The environment check: the library's variables, judged as the command line judges them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ... import config
from ...engine import known_strategies
from ..facts import Facts
from ..hints import Fix
from ..model import FAIL, PASS, WARN, CheckResult, result

_RELATED = (
    "TRITON_PTXAS_PATH",
    "TRITON_PTXAS_BLACKWELL_PATH",
    "PYTORCH_KERNEL_CACHE_PATH",
    "USE_PYTORCH_KERNEL_CACHE",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_HOME",
    "CUDA_PATH",
)


def _known_patches(facts: Facts) -> dict[str, tuple[str, ...]]:
    """Patch name -> its strategies (the facts' patches, else the registered ones)."""
    if facts.patches is not None:
        return {e.name: e.strategies for e in facts.patches}
    return known_strategies()


def _about(problem: str, name: str) -> bool:
    """Whether *problem* (a message of :func:`config.environment_problems`) is about *name*."""
    return problem.startswith(name) and problem[len(name) : len(name) + 1] in ("=", ":", " ")


def _meaning(name: str, raw: str, env: Mapping[str, str]) -> str:
    """What a well-formed value of *name* does."""
    if name == config.DISABLE:
        return f"disables {', '.join(config.disabled_names(env)) or 'nothing'}"
    if name == config.EMULATE:
        arch = config.emulated_arch_from_env(env)
        return f"emulates {arch} on CPU tensors" if arch else "emulation off"
    if name == config.STRATEGY:
        wanted = config.strategies_from_env(env)
        return ", ".join(f"{p} uses {s}" for p, s in wanted.items()) or "nothing"
    if name in (config.AUTO, config.FORCE):
        return "on" if config.parse_bool(name, env) else "off"
    if name == config.PROBE_TIMEOUT:
        return f"probe timeout {raw.strip()} s" if raw.strip() else "default probe timeout"
    if name == config.NVRTC:
        path = config.nvrtc_from_env(env)
        return f"the NVRTC remedy tries {path} first" if path else "NVRTC remedy off"
    if name == config.CACHE_DIR:
        return f"cache folder {raw}" if raw.strip() else "default cache folder"
    return raw


def check_environment(facts: Facts) -> CheckResult:
    """Judged by :func:`config.environment_problems`, the rule the command line applies."""
    title = "Environment"
    env = facts.env
    details: list[str] = []
    values: dict[str, Any] = {name: env[name] for name in config.ALL_VARIABLES if name in env}
    status = PASS
    problems = config.environment_problems(_known_patches(facts), env) if values else []
    for name, raw in values.items():
        own = [problem for problem in problems if _about(problem, name)]
        if own:
            details.extend(f"{name}={raw!r}: INVALID: {problem}" for problem in own)
        else:
            details.append(f"{name}={raw!r}: {_meaning(name, raw, env)}")
    related = {name: env[name] for name in _RELATED if name in env}
    for name, value in related.items():
        details.append(f"{name}={value!r}")
    emulated = facts.platform.emulated_arch
    if problems:
        status = FAIL
        summary = f"{len(problems)} malformed variable(s): {problems[0]}"
        fixes = [Fix("Fix or unset the variable(s); the accepted forms are in the message.")]
    else:
        fixes = []
        set_names = [n for n in config.ALL_VARIABLES if n in values]
        summary = (
            f"in effect: {', '.join(set_names)}"
            if set_names
            else "no BLACKWELL_COMPAT_* variable set"
        )
    if emulated and not problems:
        status = WARN
        summary = f"emulation active ({emulated}): CPU tensors fail as on that GPU; " + summary
        fixes.append(Fix(f"Unset {config.EMULATE} to stop emulating."))
    return result(
        "environment",
        title,
        status,
        summary,
        details,
        fixes,
        {"variables": values, "related": related, "emulated_arch": emulated},
    )
