"""``fetch nvrtc|ptxas``: put a compiler that knows the GPU into the cache (never installs)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import EXIT_OK, EXIT_PROBLEM


def _major(text: str) -> int:
    if text not in ("12", "13"):
        raise argparse.ArgumentTypeError(f"{text!r}: give 12 or 13")
    return int(text)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fetch",
        help="download a compiler that knows the GPU (NVRTC or ptxas) into the cache",
        description=(
            "Download NVIDIA's NVRTC or ptxas wheel for this torch build with `pip download "
            "--no-deps --require-hashes` (or take a local wheel), accept it only if its sha256 "
            "is the one NVIDIA published (pinned by blackwell-compat per version and "
            "platform), unpack only the compiler into the blackwell-compat cache "
            "(BLACKWELL_COMPAT_CACHE_DIR), and verify it as the remedy will (sm_120 and sm_121 "
            "when no GPU is visible). Nothing is installed into this environment; the remedies "
            "pick the cached compiler up."
        ),
        epilog="Exit status: 0 done (or already cached), 1 fetch failed (cache unchanged), "
        "2 usage error.",
    )
    parser.add_argument("kind", choices=("nvrtc", "ptxas"), help="which compiler")
    parser.add_argument(
        "--wheel", metavar="FILE", help="use this wheel file instead of downloading (offline)"
    )
    parser.add_argument(
        "--version",
        dest="release",
        metavar="X.Y.Z",
        help=(
            "fetch this release instead of the default (12.9.86 / 13.2.86); one whose sha256 "
            "blackwell-compat does not pin also needs --trust-sha256"
        ),
    )
    parser.add_argument(
        "--cuda",
        type=_major,
        metavar="MAJOR",
        help="CUDA major to fetch for (default: the installed torch build's)",
    )
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="the interpreter whose pip downloads (default: this one)",
    )
    parser.add_argument(
        "--trust-sha256",
        metavar="SHA256",
        help=(
            "accept a wheel blackwell-compat pins no sha256 for (another --version, a rebuilt "
            "wheel) if its sha256 is SHA256; check that value where the wheel is published. "
            "The report and the cache's manifest record that you named it"
        ),
    )
    parser.add_argument("--force", action="store_true", help="fetch again even when cached")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from ..remedies.fetch import FetchError, fetch

    try:
        result = fetch(
            args.kind,
            cuda_major=args.cuda,
            version=args.release,
            wheel=args.wheel,
            force=args.force,
            python=args.python,
            trust_sha256=args.trust_sha256,
        )
    except FetchError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}, indent=2))
        print(f"blackwell-compat: fetch: error: {exc}", file=sys.stderr)
        print("The cache was not changed.", file=sys.stderr)
        return EXIT_PROBLEM
    if args.json:
        print(json.dumps({"ok": True, **result.as_dict()}, indent=2))
        return EXIT_OK
    if result.reused:
        print(f"{result.kind} {result.version} is already in the cache: {result.folder}")
        print(f"  trust:   {result.trust}" if result.trust else "  trust:   (not recorded)")
        print("  (checked again just now; give --force to fetch it again)")
        for note in result.notes:
            print(f"  {note}")
        if result.unusable:
            print(_UNUSABLE)
        return EXIT_OK
    print(f"fetched {result.kind} {result.version} for CUDA {result.cuda_major}")
    print(f"  package: {result.package}=={result.version}")
    print(f"  wheel:   {result.wheel} ({result.origin})")
    print(f"  sha256:  {result.sha256}")
    print(f"  trust:   {result.trust}")
    print(f"  folder:  {result.folder}")
    print("  files:   " + ", ".join(result.files))
    for note in result.notes:
        print(f"  {note}")
    for line in result.checked:
        print(f"  verified: {line}")
    print("  archs:   " + ", ".join(result.archs))
    if result.unusable:
        print(_UNUSABLE)
    else:
        print("Nothing was installed into this environment; the remedy uses the cached copy.")
    return EXIT_OK


_UNUSABLE = (
    "Nothing was installed into this environment; the installed Triton refuses this copy, so "
    "the remedy will not use it (see the warning above)."
)
