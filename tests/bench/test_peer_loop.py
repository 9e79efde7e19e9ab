"""bench/peer_loop.py: the compiled loop sends what the Python sender sends, answers what the Python receiver
answers (byte for byte), and hands a frame it does not read back to Python."""
import socket
import threading
import time

import numpy as np
import pytest

from bench import CONFIG_DIR
from bench.floor import Forwarder
from bench.frames import fills_for, report_frames
from bench.loadgen import NS, Sender, instruments_of
from bench.oms_receiver import Receiver
from bench.peer_loop import DONE, SLOW, Loop
from kernels.dtypes import MSG_ORDER, MSG_SIGNAL
from wire.frames import encode_frame, iter_frames
from wire.records import records
from wire.schema import Order


@pytest.fixture(scope="module")
def loop():
    return Loop()


@pytest.fixture(scope="module")
def instruments():
    return instruments_of(CONFIG_DIR)


@pytest.fixture
def link():
    rx = Receiver()
    engine = socket.create_connection(("127.0.0.1", rx.port))
    while rx.conn is None:
        rx.poll()
    yield rx, engine
    engine.close()
    rx.close()


def _orders(n):
    o = records(MSG_ORDER, n)
    o["order_id"], o["strategy"], o["deploy"] = np.arange(1, n + 1), np.arange(n) % 4, 2
    o["qty"], o["price"] = np.arange(1, n + 1), 50.5 + np.arange(n)
    o["signal_source"], o["signal_seq"], o["signal_ts_ns"] = 9, np.arange(1, n + 1), 7_000 + np.arange(n)
    return o


