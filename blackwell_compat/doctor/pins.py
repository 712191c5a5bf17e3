"""Known-incompatible pins of the installed speech stack (the doctor's ``pins`` check).

Blackwell GPUs need torch >= 2.7; the speech libraries people run on them were released for
older stacks and break in ways that have nothing to do with NVRTC.  Each rule below is a
measured fact (Python 3.11, CPU; see ``docs/patches/xtts.md``) with the smallest fix:

- Coqui ``TTS`` 0.22 (the last release of the original package) with ``transformers``:
  >= 4.57 the import of ``TTS.tts.models.xtts`` fails (``BeamSearchScorer`` was removed);
  >= 4.52 ``Xtts.inference()`` fails (``GPT2InferenceModel`` has no ``generate``);
  >= 4.41 ``Xtts.inference_stream()`` fails.  ``transformers==4.51.3`` runs ``inference``,
  ``4.40.2`` also ``inference_stream``.
- ``TTS`` 0.22 on Python >= 3.12: the release declares ``Requires-Python <3.12``.
- ``TTS`` 0.22 on torch >= 2.6: the checkpoint load needs the ``coqui_tts`` patch.
- ``TTS`` and ``coqui-tts`` both installed: both write the ``TTS`` package.
- ``TTS`` 0.22 with torchaudio >= 2.9 and no torchcodec: ``torchaudio.load`` (how XTTS reads
  the reference voice) goes through torchcodec since torchaudio 2.9.
- chatterbox-tts's exact pins (``torch==2.6.0``, ``torchaudio==2.6.0``) against a newer
  installed torch: expected, and fine, when it was installed with ``--no-deps`` (the only way
  to use it next to a Blackwell-capable torch); reported as information, not as a problem.

Everything is read from package metadata: nothing here imports torch or a target library.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..versions import in_range, installed_version, release_string
from .model import FAIL as CHECK_FAIL
from .model import PASS, SKIP, CheckResult
from .model import WARN as CHECK_WARN

if TYPE_CHECKING:
    from .facts import Facts

CHECK_ID = "pins"
TITLE = "Speech-stack pins"

INFO = "info"
WARN = "warn"
FAIL = "fail"
_ORDER = {INFO: 0, WARN: 1, FAIL: 2}

#: Distributions whose versions the rules read.
DISTRIBUTIONS = (
    "TTS",
    "coqui-tts",
    "transformers",
    "torch",
    "torchaudio",
    "torchcodec",
    "chatterbox-tts",
)
#: The releases of the original Coqui ``TTS`` the transformers facts were measured on.
TTS_RANGE = ">=0.22,<0.23"
#: Where XTTS lives (``TTS.tts.models.xtts``, with its GPT2-based streaming generator).
TTS_XTTS_RANGE = ">=0.20,<0.23"

#: (lowest transformers release that breaks it, severity, what breaks, the pin that fixes it)
TRANSFORMERS_BREAKS: tuple[tuple[str, str, str, str], ...] = (
    (
        "4.57",
        FAIL,
        "`import TTS.tts.models.xtts` fails: transformers 4.57 removed BeamSearchScorer, "
        "which TTS's streaming generator imports",
        "4.51.3",
    ),
    (
        "4.52",
        FAIL,
        "Xtts.inference() fails: TTS's GPT2InferenceModel has no `generate` any more (it "
        "does not inherit GenerationMixin)",
        "4.51.3",
    ),
    (
        "4.41",
        WARN,
        "Xtts.inference_stream() fails (measured: it works up to transformers 4.40.2); "
        "inference() works",
        "4.40.2",
    ),
)


@dataclass(frozen=True)
class SpeechStack:
    """The installed versions the rules look at (``None``: not installed)."""

    python: tuple[int, int]
    versions: Mapping[str, str | None]
    requirements: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Declared ``Requires-Dist`` lines of distributions whose pins are compared."""

    def version(self, distribution: str) -> str | None:
        return self.versions.get(distribution)

    def has(self, distribution: str, spec: str = "") -> bool:
        version = self.version(distribution)
        return version is not None and in_range(version, spec)


@dataclass(frozen=True)
class PinFinding:
    """One known incompatibility (or a pin mismatch that is fine), with its fix."""

    id: str
    severity: str
    message: str
    hint: str = ""
    commands: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
            "commands": list(self.commands),
        }


