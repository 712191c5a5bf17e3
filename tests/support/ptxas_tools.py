"""Stand-in ptxas tools, Triton folders and wheels for the ptxas probe, remedy and fetch tests."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

PTXAS_WHEEL_NAME = "nvidia_cuda_nvcc_cu12-12.9.86-py3-none-manylinux2010_x86_64.whl"


def make_tool(path, release="12.8", rejects=("sm_121a", "sm_103a"), sleep=False):
    rejected = "|".join(f"--gpu-name={name}" for name in rejects) or "--never--"
    body = f"""#!/bin/sh
{"sleep 30" if sleep else ""}
if [ "$1" = "--version" ]; then
  echo "ptxas: NVIDIA (R) Ptx optimizing assembler"
  echo "Cuda compilation tools, release {release}, V{release}.0"
  exit 0
fi
for arg in "$@"; do
  case "$arg" in
    {rejected})
      echo "ptxas fatal   : Value '${{arg#--gpu-name=}}' is not defined for option 'gpu-name'" >&2
      exit 255;;
  esac
done
exit 0
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def make_triton(root, *, blackwell_tool, ptxas_release="12.8", blackwell_release="12.9"):
    triton = root / "triton"
    bin_dir = triton / "backends" / "nvidia" / "bin"
    make_tool(bin_dir / "ptxas", ptxas_release)
    if blackwell_tool:
        make_tool(bin_dir / "ptxas-blackwell", blackwell_release, rejects=())
    knobs = 'ptxas_blackwell = env_nvidia_tool("ptxas-blackwell")\n' if blackwell_tool else ""
    (triton / "knobs.py").write_text(knobs + 'ptxas = env_nvidia_tool("ptxas")\n')
    return str(triton)


def make_wheel(path: Path, members: dict[str, bytes], *, links=(), record=None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            mode = stat.S_IFLNK | 0o777 if name in links else stat.S_IFREG | 0o755
            info.external_attr = mode << 16
            archive.writestr(info, data)
        if record is not None:
            archive.writestr("nvidia_cuda_nvcc_cu12-12.9.86.dist-info/RECORD", record)
    return path