def test_loop_when_udp_run_then_every_datagram_carries_its_seq_and_intended_time(loop, instruments):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rx.settimeout(5)
        s = Sender("udp", "127.0.0.1", rx.getsockname()[1], 20_000, 0.02, 4, instruments, ring=64)
        s.start()
        assert loop.run(s, None) == DONE
        got = [m for _ in range(s.sent) for t, m in iter_frames(rx.recv(2048)) if t == MSG_SIGNAL]
        s.close()
    seq, intended, sent_ns, summary = s.result()
    assert s.sent == 400 and [m.seq for m in got] == list(range(1, 401))  # the ring of 64 wrapped 6 times
    assert [m.ts_ns for m in got] == intended.tolist() == [s.t0 + i * NS // 20_000 for i in range(400)]
    assert (sent_ns >= intended).all() and summary["sent"] == 400


@pytest.mark.parametrize("n", [1, 3, 40])
def test_loop_when_orders_arrive_then_answers_equal_numpy_reports(loop, link, n):
    rx, engine = link
    orders = _orders(n)
    engine.sendall(orders.tobytes())
    assert loop.run(None, rx, expected=n, quiet_ns=2 * NS, limit_ns=time.time_ns() + 5 * NS) == DONE
    rx.flush()
    expected = fills_for(orders, 0, report_frames(2 * n))
    engine.settimeout(5)
    data = b""
    while len(data) < expected.nbytes:
        data += engine.recv(expected.nbytes - len(data))
    answers = np.frombuffer(data, expected.dtype).copy()
    assert (answers["ts_ns"] > 0).all()
    answers["ts_ns"] = 0
    assert answers.tobytes() == expected.tobytes()
    got = rx.collect()
    assert got["seq"].tolist() == list(range(1, n + 1)) and got["ts_ns"].tolist() == orders["signal_ts_ns"].tolist()


def test_loop_when_frame_not_fixed_width_then_python_reads_it(loop, link):
    rx, engine = link
    fixed = _orders(2)
    other = Order(order_id=3, strategy=1, deploy=2, account=0, instrument=1, side=1, order_type=0, qty=1,
                  price=10.0, ts_ns=1, signal_source=9, signal_seq=3, signal_ts_ns=7_002)
    engine.sendall(fixed.tobytes() + encode_frame(other))
    assert loop.run(None, rx, expected=3, quiet_ns=2 * NS, limit_ns=time.time_ns() + 5 * NS) == SLOW
    rx._go_slow(time.time_ns())
    rx.flush()
    got = rx.collect()
    assert got["seq"].tolist() == [1, 2, 3]
    engine.settimeout(5)
    data = b""
    while len(data) < 6 * 80:  # an ACK and a FILL for each, the fixed-width two from the compiled loop
        data += engine.recv(6 * 80 - len(data))
    assert [m.order_id for _, m in iter_frames(data)] == [1, 1, 2, 2, 3, 3]


def test_loop_when_run_through_the_floor_then_every_signal_returns(loop, instruments):
    rx = Receiver()
    fwd = Forwarder("udp", "127.0.0.1", 0, "127.0.0.1", rx.port)
    while rx.conn is None:
        rx.poll()
    stop = threading.Event()
    forwarding = threading.Thread(target=lambda: [fwd.step() for _ in iter(stop.is_set, True)], daemon=True)
    forwarding.start()
    sender = Sender("udp", "127.0.0.1", fwd.port, 20_000, 0.05, 6, instruments)
    try:
        sender.start()
        assert loop.run(sender, rx, -1, NS, sender.deadline + 5 * NS) == DONE
        got = rx.collect()
        seq, intended, _, _ = sender.result()
    finally:
        stop.set()
        forwarding.join(5)
        sender.close()
        fwd.close()
        rx.close()
    assert got["seq"].tolist() == seq.tolist() and got["ts_ns"].tolist() == intended.tolist()
    assert loop.send_busy_ns > 0 and loop.recv_busy_ns > 0


def test_loop_when_python_left_answers_unsent_then_they_go_first(loop, link):
    rx, engine = link
    rx.pending = bytearray(b"\x01" * 80)  # what the Python side could not send yet (any bytes: order is the point)
    orders = _orders(2)
    engine.sendall(orders.tobytes())
    assert loop.run(None, rx, expected=2, quiet_ns=2 * NS, limit_ns=time.time_ns() + 5 * NS) == DONE
    engine.settimeout(5)
    data = b""
    while len(data) < 80 + 4 * 80:
        data += engine.recv(1 << 16)
    assert data[:80] == b"\x01" * 80
    assert [m.order_id for _, m in iter_frames(data[80:])] == [1, 1, 2, 2]


def test_loop_when_draining_then_only_orders_of_this_runs_source_count(loop, link):
    rx, engine = link
    stragglers, mine = _orders(3), _orders(2)
    stragglers["signal_source"] = 8  # a previous run's orders, late
    engine.sendall(stragglers.tobytes() + mine.tobytes())
    rx.source = 9
    start = time.time_ns()
    assert loop.run(None, rx, expected=3, quiet_ns=NS // 2, limit_ns=start + 5 * NS) == DONE
    assert time.time_ns() - start >= NS // 2  # 2 of this run's 3 expected: it waited for quiet, not for 3 orders
    assert rx.window_orders == 2
    rx.source = -1


def test_loop_when_entered_again_with_answers_unsent_then_the_report_stream_stays_whole():
    loop = Loop(reads=2)  # back to Python every 2 reads, while the engine reads its reports slowly
    rx = Receiver()
    engine = socket.socket()
    engine.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    engine.connect(("127.0.0.1", rx.port))
    n, data = 2000, bytearray()
    try:
        while rx.conn is None:
            rx.poll()
        rx.conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        orders = _orders(n)

        def engine_side():  # orders in many writes; reports read a little at a time
            engine.settimeout(0.002)
            for k in range(0, n, 20):
                engine.sendall(orders[k:k + 20].tobytes())
                try:
                    data.extend(engine.recv(2048))
                except TimeoutError:
                    pass
        peer = threading.Thread(target=engine_side)
        peer.start()
        assert loop.run(None, rx, expected=n, quiet_ns=2 * NS, limit_ns=time.time_ns() + 10 * NS) == DONE
        peer.join()
        assert rx.stats["reads"] > 4 and rx.stats["send_blocked"] > 0  # entered again with answers waiting
        engine.setblocking(False)
        deadline = time.monotonic() + 10
        while len(data) < n * 160 and time.monotonic() < deadline:
            rx.flush()
            try:
                data.extend(engine.recv(1 << 16))
            except BlockingIOError:
                pass
    finally:
        engine.close()
        rx.close()
    assert [m.order_id for _, m in iter_frames(bytes(data))] == [i // 2 + 1 for i in range(2 * n)]
