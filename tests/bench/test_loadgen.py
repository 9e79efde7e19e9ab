"""bench/loadgen.py: the prebuilt frames go out with each signal's seq and intended time stamped in place."""
import socket

import pytest

from bench import CONFIG_DIR
from bench.loadgen import NS, Sender, instruments_of
from kernels.dtypes import MSG_SIGNAL
from wire.frames import iter_frames


@pytest.fixture(scope="module")
def instruments():
    return instruments_of(CONFIG_DIR)


def _signals(data):
    return [msg for t, msg in iter_frames(data) if t == MSG_SIGNAL]


def test_sender_when_udp_signals_due_one_by_one_and_together_then_each_datagram_carries_its_seq_and_time(instruments):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        s = Sender("udp", "127.0.0.1", rx.getsockname()[1], 1000, 0.02, 5, instruments, ring=16)
        s.start(t0=10 * NS)
        sent = s.poll(10 * NS) + s.poll(10 * NS + 5_500_000)  # one due, then five at once (one sendmmsg)
        while not s.done:
            sent += s.poll(s.next_due)
        got = [_signals(rx.recv(2048))[0] for _ in range(sent)]
        s.close()
    assert sent == 20
    assert [m.seq for m in got] == list(range(1, 21))  # the ring of 16 wrapped: seq restamped
    assert [m.ts_ns for m in got] == [10 * NS + i * 1_000_000 for i in range(20)]
    assert {m.source for m in got} == {5}
    seq, intended, sent_ns, summary = s.result()
    assert seq.tolist() == list(range(1, 21)) and intended.tolist() == [m.ts_ns for m in got]
    assert summary["sent"] == 20 and summary["passes"] < 20


def test_sender_when_tcp_saturates_then_passes_carry_consecutive_seqs(instruments):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        s = Sender("tcp", "127.0.0.1", listener.getsockname()[1], 0, 0.001, 2, instruments, max_batch=64,
                   max_count=300)
        conn, _ = listener.accept()
        s.start(t0=0)
        while not s.done and s.sent < 300:
            s.poll(0)
        s.close()
        conn.settimeout(5)
        data = b""
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        conn.close()
    got = _signals(data)
    assert [m.seq for m in got] == list(range(1, 301))
    assert s.result()[3]["passes"] == 5  # 64 x 4 + 44
