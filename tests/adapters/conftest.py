"""Fixtures for the transport tests."""
import asyncio
import gc
import os

import pytest
import uvloop


def open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="session", autouse=True)
def event_loop_globals():
    """libuv opens a process-wide signal pipe the first time a uvloop loop runs: open it before any test
    counts fds, so it is not taken for a leak."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.sleep(0))


@pytest.fixture(scope="session", autouse=True)
def aeron_globals(tmp_path_factory):
    """The Aeron C library opens /dev/urandom once per process and keeps it: open it before any test counts fds."""
    from adapters.aeron import AeronDriverConfig, AeronNode
    with AeronNode(AeronDriverConfig(directory=str(tmp_path_factory.mktemp("aeron") / "driver"))):
        pass


@pytest.fixture(autouse=True)
def no_leaked_fds():
    """Every socket and file a test opens is closed by its end (an unclosed one also fails by ResourceWarning)."""
    gc.collect()
    before = open_fds()
    yield
    gc.collect()
    assert open_fds() == before, "test leaked file descriptors"
