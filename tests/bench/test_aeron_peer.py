"""bench/aeron_peer.py over a media driver in this process: the OMS side answers every order with the reports
numpy builds (cut into messages the engine's room rule takes), the load generator's passes are messages of whole
signal frames, and the floor turns each signal into an order carrying its source, seq and ts_ns."""
import time

import numpy as np
import pytest

from bench import CONFIG_DIR
from bench.aeron_peer import (
    MESSAGE_BYTES, ORDERS, REPORTS, SIGNALS, AeronForwarder, AeronOms, AeronSignals, Link, node,
)
from bench.frames import fills_for, report_frames
from bench.loadgen import instruments_of
from kernels.dtypes import MSG_EXECUTION_REPORT, MSG_ORDER
from wire.frames import iter_frames
from wire.records import ORDER_FRAME_T, SIGNAL_FRAME_T, records


@pytest.fixture
def driver(tmp_path):
    """A driver embedded in this process; the Links below are its external clients."""
    import msgspec

    from adapters.aeron import AeronDriverConfig, AeronNode
    n = AeronNode(msgspec.convert({"directory": str(tmp_path / "aeron")}, AeronDriverConfig))
    n.acquire()
    yield str(tmp_path / "aeron")
    n.close()


def _until(condition, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.0005)


def _take(sub, want_bytes, timeout=10.0):
    """Poll `sub` until want_bytes arrived; returns (the bytes, the message sizes)."""
    got, sizes = bytearray(), []

    def handler(buffer, header):
        got.extend(buffer.tobytes())
        sizes.append(len(buffer))
    _until(lambda: sub.poll(handler, 64) >= 0 and len(got) >= want_bytes, f"{want_bytes} bytes")
    return bytes(got), sizes


def _orders(n):
    o = records(MSG_ORDER, n)
    o["order_id"] = np.arange(100, 100 + n)
    o["strategy"], o["deploy"], o["qty"] = np.arange(n) % 4, 3, np.arange(1, n + 1)
    o["price"] = 100.25 + np.arange(n)
    o["signal_source"], o["signal_seq"], o["signal_ts_ns"] = 7, np.arange(1, n + 1), 1_000 + np.arange(n)
    return o


@pytest.mark.parametrize("n", [1, 20, 1500])
def test_aeron_oms_when_orders_arrive_then_answers_equal_numpy_reports_in_messages_that_fit(driver, n):
    engine, oms = Link(driver), Link(driver)
    try:
        rx = AeronOms(oms)
        orders_pub, reports_sub = engine.publication(ORDERS), engine.subscription(REPORTS)
        _until(lambda: orders_pub.is_connected and rx.pub.is_connected, "both streams connected")
        orders = _orders(n)
        data = orders.tobytes()
        for at in range(0, len(data), 690 * ORDER_FRAME_T.itemsize):  # as the engine cuts a send
            assert orders_pub.offer(data[at:at + 690 * ORDER_FRAME_T.itemsize]) is True
        _until(lambda: rx.poll() >= 0 and rx.window_orders >= n, "every order read")
        rx.flush()
        expected = fills_for(orders, 0, report_frames(2 * n))
        got, sizes = _take(reports_sub, expected.nbytes)
        assert max(sizes) <= MESSAGE_BYTES
        answers = np.frombuffer(got, expected.dtype).copy()
        assert np.all(answers["ts_ns"] > 0)
        answers["ts_ns"] = 0
        assert answers.tobytes() == expected.tobytes()
        assert [t for t, _ in iter_frames(got)] == [MSG_EXECUTION_REPORT] * (2 * n)
        collected = rx.collect()
        assert collected["seq"].tolist() == list(range(1, n + 1)) and np.all(collected["source"] == 7)
        rx.close()
    finally:
        engine.close()
        oms.close()


def test_aeron_signals_when_saturating_then_each_pass_is_one_message_of_whole_frames(driver):
    engine, peer = Link(driver), Link(driver)
    try:
        sub = engine.subscription(SIGNALS)
        sender = AeronSignals(peer.publication(SIGNALS), 0, 0.05, 3, instruments_of(CONFIG_DIR))
        _until(lambda: sender.pub.is_connected, "the signals stream connected")
        got, sizes = bytearray(), []

        def handler(buffer, header):
            got.extend(buffer.tobytes())
            sizes.append(len(buffer))
        sender.start(lead_ns=0)
        while not sender.done:
            now = time.time_ns()
            if now >= sender.next_due:
                sender.poll(now)
            sub.poll(handler, 64)  # keep the publication's window open
        _until(lambda: sub.poll(handler, 64) >= 0 and len(got) >= sender.sent * SIGNAL_FRAME_T.itemsize, "all")
        frames = np.frombuffer(bytes(got), SIGNAL_FRAME_T)
        assert sender.sent > 0 and len(frames) == sender.sent
        assert frames["seq"].tolist() == list(range(1, sender.sent + 1)) and np.all(frames["source"] == 3)
        assert all(s % SIGNAL_FRAME_T.itemsize == 0 and s <= MESSAGE_BYTES for s in sizes)
        assert len(sizes) == len(sender.pass_first)  # one message a pass
        sender.close()
    finally:
        engine.close()
        peer.close()


def test_aeron_floor_when_signals_published_then_each_returns_as_an_order_with_its_stamps(driver):
    floor, peer = Link(driver), Link(driver)
    try:
        orders_sub = peer.subscription(ORDERS)
        fwd = AeronForwarder(floor)
        signals_pub = peer.publication(SIGNALS)
        _until(lambda: signals_pub.is_connected and fwd.orders.is_connected, "streams connected")
        frames = np.frombuffer(bytearray(_signal_frames(1200)), SIGNAL_FRAME_T)
        for lo in (0, 1, 17, 900):  # one frame, a few (byte copies), many (numpy)
            hi = {0: 1, 1: 17, 17: 900, 900: 1200}[lo]
            assert signals_pub.offer(frames[lo:hi].tobytes()) is True
        got = bytearray()

        def handler(buffer, header):
            got.extend(buffer.tobytes())
        _until(lambda: fwd.step() is None and orders_sub.poll(handler, 64) >= 0
               and len(got) >= 1200 * ORDER_FRAME_T.itemsize, "every order")
        orders = np.frombuffer(bytes(got), ORDER_FRAME_T)
        assert orders["signal_seq"].tolist() == frames["seq"].tolist()
        assert orders["signal_ts_ns"].tolist() == frames["ts_ns"].tolist()
        assert np.all(orders["signal_source"] == frames["source"])
        assert fwd.stats["signals"] == 1200
    finally:
        floor.close()
        peer.close()


def _signal_frames(n):
    from bench.frames import fill_signals, signal_frames
    f = fill_signals(signal_frames(n), instruments_of(CONFIG_DIR), 0, 1, 5, 0)
    f["seq"] = np.arange(1, n + 1)
    f["ts_ns"] = 10_000 + np.arange(n)
    return f.tobytes()


def test_node_when_no_driver_then_link_gives_up_with_the_reason(tmp_path):
    from adapters.aeron import AeronUnavailable
    with pytest.raises(AeronUnavailable, match="no Aeron media driver is running"):
        Link(str(tmp_path / "none"), timeout_s=0.1)
    assert node(str(tmp_path / "none")).users == 0
