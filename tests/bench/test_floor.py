"""bench/floor.py with the harness's sender and receiver in one process: every signal comes back as one order
frame carrying its source, seq and ts_ns, and the receiver's reports reach the forwarder."""
import threading
import time

import pytest

from bench import CONFIG_DIR
from bench.floor import Forwarder, run_compiled
from bench.loadgen import Sender, instruments_of
from bench.oms_receiver import Receiver


@pytest.mark.parametrize("loop", ["python", "compiled"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_floor_when_signals_forwarded_then_every_one_returns_as_an_order(transport, loop):
    rx = Receiver()
    fwd = Forwarder(transport, "127.0.0.1", 0, "127.0.0.1", rx.port)
    while rx.conn is None:
        rx.poll()
    stop, forwarding = [], None
    if loop == "compiled":  # the compiled loop in a thread (it drops the GIL); this thread sends and receives
        forwarding = threading.Thread(target=run_compiled, args=(fwd, stop), daemon=True)
        forwarding.start()
        fwd.step = lambda: None
    sender = Sender(transport, "127.0.0.1", fwd.port, 20_000, 0.01, 3, instruments_of(CONFIG_DIR))
    sender.start()
    deadline = time.monotonic() + 10
    try:
        while (not sender.done or rx.window_orders < sender.sent) and time.monotonic() < deadline:
            now = time.time_ns()
            if now >= sender.next_due:
                sender.poll(now)
            fwd.step()
            if not rx.poll():
                rx.flush()
        rx.flush()
        while loop == "python" and fwd.stats["report_bytes"] < 2 * 80 * sender.sent and time.monotonic() < deadline:
            fwd.step()
            rx.flush()
        if forwarding is not None:  # its counts are the forwarder's once it stops
            time.sleep(0.2)
            stop.append(1)
            forwarding.join(5)
        got = rx.collect()
        seq, intended, _, _ = sender.result()
    finally:
        stop.append(1)
        if forwarding is not None:
            forwarding.join(5)
        sender.close()
        fwd.close()
        rx.close()
    assert got["seq"].tolist() == seq.tolist()
    assert got["ts_ns"].tolist() == intended.tolist() and set(got["source"].tolist()) == {3}
    assert (got["recv_ns"] > got["ts_ns"]).all()
    assert fwd.stats["report_bytes"] == 2 * 80 * len(seq)  # an ACK and a FILL per order