def read_stack() -> SpeechStack:
    """This interpreter and its installed distributions (metadata only)."""
    versions = {name: installed_version(name) for name in DISTRIBUTIONS}
    requirements: dict[str, tuple[str, ...]] = {}
    if versions.get("chatterbox-tts"):
        requirements["chatterbox-tts"] = _requires("chatterbox-tts")
    return SpeechStack(
        python=(sys.version_info[0], sys.version_info[1]),
        versions=versions,
        requirements=requirements,
    )


def _requires(distribution: str) -> tuple[str, ...]:
    from importlib import metadata

    try:
        return tuple(metadata.requires(distribution) or ())
    except Exception:
        return ()


def _release(version: str) -> tuple[int, ...]:
    text = release_string(version) or "0"
    return tuple(int(part) for part in text.split("."))


# -- the rules ---------------------------------------------------------------------------------


def _tts_transformers(stack: SpeechStack) -> list[PinFinding]:
    tts = stack.version("TTS")
    transformers = stack.version("transformers")
    if tts is None or transformers is None or not in_range(tts, TTS_RANGE):
        return []
    for lowest, severity, what, fix in TRANSFORMERS_BREAKS:
        if in_range(transformers, f">={lowest}"):
            also = "" if fix == "4.40.2" else " (4.40.2 if you also need inference_stream())"
            return [
                PinFinding(
                    id=f"tts022-transformers-{lowest}",
                    severity=severity,
                    message=f"TTS {tts} with transformers {transformers}: {what}",
                    hint=f"Pin transformers {fix}{also}; or move to the maintained fork "
                    "coqui-tts, which supports current transformers.",
                    commands=(f'pip install "transformers=={fix}"',),
                )
            ]
    return []


def _tts_python(stack: SpeechStack) -> list[PinFinding]:
    tts = stack.version("TTS")
    if tts is None or not in_range(tts, TTS_RANGE) or stack.python < (3, 12):
        return []
    python = ".".join(map(str, stack.python))
    return [
        PinFinding(
            id="tts022-python",
            severity=FAIL,
            message=f"TTS {tts} on Python {python}: the release supports Python < 3.12 only "
            "(Requires-Python, no wheels; it was forced in)",
            hint="Use a Python 3.11 environment for TTS 0.22, or replace it with the "
            "maintained fork coqui-tts (Python 3.10 and newer).",
            commands=("pip uninstall -y TTS", "pip install coqui-tts"),
        )
    ]


def _tts_torch(stack: SpeechStack) -> list[PinFinding]:
    tts = stack.version("TTS")
    torch = stack.version("torch")
    if tts is None or torch is None or not in_range(tts, TTS_XTTS_RANGE):
        return []
    if _release(torch)[:2] < (2, 6):
        return []
    return [
        PinFinding(
            id="tts022-weights-only",
            severity=INFO,
            message=f"TTS {tts} on torch {torch}: torch.load defaults to weights_only=True, "
            "so XTTS checkpoints only load with the coqui_tts patch (blackwell_compat.apply()"
            "), which allow-lists exactly the four XTTS config classes for that load",
            hint="Do not pass weights_only=False: it lets a checkpoint file run arbitrary code.",
        )
    ]


def _both_tts(stack: SpeechStack) -> list[PinFinding]:
    if stack.version("TTS") is None or stack.version("coqui-tts") is None:
        return []
    return [
        PinFinding(
            id="tts-and-coqui-tts",
            severity=FAIL,
            message=f"TTS {stack.version('TTS')} and coqui-tts {stack.version('coqui-tts')} "
            "are both installed: both provide the `TTS` package, so the files on disk are a "
            "mix of whichever was installed last",
            hint="Keep one of them: uninstall both, then install the one you use.",
            commands=("pip uninstall -y TTS coqui-tts", "pip install coqui-tts"),
        )
    ]


def _tts_torchcodec(stack: SpeechStack) -> list[PinFinding]:
    tts = stack.version("TTS")
    torchaudio = stack.version("torchaudio")
    if tts is None or torchaudio is None or not in_range(tts, TTS_XTTS_RANGE):
        return []
    if _release(torchaudio)[:2] < (2, 9) or stack.version("torchcodec") is not None:
        return []
    return [
        PinFinding(
            id="tts022-torchcodec",
            severity=WARN,
            message=f"TTS {tts} with torchaudio {torchaudio} and no torchcodec: XTTS reads the "
            "reference voice with torchaudio.load, which goes through torchcodec since "
            "torchaudio 2.9 (get_conditioning_latents fails)",
            hint="Install torchcodec (it needs FFmpeg's shared libraries, e.g. "
            "`apt install ffmpeg`), or read the audio yourself (soundfile) and pass tensors "
            "to get_speaker_embedding / get_gpt_cond_latents.",
            commands=("pip install torchcodec",),
        )
    ]


