"""Fixtures for the end-to-end tests: real `orchestrator` processes over loopback, always ended."""
import pytest

from tests.e2e.e2e_kit import Processes


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Compile (or load) the kernels once in this process, so the disk cache is warm before any engine
    process starts: a cold cache would spend its first start compiling, longer than any test waits."""
    import kernels.batch  # noqa: F401  (the import compiles the fused batch for its signature)


@pytest.fixture
def procs(tmp_path):
    """Start `orchestrator` processes for this test; every one is ended when the test ends."""
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.close()
