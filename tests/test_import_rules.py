"""What may import what (docs/design.md, "Rooms"): imports point down, engine -> sim -> adapters -> wire -> kernels,
and nothing in the product imports bench/, tests/ or reference/ (the plain-Python rules: the kernels' oracle
and the benches' baseline, not part of the product). kernels/ imports nothing but numpy, numba and itself
(tests/kernels/test_source_rules.py holds it to that). Every import counts, a lazy one inside a function too."""
import ast
import importlib
import inspect
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("kernels", "wire", "adapters", "sim", "engine")  # each may import the ones before it, and itself
OUTSIDE = ("bench", "tests", "reference")                   # the product never imports these


def imported_packages(path):
    """(line, top-level package) of every import in a file, relative imports resolved to their package."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, (path.relative_to(ROOT).parts[0] if node.level else (node.module or "").split(".")[0])


def files_of(package):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", LAYERS)
def test_imports_when_a_product_package_imports_then_only_itself_and_the_layers_below(package):
    allowed = set(LAYERS[:LAYERS.index(package) + 1])
    forbidden = (set(LAYERS) - allowed) | set(OUTSIDE)
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {top}"
             for path in files_of(package) for line, top in imported_packages(path) if top in forbidden]
    assert not wrong, "\n".join(wrong)


def test_imports_when_the_rule_is_checked_then_it_sees_every_product_file():
    """The rule is only as good as its reach: every product package is a layer, and each has files."""
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages - set(OUTSIDE) == set(LAYERS)
    assert all(files_of(package) for package in LAYERS)


def test_imports_when_reference_takes_from_kernels_then_only_the_contract_never_a_function():
    """reference/ is the kernels' independent oracle: from kernels/ it takes the contract (constants, dtypes, region
    and ring ids), never a function or a module to call one through, compiled or as Python."""
    wrong = []
    for path in files_of("reference"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{node.lineno}" if hasattr(node, "lineno") else ""
            if isinstance(node, ast.Import):
                wrong += [f"{where} imports {alias.name}" for alias in node.names if alias.name.startswith("kernels")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kernels":
                module = importlib.import_module(node.module)
                wrong += [f"{where} imports {node.module}.{alias.name}" for alias in node.names
                          if callable(getattr(module, alias.name)) or inspect.ismodule(getattr(module, alias.name))]
    assert not wrong, "\n".join(wrong)
