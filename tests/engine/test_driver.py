"""engine/driver.py's drivers in process: the same signals over UDP and TCP reach the same batches whichever
driver runs them (spin: one epoll over every descriptor; event: the batch in the readable callback, or coalesced
after the loop iteration), and they place orders at the simulated OMS."""
import asyncio
import socket
import threading
import time

import pytest
import uvloop

from engine import service
from engine.config import load_config
from engine.driver import run_event, run_spin
from kernels.dtypes import C_FILLS, C_MARKET_DATA, C_ORDERS, C_SIGNALS
from tests.e2e.e2e_kit import derive_config, market_data_frame, signal_frame

N_SIGNALS = 6


@pytest.fixture
def svc(tmp_path):
    config = load_config(derive_config(tmp_path / "config", keep=["momentum"]))
    built = service.build(config)
    yield built
    built.close()


def traffic(svc):
    """Market data and N_SIGNALS signals, half over UDP and half over TCP; a predicate: every one decided."""
    signal_id = svc.engine.state.config.strategies[0].signals[0]
    addresses = {kind: (host, int(port)) for kind, (host, port) in
                 ((k, a.rsplit(":", 1)) for k, a in svc.addresses().items())}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.create_connection(addresses["tcp"]) as tcp:
        udp.connect(addresses["udp"])
        udp.send(market_data_frame(0) + market_data_frame(1, bid=21_000.0, ask=21_000.5, last=21_000.25))
        for seq in range(1, N_SIGNALS + 1):
            frame = signal_frame(seq, signal_id=signal_id, value=1.0)
            if seq % 2:
                udp.send(frame)
            else:
                tcp.sendall(frame)
    counters = svc.engine.state.counters
    return lambda: counters[C_SIGNALS] == N_SIGNALS and counters[C_MARKET_DATA] == 2 and counters[C_ORDERS] > 0


def counts(svc):
    return {name: int(svc.engine.state.counters[c]) for name, c in
            (("signals", C_SIGNALS), ("market_data", C_MARKET_DATA), ("orders", C_ORDERS), ("fills", C_FILLS))}


def until(done, svc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not decided in time: {counts(svc)}"
        time.sleep(0.01)


def test_spin_driver_when_signals_come_on_udp_and_tcp_then_each_is_decided(svc):
    stop = threading.Event()
    failures = []

    def spin():
        try:
            run_spin(svc.engine, stop)
        except BaseException as e:  # noqa: BLE001 (the test thread reports it)
            failures.append(e)
    thread = threading.Thread(target=spin)
    thread.start()
    try:
        until(traffic(svc), svc)
    finally:
        stop.set()
        thread.join(10)
    assert not failures and not thread.is_alive()
    assert svc.engine.pending_input()[0] == 0, "nothing left undecided in rx"


@pytest.mark.parametrize("coalesce", [False, True], ids=["in_callback", "coalesced"])
def test_event_driver_when_signals_come_on_udp_and_tcp_then_each_is_decided(svc, coalesce):
    async def main():
        stop = asyncio.Event()
        driver = asyncio.get_running_loop().create_task(run_event(svc.engine, stop, coalesce=coalesce))
        await asyncio.sleep(0.05)
        done = traffic(svc)
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline, f"not decided in time: {counts(svc)}"
            await asyncio.sleep(0.01)
        stop.set()
        await driver
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