def _exact_pins(requirements: Sequence[str], python: tuple[int, int]) -> dict[str, str]:
    """``{"torch": "2.6.0"}`` for every ``name==version`` line whose marker holds here."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    environment = {"python_version": f"{python[0]}.{python[1]}", "extra": ""}
    pins: dict[str, str] = {}
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is not None:
            try:
                if not requirement.marker.evaluate(environment):
                    continue
            except Exception:
                continue
        specs = list(requirement.specifier)
        if len(specs) == 1 and specs[0].operator == "==":
            pins[str(canonicalize_name(requirement.name))] = specs[0].version
    return pins


def _chatterbox_torch(stack: SpeechStack) -> list[PinFinding]:
    chatterbox = stack.version("chatterbox-tts")
    if chatterbox is None:
        return []
    pins = _exact_pins(stack.requirements.get("chatterbox-tts", ()), stack.python)
    findings = []
    for name in ("torch", "torchaudio"):
        wanted, installed = pins.get(name), stack.version(name)
        if wanted is None or installed is None or in_range(installed, f"=={wanted}"):
            continue
        findings.append(
            PinFinding(
                id=f"chatterbox-{name}-pin",
                severity=INFO,
                message=f"chatterbox-tts {chatterbox} pins {name}=={wanted}; {name} "
                f"{installed} is installed. Expected and fine when chatterbox-tts was "
                "installed with --no-deps next to a newer torch (Blackwell GPUs need torch "
                ">= 2.7); `pip check` will keep listing it",
                hint="Nothing to do. Reinstalling chatterbox-tts with dependencies would "
                f"replace your {name} with {wanted}: keep using --no-deps.",
            )
        )
    return findings


PIN_RULES: tuple[Callable[[SpeechStack], list[PinFinding]], ...] = (
    _both_tts,
    _tts_python,
    _tts_transformers,
    _tts_torchcodec,
    _tts_torch,
    _chatterbox_torch,
)


def find_pins(stack: SpeechStack) -> list[PinFinding]:
    """Every rule's findings for *stack*, most severe first."""
    findings = [finding for rule in PIN_RULES for finding in rule(stack)]
    return sorted(findings, key=lambda f: -_ORDER[f.severity])


# -- the doctor check --------------------------------------------------------------------------


def pins_result(stack: SpeechStack) -> CheckResult:
    """The ``pins`` check's result for *stack*."""
    present = {
        name: version
        for name, version in stack.versions.items()
        if name in ("TTS", "coqui-tts", "chatterbox-tts") and version is not None
    }
    data: dict[str, Any] = {
        "python": ".".join(map(str, stack.python)),
        "versions": dict(stack.versions),
        "findings": [],
    }
    if not present:
        return CheckResult(
            id=CHECK_ID,
            title=TITLE,
            status=SKIP,
            summary="no Coqui TTS, coqui-tts or chatterbox-tts installed",
            data=data,
        )
    findings = find_pins(stack)
    data["findings"] = [f.as_dict() for f in findings]
    stack_line = ", ".join(f"{name} {version}" for name, version in present.items())
    worst = findings[0].severity if findings else INFO
    status = {FAIL: CHECK_FAIL, WARN: CHECK_WARN}.get(worst, PASS)
    problems = [f for f in findings if f.severity != INFO]
    if problems:
        summary = f"{stack_line}: {len(problems)} known incompatibilit" + (
            "y" if len(problems) == 1 else "ies"
        )
    else:
        summary = f"{stack_line}: no known incompatible pins"
    details: list[str] = []
    hints: list[str] = []
    commands: list[str] = []
    for finding in findings:
        details.append(f"{finding.severity.upper()}: {finding.message}")
        if finding.severity == INFO:
            if finding.hint:
                details.append(f"  {finding.hint}")
            continue
        if finding.hint:
            hints.append(finding.hint)
        hints.extend(f"  $ {command}" for command in finding.commands)
        commands.extend(c for c in finding.commands if c not in commands)
    return CheckResult(
        id=CHECK_ID,
        title=TITLE,
        status=status,
        summary=summary,
        details=tuple(details),
        hint="\n".join(hints) or None,
        commands=tuple(commands),
        data=data,
    )


def check_pins(facts: Facts | None = None) -> CheckResult:
    """The doctor check: reads this interpreter's installed distributions (not *facts*,
    which carry no package list)."""
    return pins_result(read_stack())
