"""Bad input against a running engine process: every bad frame, datagram and connection is counted by cause,
and good signals sent after them (and by other clients) still become orders."""
import random
from collections import Counter

import pytest

from kernels.dtypes import MSG_SIGNAL, SIDE_BUY, SIGNAL_TARGET, WIRE_VERSION
from tests.e2e.e2e_kit import (
    ESZ5, ORDER_FATES, derive_config, market_data_frame, nonzero, now_ns, reasons, signal_frame,
)
from wire.frames import HEADER, encode_frame
from wire.schema import Order

INF, NAN = float("inf"), float("nan")
ROOMY = {"sizing": {"max_position": 1000},
         "limits": {"max_order_qty": 5, "max_open_orders": 100, "rate_per_second": 1000.0, "burst": 1000.0},
         "breakers": {"max_consecutive_rejects": 1000, "ratio_min_orders": 1000}}


@pytest.fixture
def config(tmp_path):
    """One strategy (momentum: signal 0, ESZ5 and NQZ5) with room for every good signal; sources 0..3."""
    return derive_config(tmp_path / "config", engine={"sources": 4}, keep={"momentum"},
                         strategies={"momentum": ROOMY})


def frame(msg_type, body, version=WIRE_VERSION, length=None):
    return HEADER.pack(len(body) if length is None else length, version, msg_type, 0) + body


