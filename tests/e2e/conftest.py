"""Fixtures for the end-to-end tests: real `orchestrator` processes over loopback, always ended."""
import pytest

from tests.e2e.e2e_kit import Processes


@pytest.fixture
def procs(tmp_path):
    """Start `orchestrator` processes for this test; every one is ended when the test ends."""
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.close()
