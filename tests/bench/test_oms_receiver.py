"""bench/oms_receiver.py: the answers built from byte templates are the very frames numpy builds, and every order
read is collected with its signal's source, seq and ts_ns."""
import socket
import time

import numpy as np
import pytest

from bench.frames import fills_for, report_frames
from bench.oms_receiver import SMALL_READ, Receiver
from kernels.dtypes import MSG_EXECUTION_REPORT, MSG_ORDER
from wire.frames import iter_frames
from wire.records import records


def _orders(n):
    o = records(MSG_ORDER, n)
    o["order_id"] = np.arange(100, 100 + n)
    o["strategy"], o["deploy"], o["qty"] = np.arange(n) % 4, 3, np.arange(1, n + 1)
    o["price"] = 100.25 + np.arange(n)
    o["signal_source"], o["signal_seq"], o["signal_ts_ns"] = 7, np.arange(1, n + 1), 1_000 + np.arange(n)
    return o


@pytest.fixture
def link():
    rx = Receiver()
    engine = socket.create_connection(("127.0.0.1", rx.port))
    deadline = time.monotonic() + 5
    while rx.conn is None and time.monotonic() < deadline:
        rx.poll()
    yield rx, engine
    engine.close()
    rx.close()


def _read_reports(sock, n_bytes):
    sock.settimeout(5)
    data = b""
    while len(data) < n_bytes:
        data += sock.recv(n_bytes - len(data))
    return data


@pytest.mark.parametrize("n", [1, SMALL_READ, SMALL_READ + 5])
def test_receiver_when_orders_read_then_answers_equal_numpy_reports(link, n):
    rx, engine = link
    orders = _orders(n)
    engine.sendall(orders.tobytes())
    got, deadline = 0, time.monotonic() + 5
    while got < n and time.monotonic() < deadline:
        got += rx.poll()
    rx.flush()
    expected = fills_for(orders, 0, report_frames(2 * n))
    data = _read_reports(engine, len(expected.tobytes()))
    answers = np.frombuffer(data, expected.dtype).copy()
    assert np.all(answers["ts_ns"] > 0)
    answers["ts_ns"] = 0
    assert answers.tobytes() == expected.tobytes()
    assert [t for t, _ in iter_frames(data)] == [MSG_EXECUTION_REPORT] * (2 * n)


def test_receiver_when_collected_then_each_order_has_its_signal_and_read_time(link):
    rx, engine = link
    before = time.time_ns()
    first, second = _orders(10)[:4], _orders(10)[4:]
    engine.sendall(first.tobytes() + second.tobytes()[:50])  # a frame split across reads
    while rx.window_orders < 4:
        rx.poll()
    engine.sendall(second.tobytes()[50:])
    while rx.window_orders < 10:
        rx.poll()
    got = rx.collect()
    assert got["seq"].tolist() == list(range(1, 11))
    assert np.all(got["source"] == 7) and got["ts_ns"].tolist() == list(range(1_000, 1_010))
    assert np.all(got["recv_ns"] >= before) and np.all(np.diff(got["recv_ns"]) >= 0)
    assert len(rx.collect()["seq"]) == 0  # a collect starts a new window