class Source:
    """Signals of one source id, seq counting up from 1; `expect` tallies the counters they should move."""

    def __init__(self, source, expect):
        self.source, self.seq, self.expect = source, 0, expect

    def good(self, n=1):
        """Buy 1 at the ask: each becomes one order."""
        frames = []
        for _ in range(n):
            self.seq += 1
            frames.append(signal_frame(self.seq, source=self.source, price=6000.25))
        self.expect.update(signals=n, orders=n)
        return b"".join(frames)

    def signal(self, counter=None, seq=None, **fields):
        """One decoded signal that is rejected or counted as `counter`; seq: default the next one."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        self.expect.update(signals=1, **({counter: 1} if counter else {}))
        return signal_frame(seq, source=self.source, **{"price": 6000.25, **fields})


def test_engine_when_bad_input_then_counts_each_cause_and_keeps_serving(procs, config):
    engine = procs.engine(config)
    expect = Counter()
    udp, tcp_source = procs.udp(engine), Source(1, expect)
    tcp_b = procs.tcp(engine)  # a well-behaved client, connected all along
    s = Source(0, expect)
    rng = random.Random(5)
    # market data: one good quote, then prices the engine must refuse
    udp.send(market_data_frame())
    udp.send(market_data_frame(bid=NAN))
    udp.send(market_data_frame(ask=INF))
    udp.send(market_data_frame(last=-1.0))
    udp.send(market_data_frame(instrument=99))
    expect.update(market_data=1, market_data_invalid=3, market_data_unknown_instrument=1)
    udp.send(s.good(5))
    # frames that are not frames
    noise = bytearray(rng.randbytes(40))
    noise[4] = 0xFF  # never a valid version
    udp.send(bytes(noise))                                            # random bytes
    udp.send(s.good()[:30])                                           # a frame cut short
    s.seq -= 1
    expect.subtract(signals=1, orders=1)
    udp.send(b"\x01\x00\x00\x00\x01")                                 # not even a header
    udp.send(b"")                                                     # an empty datagram
    udp.send(frame(MSG_SIGNAL, b"\xc1" * 10))                         # body is not msgpack
    udp.send(frame(MSG_SIGNAL, b"\x93\x01\x02\x03"))                  # an array of 3, not 9
    udp.send(signal_frame(99, kind=7))                                # kind outside 0..1
    udp.send(frame(9, b"\x90"))                                       # unknown message type
    udp.send(encode_frame(Order(1, 0, 1, 0, ESZ5, SIDE_BUY, 0, 1, 6000.0, now_ns(), 0, 1, now_ns())))
    versioned = signal_frame(99)
    udp.send(versioned[:4] + bytes([WIRE_VERSION + 1]) + versioned[5:])  # another schema version
    udp.send(frame(MSG_SIGNAL, b"\x00" * 100, length=5000))           # a length beyond any frame
    expect.update(frame_bad_version=2, frame_truncated=2, frame_malformed=3, frame_bad_type=2,
                  frame_oversize=1)
    # one bad frame between two good ones in a datagram: only the bad one is lost
    udp.send(s.good(), frame(MSG_SIGNAL, b"\xc1"), s.good())
    expect.update(frame_malformed=1)
    # signals that decode but name what does not exist, or carry values no order can come from
    udp.send(signal_frame(1, source=7))
    udp.send(signal_frame(s.seq + 1, signal_id=999))
    udp.send(signal_frame(s.seq + 1, instrument=77))
    expect.update(signals=3, signal_unknown_source=1, signal_unknown_id=1, signal_unknown_instrument=1)
    udp.send(s.signal(value=NAN), s.signal(price=INF), s.signal(value=-INF))
    udp.send(s.signal(value=1e12), s.signal(value=1e300), s.signal(value=-1e300))  # quantities beyond limits
    udp.send(s.signal(ts_ns=now_ns() - 2_000_000_000, ttl_ns=1_000_000))            # stale
    udp.send(s.signal(seq=s.seq), s.signal(seq=s.seq - 3))                           # duplicate, out of order
    udp.send(s.signal(kind=SIGNAL_TARGET, value=2.0))                               # target beyond [-1, 1]
    expect.update(rejects=10)

    # TCP: a client that sends half a frame and leaves; clients whose stream cannot be framed any more
    half = procs.tcp(engine)
    half.send(signal_frame(1, source=2)[:20])
    half.close()
    wrong_version = procs.tcp(engine)
    wrong_version.send(Source(2, expect).good(), frame(MSG_SIGNAL, b"\x90", version=2))
    oversize = procs.tcp(engine)
    oversize.send(frame(MSG_SIGNAL, b"", length=1 << 30))
    for client in (wrong_version, oversize):  # the engine hangs up on them
        client.sock.settimeout(5)
        assert client.sock.recv(1) == b""
        client.close()
    # the other client is still served: bad frames in its stream are skipped, its signals become orders
    tcp_b.send(frame(9, b"\x90"), frame(MSG_SIGNAL, b"\xc1" * 4), tcp_source.good(5))
    expect.update(frame_bad_type=1, frame_malformed=1)
    # and UDP after all of it
    udp.send(s.good(5))
    tcp_b.close()
    engine.wait_status(lambda r: r["transports"]["tcp"]["disconnects"] == 4
                       and r["counters"]["orders"] == expect["orders"], "every client gone, every order made")
    report = engine.report()

    counters = report["counters"]
    decoded = sum(counters[k] for k in ("signals", "signal_ring_full", "market_data", "market_data_invalid",
                                        "market_data_unknown_instrument", "reports", "report_ring_full"))
    assert counters["frames"] == decoded + counters["frame_bad_type"] + counters["frame_malformed"]
    oms_side = {"frames", "reports", "fills"} | ORDER_FATES
    assert {k: v for k, v in counters.items() if k not in oms_side} == \
           {k: expect.get(k, 0) for k in counters if k not in oms_side}
    assert nonzero(counters) - oms_side <= set(expect)
    by_reason = reasons(report)
    assert by_reason["not_finite"] == 3 and by_reason["qty_max"] == 3 and by_reason["stale"] == 1
    assert by_reason["duplicate"] == 1 and by_reason["out_of_order"] == 1 and by_reason["signal_range"] == 1
    assert report["strategies"]["momentum"]["state"] == "ACTIVE"
    udp_stats, tcp_stats = report["transports"]["udp"], report["transports"]["tcp"]
    assert udp_stats["empty"] == 1 and udp_stats["kernel_drops"] == 0
    assert udp_stats["chunks"] == udp.datagrams - 1  # all but the empty one delivered
    assert tcp_stats["connections"] == 4 and tcp_stats["disconnects"] == 4
    assert tcp_stats["partial_discarded"] == 1 and tcp_stats["bad_version"] == 1 and tcp_stats["oversize"] == 1


def test_engine_when_flooded_then_counts_what_it_dropped_and_recovers(procs, tmp_path):
    """Faster than the engine, bounded (~2.5 MB in well under a second, loopback only): every signal that reaches
    the engine is decided (a batch takes each frame as it reads it, so no ring in the engine drops any); over UDP
    the kernel may drop datagrams its buffer cannot hold, and those are counted."""
    config = derive_config(tmp_path / "config", engine={"sources": 4, "rings": {"signals": 256}},
                           keep={"momentum"}, strategies={"momentum": ROOMY})
    engine = procs.engine(config)
    udp, tcp = procs.udp(engine), procs.tcp(engine)
    per_datagram, datagrams, tcp_signals = 8, 5000, 20000
    udp.send(market_data_frame())
    # flat targets: valid signals that need no order, so the flood leaves the books alone
    stream = b"".join(signal_frame(seq, source=2, kind=SIGNAL_TARGET, value=0.0)
                      for seq in range(1, tcp_signals + 1))
    tcp.send(stream)
    seq = 0
    for _ in range(datagrams):
        udp.send(*(signal_frame(seq := seq + 1, source=1, kind=SIGNAL_TARGET, value=0.0)
                   for _ in range(per_datagram)))
    engine.wait_status(lambda r: r["transports"]["tcp"]["bytes_in"] == len(stream) and
                       r["transports"]["udp"]["chunks"] + r["transports"]["udp"]["kernel_drops"] == udp.datagrams,
                       "the engine to take in (or count) the whole flood")
    udp.send(Source(0, Counter()).good(5))
    engine.wait_status(lambda r: r["counters"]["orders"] == 5, "5 orders")
    report = engine.report()
    counters, udp_stats = report["counters"], report["transports"]["udp"]
    assert udp_stats["chunks"] + udp_stats["kernel_drops"] == udp.datagrams  # each datagram read or counted
    flood_read = udp_stats["chunks"] - 2  # every datagram but the quote and the 5 good signals
    assert counters["signals"] == flood_read * per_datagram + tcp_signals + 5
    assert counters["signal_ring_full"] == 0  # the ring holds one signal at a time: it can never be full
    assert counters["orders"] == 5  # good signals after the flood still trade
    assert nonzero(counters) <= {"frames", "signals", "signal_ring_full", "signal_no_change", "market_data",
                                 "orders", "reports", "fills"} | ORDER_FATES, counters
