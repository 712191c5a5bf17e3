"""Child process of the doctor: what torch and torchaudio say about themselves.

Run by :func:`blackwell_compat.doctor.facts.probe_stack` as ``__main__``; prints one record
for torch, then one for torchaudio, each as soon as it is known, so a crash while loading
torchaudio's native library still leaves the torch facts behind.  Imports torch only here,
inside :func:`main`, never in the doctor's own process.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from typing import Any

from ..loader import mapped_files
from .process import emit


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500]


def _mapped_nvrtc() -> list[str]:
    """The libnvrtc files this process has mapped (Linux), in first-seen order."""
    return mapped_files("libnvrtc.so")


def torch_facts(touch_cuda: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"section": "torch", "installed": False}
    if importlib.util.find_spec("torch") is None:
        return record
    record["installed"] = True
    try:
        import torch
    except BaseException as exc:  # an ImportError, an OSError from a missing CUDA library...
        record["error"] = f"import torch failed: {_short(exc)}"
        return record
    record["version"] = str(torch.__version__)
    record["cuda"] = getattr(torch.version, "cuda", None)
    record["hip"] = getattr(torch.version, "hip", None)
    record["loaded_nvrtc"] = _mapped_nvrtc()
    arch_list: list[str] = []
    source = ""
    try:
        flags = getattr(torch._C, "_cuda_getArchFlags", None)
        text = flags() if flags is not None else None
        if text:
            arch_list = str(text).split()
            source = "torch._C._cuda_getArchFlags()"
    except Exception as exc:
        record["arch_list_error"] = _short(exc)
    if touch_cuda:
        try:
            record["cuda_available"] = bool(torch.cuda.is_available())
            if record["cuda_available"]:
                listed = list(torch.cuda.get_arch_list())
                if listed:
                    arch_list, source = listed, "torch.cuda.get_arch_list()"
                devices = []
                for index in range(torch.cuda.device_count()):
                    major, minor = torch.cuda.get_device_capability(index)
                    devices.append(
                        {
                            "index": index,
                            "name": torch.cuda.get_device_name(index),
                            "capability": [major, minor],
                        }
                    )
                record["devices"] = devices
        except BaseException as exc:
            record["cuda_error"] = _short(exc)
        # torch may load NVRTC only once CUDA is initialised; look again.
        record["loaded_nvrtc"] = _mapped_nvrtc()
    record["arch_list"] = arch_list
    record["arch_list_source"] = source
    return record


def _torchaudio_cuda_version() -> Any:
    """The CUDA version torchaudio's native library was built for (``12040`` for 12.4,
    ``None`` for a CPU-only build), asked where the installed torchaudio keeps it.

    Newer torchaudio (2.11 here) registers it as the op ``torch.ops._torchaudio.cuda_version``;
    torchaudio 2.6 has no such op and exposes it on its extension module
    ``torchaudio.lib._torchaudio`` (what its own ``_check_cuda_version`` calls).
    """
    import torch

    namespace = torch.ops._torchaudio
    if hasattr(namespace, "cuda_version"):
        return namespace.cuda_version()
    from torchaudio.lib import _torchaudio

    return _torchaudio.cuda_version()


def torchaudio_facts() -> dict[str, Any]:
    record: dict[str, Any] = {"section": "torchaudio", "installed": False}
    if importlib.util.find_spec("torchaudio") is None:
        return record
    record["installed"] = True
    try:
        import torchaudio
    except BaseException as exc:
        record["error"] = f"import torchaudio failed: {_short(exc)}"
        record["native_loaded"] = False
        return record
    record["version"] = str(getattr(torchaudio, "__version__", "") or "") or None
    try:
        from torchaudio._extension import _IS_TORCHAUDIO_EXT_AVAILABLE
    except BaseException as exc:
        record["native_loaded"] = False
        record["error"] = f"torchaudio's native library failed to load: {_short(exc)}"
        return record
    record["native_loaded"] = bool(_IS_TORCHAUDIO_EXT_AVAILABLE)
    if _IS_TORCHAUDIO_EXT_AVAILABLE:
        try:
            version = _torchaudio_cuda_version()
        except BaseException as exc:
            # The library loaded; only its CUDA version could not be read (not a load failure).
            record["cuda_version_error"] = _short(exc)
        else:
            if version is None:
                record["cuda_version"] = None
            else:
                number = int(version)
                record["cuda_version"] = f"{number // 1000}.{number % 1000 // 10}"
            record["cpu_only"] = version is None
    return record


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    touch_cuda = "--no-cuda" not in args
    warnings.simplefilter("ignore")
    emit(torch_facts(touch_cuda))
    if "--no-torchaudio" not in args:
        emit(torchaudio_facts())
    return 0


if __name__ == "__main__":
    sys.exit(main())
