"""The house style that a machine can check (pyproject.toml [tool.ruff]): pyflakes' errors (unused or undefined
names), pycodestyle's, line length and import order, over every Python file of the checkout."""
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_lint_when_the_tree_is_checked_then_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("ruff")
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
