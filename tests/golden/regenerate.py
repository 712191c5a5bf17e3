"""Regenerate the golden reference files under ``tests/golden/``.

    python tests/golden/regenerate.py            # every registered target
    python tests/golden/regenerate.py torchaudio # only these
    python tests/golden/regenerate.py --list

Each golden is the output of the *reference* computation: on the CPU, with no patch applied and
no emulation, exactly as the target library computes it.  Run it in the full test environment
(the one with every target library installed) and commit the JSON files it writes; their
``versions`` block records what produced them.

Registry: one entry per golden file.  ``module`` is a module importable with ``tests/`` on
``sys.path`` that defines ``CASES``: a mapping of case name -> object with a ``run()`` method
(or a plain callable) returning a tensor.  ``distributions`` are the packages whose versions are
recorded.  To add a target, add a ``cases_<name>.py`` module and an entry here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parent.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


@dataclass(frozen=True)
class Entry:
    module: str
    distributions: tuple[str, ...]


REGISTRY: dict[str, Entry] = {
    # part A: torchaudio (incl. pyannote/WhisperX), s3tokenizer, whisper
    "torchaudio": Entry("golden.cases_torchaudio", ("torch", "torchaudio")),
    "pyannote": Entry("golden.cases_pyannote", ("torch", "torchaudio", "pyannote.audio")),
    "s3tokenizer": Entry("golden.cases_s3tokenizer", ("torch", "s3tokenizer")),
    "whisper": Entry("golden.cases_whisper", ("torch", "openai-whisper")),
    # part B: kokoro, chatterbox
    "kokoro": Entry("golden.cases_kokoro", ("torch", "kokoro", "transformers")),
    "chatterbox": Entry(
        "golden.cases_chatterbox",
        ("torch", "torchaudio", "chatterbox-tts", "s3tokenizer", "resemble-perth", "librosa"),
    ),
}


def run_case(case: Any) -> Any:
    return case.run() if hasattr(case, "run") else case()


def produce(name: str) -> Path:
    """Compute every case of *name* as the reference (CPU, unpatched, no emulation)."""
    from blackwell_compat import emulation, engine
    from golden import store

    if emulation.is_active():
        raise SystemExit(
            "refusing to make goldens under emulation (unset BLACKWELL_COMPAT_EMULATE)"
        )
    engine.revert()
    entry = REGISTRY[name]
    module = importlib.import_module(entry.module)
    summaries = {
        case_name: store.summarize(run_case(case)) for case_name, case in module.CASES.items()
    }
    return store.save(name, summaries, entry.distributions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="golden files to rebuild (default: all)")
    parser.add_argument("--list", action="store_true", help="list the registry and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, entry in REGISTRY.items():
            print(f"{name:<14} {entry.module}  ({', '.join(entry.distributions)})")
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown golden name(s): {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    failed = 0
    for name in args.names or list(REGISTRY):
        try:
            path = produce(name)
        except ImportError as exc:
            print(f"{name}: skipped, a target library is missing ({exc})", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: wrote {path.relative_to(TESTS_DIR.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
