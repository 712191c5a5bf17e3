"""A project cache holding one real NVRTC, laid out as ``fetch nvrtc`` leaves it."""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path


def fill_cache(cache_root: Path, library: str, version: str, cuda_major: int) -> str:
    """Put *library* (and the builtins library next to it) into
    ``<cache_root>/compilers/nvrtc/cu<major>/<version>/`` with a manifest; return the library's
    path there.  Hard links where the file system allows (the files are large), else copies."""
    folder = cache_root / "compilers" / "nvrtc" / f"cu{cuda_major}" / version
    folder.mkdir(parents=True)
    pattern = os.path.join(os.path.dirname(library), "libnvrtc-builtins.so.*")
    files = [library, *sorted(p for p in glob.glob(pattern) if p.count(".so.") == 1)]
    for path in files:
        target = folder / os.path.basename(path)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    manifest = {"kind": "nvrtc", "version": version, "files": [os.path.basename(p) for p in files]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder / os.path.basename(library))
