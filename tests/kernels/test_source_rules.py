"""The rules of the hot path, enforced on the source of kernels/ (STYLE.md: "rules as a test")."""
import ast
import importlib
import pathlib
import sys

import numpy as np
from numba.core.registry import CPUDispatcher

import kernels.dtypes as dtypes
from kernels.arena import REGION_NAMES

KERNELS = pathlib.Path(__file__).resolve().parents[2] / "kernels"
ALLOWED_IMPORTS = {"numpy", "numba", "kernels", "math", "collections", "typing"}  # stdlib: arithmetic, declarations
ALLOWED_IN_INIT = {"hashlib", "os", "pathlib"}  # the cache-directory key, before numba loads
ALLOCATORS = {"empty", "zeros", "ones", "full", "array", "empty_like", "zeros_like", "ones_like", "full_like",
              "copy", "concatenate", "arange", "list", "dict", "set"}
DECORATORS = {"kernel", "helper", "inline"}
RECORD_FIELDS = {name for dtype in vars(dtypes).values() if isinstance(dtype, np.dtype) and dtype.names
                 for name in dtype.names}


def _modules():
    for path in sorted(KERNELS.glob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _compiled_functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            names = {d.func.id if isinstance(d, ast.Call) and isinstance(d.func, ast.Name) else getattr(d, "id", None)
                     for d in node.decorator_list}
            if names & DECORATORS:
                yield node


def test_kernels_when_imported_then_they_import_only_numpy_numba_and_themselves():
    for path, tree in _modules():
        allowed = ALLOWED_IMPORTS | (ALLOWED_IN_INIT if path.name == "__init__.py" else set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name}:{node.lineno} imports {roots - allowed}"


def test_kernels_when_compiled_then_no_body_calls_an_allocator():
    for path, tree in _modules():
        for fn in _compiled_functions(tree):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                    assert name not in ALLOCATORS, f"{path.name}:{node.lineno} {fn.name} calls {name}()"


def _region_of_state(node):
    """`state.<region>`: the Regions tuple of views is called `state` in every kernel (a region may share a
    name with a record field, like strategies' `signals` and `orders` counts)."""
    return isinstance(node.value, ast.Name) and node.value.id == "state" and node.attr in REGION_NAMES


def test_kernels_when_reading_records_then_they_use_item_access_not_attributes():
    for path, tree in _modules():
        for fn in _compiled_functions(tree):
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute) and node.attr in RECORD_FIELDS and not _region_of_state(node):
                    assert False, f"{path.name}:{node.lineno} {fn.name} reads .{node.attr}: use [\"{node.attr}\"]"


def test_kernels_when_public_then_they_have_one_explicit_signature_and_no_runtime():
    public = 0
    for path, _ in _modules():
        module = importlib.import_module(f"kernels.{path.stem}") if path.stem != "__init__" else sys.modules["kernels"]
        for name, obj in vars(module).items():
            if not isinstance(obj, CPUDispatcher) or obj.__module__ != module.__name__:
                continue
            assert obj.targetoptions.get("_nrt") is False, f"{module.__name__}.{name} compiles with numba's runtime"
            if "inline" not in obj.targetoptions:  # kernel(signature), not helper or inline
                public += 1
                assert len(obj.signatures) == 1, f"{module.__name__}.{name}: public kernel without a signature"
    assert public >= 5

