"""The engine's service loop over real loopback sockets, in one process: a signal frame sent on a UDP (or TCP)
socket -> Engine.poll + Engine.step (what the spin driver runs) -> the order frame read from the OMS end of the
engine's TCP link. The issue 3 path without the other processes, so without the CPU scheduling that dominates the
end-to-end figures on a busy 2-core machine: what the engine itself adds between a socket and a socket.

Budget (issue 3, spin driver): p50 <= 10 us, p99 <= 15 us, p99.9 <= 50 us end to end; this is its floor.

The engine is built by engine.service.build from a copy of bench/config listening on port 0 (the OS picks), with
its OMS link connected to a socket this bench listens on. Paced at one signal every INTERVAL_NS; each timed round
is send -> spin on poll until the datagram is in -> step -> read the 92-byte order frame; the HdrHistogram takes
the rounds with record_corrected_value. The untimed setup answers each order with a FILL and lets the engine apply
it, so the books never fill.
"""
import select
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from bench.budgets import E2E_US
from bench.conftest import record_latency, run
from bench.e2e import write_config
from bench.frames import Instruments, fill_signals, fills_for, report_frames, signal_frames
from bench.workloads import SOURCE
from engine import service
from engine.config import load_config
from kernels.dtypes import C_REPORTS
from wire.records import ORDER_FRAME_SIZE, order_view

INTERVAL_NS = 100_000  # 10 k signals/s, the end-to-end harness's lowest rate; well above a round's service time,
ROUNDS = 10_000        # so the correction only adds samples for real stalls, not for a schedule it cannot keep
POOL = 4096


class Loopback:
    """An engine with a UDP and a TCP listener and a TCP OMS link to us; one signal at a time."""

    def __init__(self, transport, engine_toml=""):
        """`engine_toml`: text appended to the engine.toml (a table of its own, e.g. [redis])."""
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        with tempfile.TemporaryDirectory(prefix="bench-loopback-") as tmp:
            directory = write_config(Path(tmp) / "config", "spin", 0, 0, self.listener.getsockname()[1])
            with open(directory / "engine.toml", "a") as f:
                f.write(engine_toml)
            config = load_config(directory)
        self.svc = service.build(config)
        self.engine = self.svc.engine
        self.oms, _ = self.listener.accept()
        self.oms.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        kind = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}[transport]
        address = next(t.address[:2] for t in self.engine.inbound
                       if type(t).__name__ == {"udp": "UdpReceiver", "tcp": "TcpServer"}[transport])
        self.sender = socket.socket(socket.AF_INET, kind)
        self.sender.connect(address)
        if transport == "tcp":
            self.sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = next(t for t in self.engine.inbound if type(t).__name__ == "TcpServer")
            deadline = time.monotonic() + 5.0
            while server.n_connections == 0 and time.monotonic() < deadline:  # let the TcpServer accept us
                self.engine.poll()
        self.oms.settimeout(5.0)  # a signal that made no order fails the bench instead of hanging it
        self.instruments = Instruments(config)
        self.pool = signal_frames(POOL)
        self.frames = []
        self.frame = b""
        self.k = 0
        self.buf = bytearray(ORDER_FRAME_SIZE)
        self.reports = report_frames(2)
        self.items = 1
        self.next = 0
        self.pending = False

    def close(self):
        for s in (self.sender, self.oms, self.listener):
            s.close()
        self.svc.close()

    def setup(self):
        """Untimed: answer the last order with a FILL and let the engine apply it; wait for the round's start."""
        if self.pending:
            self.answer()
            self.pending = False
        if self.k % POOL == 0:  # the next POOL signals of the workload, each with its own seq (ttl 0: never stale)
            fill_signals(self.pool, self.instruments, self.k, self.k + 1, SOURCE, 0, ttl_ns=0)
            self.frames = [f.tobytes() for f in self.pool]
        self.frame = self.frames[self.k % POOL]
        now = time.perf_counter_ns()
        if self.next == 0 or now - self.next > 1_000_000_000:
            self.next = now
        while time.perf_counter_ns() < self.next:
            pass
        self.next += INTERVAL_NS

    def call(self):
        """Timed: send -> poll until it is in -> step -> the whole order frame read at the OMS end."""
        self.sender.send(self.frame)
        engine = self.engine
        while not engine.poll():
            pass
        engine.step()
        view, got = memoryview(self.buf), 0
        while got < ORDER_FRAME_SIZE:
            got += self.oms.recv_into(view[got:])
        self.k += 1
        self.pending = True

    def answer(self):
        orders = order_view(self.buf, ORDER_FRAME_SIZE)
        self.oms.sendall(fills_for(orders, 0, self.reports, acks=False).view(np.uint8))
        counters = self.engine.state.counters
        seen = int(counters[C_REPORTS])
        deadline = time.monotonic() + 1.0
        while int(counters[C_REPORTS]) == seen and time.monotonic() < deadline:
            if self.engine.poll():
                self.engine.step()


def _bench(transport):
    @pytest.mark.benchmark(group="service_loopback")
    def test(benchmark):
        loopback = Loopback(transport)
        try:
            run(benchmark, loopback, rounds=ROUNDS, warmup_rounds=1000)
            s = record_latency(benchmark, INTERVAL_NS, budget_us=E2E_US["spin"])
            assert s["count"] >= ROUNDS
            if not benchmark.disabled:  # every order was filled: the books turned
                assert loopback.engine.state.counters[C_REPORTS] >= ROUNDS
        finally:
            loopback.close()
    test.__doc__ = f"signal frame over {transport} -> engine poll + step -> order frame at the OMS socket."
    return test


for _t in ("udp", "tcp"):
    globals()[f"test_loopback_{_t}_one_signal_latency"] = _bench(_t)


class SocketFloor:
    """The same socket work with no engine: a 70-byte datagram sent and read back (after a readiness poll), then a
    92-byte frame over TCP and read at the other end. What this machine's kernel charges for the path's syscalls."""

    def __init__(self):
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setblocking(False)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.connect(self.rx.getsockname())
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.out = socket.create_connection(listener.getsockname())
        self.out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.oms, _ = listener.accept()
        listener.close()
        self.ready = select.poll()
        self.ready.register(self.rx.fileno(), select.POLLIN)
        self.datagram, self.frame = bytes(70), bytes(ORDER_FRAME_SIZE)
        self.buf = bytearray(2048)
        self.items, self.next = 1, 0

    def setup(self):
        now = time.perf_counter_ns()
        if self.next == 0 or now - self.next > 1_000_000_000:
            self.next = now
        while time.perf_counter_ns() < self.next:
            pass
        self.next += INTERVAL_NS

    def call(self):
        self.tx.send(self.datagram)
        while not self.ready.poll(0):
            pass
        self.rx.recv_into(self.buf)
        self.out.send(self.frame)
        view, got = memoryview(self.buf), 0
        while got < ORDER_FRAME_SIZE:
            got += self.oms.recv_into(view[got:ORDER_FRAME_SIZE])

    def close(self):
        for s in (self.rx, self.tx, self.out, self.oms):
            s.close()


@pytest.mark.benchmark(group="service_loopback")
def test_loopback_socket_floor_latency(benchmark):
    """UDP datagram in + TCP frame out with no engine between: the floor under the loopback figures above."""
    floor = SocketFloor()
    try:
        run(benchmark, floor, rounds=ROUNDS, warmup_rounds=1000)
        record_latency(benchmark, INTERVAL_NS)
    finally:
        floor.close()
