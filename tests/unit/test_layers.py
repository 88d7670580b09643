"""Imports run one way: cli -> train -> auxtasks -> meta / nn -> core (issue 12).

Each package may import only from the layers below it; data, baselines and analysis sit
beside train and may not import it (analysis reads run folders, not trainers), except where
listed. Checked on the source with ``ast``, so a lazy import inside a function counts too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> the packages it may import (besides itself and the standard/third-party libraries)
ALLOWED = {
    "maxl.core": set(),
    "maxl.nn": {"maxl.core"},
    "maxl.meta": {"maxl.core"},
    "auxtasks": {"maxl.core", "maxl.nn", "maxl.meta"},
    "maxl.data": {"maxl.core"},
    "maxl.baselines": {"maxl.core", "maxl.data"},
    "maxl.train": {"maxl.core", "maxl.nn", "maxl.meta", "auxtasks", "maxl.data", "maxl.baselines"},
    "maxl.analysis": {"maxl.core", "maxl.nn", "maxl.data", "maxl.train"},
    "maxl.cli": {"maxl.core", "maxl.nn", "maxl.meta", "auxtasks", "maxl.data", "maxl.train", "maxl.analysis"},
}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "auxtasks":
        return "auxtasks"
    if parts[0] == "maxl" and len(parts) > 1:
        return ".".join(parts[:2])
    return None


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from maxl import train`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


FILES = [
    p
    for d in ("maxl", "auxtasks")
    for p in sorted((ROOT / d).rglob("*.py"))
    if p.name != "__main__.py" and p != ROOT / "maxl" / "__init__.py"
]


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_imports_run_one_way(path):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own = package_of(module)
    bad = sorted(m for m in imports(path) if (p := package_of(m)) and p != own and p not in ALLOWED[own])
    assert not bad, f"{module} ({own}) imports {bad}; allowed: {sorted(ALLOWED[own])}"
