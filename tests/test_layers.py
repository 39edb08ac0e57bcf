"""The packages stay layered: contract <- model <- services (worker, ingest, batch, tracks, api) | training <- bench <- cli.

Every import of every module is checked, including imports inside functions: a lazy
import hides an upward dependency from a casual read but is one all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the project packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "emotion_stream": set(),  # the contract: keys, schema, settings, images, metrics
    "model": {"emotion_stream"},
    "tracks": {"emotion_stream"},  # pure tracking and its owner: no model
    "worker": {"emotion_stream", "model", "tracks"},  # a worker may own tracking; else services stay apart
    "ingest": {"emotion_stream", "model"},
    "batch": {"emotion_stream", "model"},
    "api": {"emotion_stream"},  # serves what the pipeline wrote: no model, no tracking
    # Offline training beside the services: it uses the serving crop and metadata, and
    # nothing that serves (model, tracks, worker, ingest, batch, bench) imports it.
    "training": {"emotion_stream", "model"},
    "bench": {"emotion_stream", "model", "tracks", "worker", "ingest", "batch", "api"},
    # the top: imported by none
    "cli": {"emotion_stream", "model", "tracks", "worker", "ingest", "batch", "api", "training", "bench"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import in a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_imports_a_layer_above_it(package):
    assert (ROOT / package / "__init__.py").is_file(), f"{package}/ is missing"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for imported, line in imported_packages(path)
        if imported in ALLOWED and imported != package and imported not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_lazy_imports(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from worker import serve\n    import bench.report\n")
    assert imported_packages(module) == {("worker", 2), ("bench", 3)}
