"""The import picture runs one way: cluster/core (the foundation) imports no other package; envs and
skills import only the foundation (and themselves); actors and learner import the foundation, envs
and skills but not each other; the driver (the rest of cluster/, serving included) may import all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cluster", "actors", "learner", "envs", "skills")
ALLOWED = {
    "core": {"core"},
    "envs": {"core", "envs"},
    "skills": {"core", "skills"},
    "actors": {"core", "envs", "skills", "actors"},
    "learner": {"core", "envs", "skills", "learner"},
    "driver": {"core", "envs", "skills", "actors", "learner", "driver"},
}


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] == "cluster":
        return "core" if parts[1:2] == ["core"] else "driver"
    return parts[0]


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


FILES = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_no_import_reaches_up(path):
    mine = layer(".".join(path.relative_to(ROOT).with_suffix("").parts))
    bad = [m for m in imports(path) if (other := layer(m)) is not None and other not in ALLOWED[mine]]
    assert not bad, f"{path.relative_to(ROOT)} ({mine}) imports {bad}"
