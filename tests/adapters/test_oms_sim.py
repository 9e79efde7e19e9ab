"""adapters/oms_sim.py (the simulated OMS core and its in-process transport) and engine/sim_oms.py (the same
core served over TCP, with market data over UDP and fault injection)."""
import asyncio
import random
import signal
import socket
import struct
import subprocess
import sys
import time

import msgspec
import numpy as np
import pytest
import uvloop

from tests.adapters.adapter_testkit import Sink
from adapters.base import Inbound, Outbound, TransportClosed
from adapters.oms_sim import (
    REJECT_DUPLICATE, REJECT_NO_MARKET, REJECT_PRICE, REJECT_QTY, REJECT_RANDOM, SimOmsConfig, SimOmsTransport,
    SimulatedOms,
)
from engine import sim_oms
from engine.wire import ExecutionReport, FrameError, MarketData, Order, Signal, encode_frame, iter_frames
from kernels.dtypes import (
    EXEC_ACK, EXEC_CANCELED, EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_REJECT, MSG_EXECUTION_REPORT, MSG_ORDER,
    ORDER_IOC, ORDER_LIMIT, ORDER_MARKET, SIDE_BUY, SIDE_SELL, WIRE_VERSION,
)

T0 = 1_700_000_000_000_000_000
US = 1_000


def config(**fields):
    """Configs are built by decoding, as the engine builds them from TOML: constructors do not validate."""
    return msgspec.convert(fields, SimOmsConfig)


INSTANT = dict(ack_latency_us=0, fill_latency_us=0)


def order(order_id, side=SIDE_BUY, qty=10, price=100.0, order_type=ORDER_LIMIT, instrument=0, strategy=1,
          version=2):
    return Order(order_id=order_id, strategy=strategy, version=version, account=0, instrument=instrument,
                 side=side, order_type=order_type, qty=qty, price=price, ts_ns=T0, signal_source=0,
                 signal_seq=order_id, signal_ts_ns=T0)


def quote(bid, ask, last=0.0, instrument=0):
    return MarketData(instrument=instrument, bid=bid, ask=ask, last=last, ts_ns=T0)


def oms_with_market(bid=99.0, ask=101.0, last=0.0, **fields):
    oms = SimulatedOms(config(**{**INSTANT, **fields}))
    oms.on_market_data(quote(bid, ask, last), T0)
    return oms


def run(oms, *orders, now=T0):
    for o in orders:
        oms.on_order(o, now)
    return oms.pop_due(now)


def kinds(reports):
    return [r.exec_type for r in reports]


# ---------------------------------------------------------------------------------------------- fill rules
def test_sim_oms_when_buy_limit_at_or_above_ask_then_fills_at_ask():
    reports = run(oms_with_market(), order(1, SIDE_BUY, price=101.0), order(2, SIDE_BUY, price=105.0))
    assert kinds(reports) == [EXEC_ACK, EXEC_FILL, EXEC_ACK, EXEC_FILL]
    assert [(r.qty, r.price, r.leaves) for r in reports if r.exec_type == EXEC_FILL] == [(10, 101.0, 0)] * 2
    assert reports[0].leaves == 10 and reports[0].qty == 0


def test_sim_oms_when_sell_limit_at_or_below_bid_then_fills_at_bid():
    reports = run(oms_with_market(), order(1, SIDE_SELL, price=99.0), order(2, SIDE_SELL, price=90.0))
    assert kinds(reports) == [EXEC_ACK, EXEC_FILL, EXEC_ACK, EXEC_FILL]
    assert {r.price for r in reports if r.exec_type == EXEC_FILL} == {99.0}


def test_sim_oms_when_limit_not_marketable_then_rests_and_fills_at_its_price_when_market_crosses():
    oms = oms_with_market()
    assert kinds(run(oms, order(1, SIDE_BUY, price=100.0), order(2, SIDE_SELL, price=100.5))) == [EXEC_ACK] * 2
    assert oms.resting() == 2
    assert oms.on_market_data(quote(99.5, 100.5), T0 + 1) == 0  # touches neither: buy 100 < ask, sell 100.5 > bid
    assert oms.on_market_data(quote(98.0, 99.5), T0 + 2) == 1   # ask 99.5 <= 100: the buy fills
    fills = oms.pop_due(T0 + 2)
    assert [(r.order_id, r.exec_type, r.qty, r.price) for r in fills] == [(1, EXEC_FILL, 10, 100.0)]
    assert oms.on_market_data(quote(101.0, 102.0), T0 + 3) == 1  # bid 101 >= 100.5: the sell fills at 100.5
    assert [(r.order_id, r.price) for r in oms.pop_due(T0 + 3)] == [(2, 100.5)]
    assert oms.resting() == 0


def test_sim_oms_when_side_unquoted_then_last_is_the_touch():
    oms = oms_with_market(bid=0.0, ask=0.0, last=100.0)
    reports = run(oms, order(1, SIDE_BUY, price=100.0), order(2, SIDE_BUY, price=99.0),
                  order(3, SIDE_SELL, order_type=ORDER_MARKET, price=50.0))
    assert [(r.order_id, r.price) for r in reports if r.exec_type == EXEC_FILL] == [(1, 100.0), (3, 100.0)]
    assert oms.resting() == 1


def test_sim_oms_when_ioc_not_marketable_then_canceled_else_filled():
    reports = run(oms_with_market(), order(1, SIDE_BUY, price=100.0, order_type=ORDER_IOC),
                  order(2, SIDE_BUY, price=101.0, order_type=ORDER_IOC))
    assert [(r.order_id, r.exec_type, r.leaves) for r in reports] == [
        (1, EXEC_ACK, 10), (1, EXEC_CANCELED, 0), (2, EXEC_ACK, 10), (2, EXEC_FILL, 0)]


def test_sim_oms_when_market_order_then_fills_at_the_touch_whatever_its_price():
    reports = run(oms_with_market(), order(1, SIDE_BUY, price=1.0, order_type=ORDER_MARKET),
                  order(2, SIDE_SELL, price=500.0, order_type=ORDER_MARKET))
    assert [(r.order_id, r.price) for r in reports if r.exec_type == EXEC_FILL] == [(1, 101.0), (2, 99.0)]


def test_sim_oms_when_no_market_data_then_fills_at_the_order_price():
    oms = SimulatedOms(config(**INSTANT))
    reports = run(oms, order(1, SIDE_BUY, price=42.5), order(2, SIDE_SELL, price=41.0, order_type=ORDER_MARKET),
                  order(3, SIDE_SELL, price=43.0, order_type=ORDER_IOC, instrument=7))
    assert [(r.order_id, r.price) for r in reports if r.exec_type == EXEC_FILL] == [(1, 42.5), (2, 41.0), (3, 43.0)]


@pytest.mark.parametrize("bad, reason", [
    (dict(qty=0), REJECT_QTY),
    (dict(qty=-5), REJECT_QTY),
    (dict(price=float("nan")), REJECT_PRICE),
    (dict(price=0.0), REJECT_PRICE),
    (dict(price=float("inf"), order_type=ORDER_IOC), REJECT_PRICE),
    (dict(price=float("nan"), order_type=ORDER_MARKET), REJECT_NO_MARKET),
])
def test_sim_oms_when_order_invalid_then_one_reject_with_its_reason(bad, reason):
    oms = SimulatedOms(config(**INSTANT))
    reports = run(oms, order(1, **bad))
    assert [(r.exec_type, r.reason, r.leaves, r.qty) for r in reports] == [(EXEC_REJECT, reason, 0, 0)]
    assert oms.stats.rejects == 1 and oms.resting() == 0


def test_sim_oms_when_order_id_still_working_then_duplicate_rejected_and_original_keeps_working():
    oms = oms_with_market()
    run(oms, order(1, SIDE_BUY, price=100.0))  # rests
    assert [(r.exec_type, r.reason) for r in run(oms, order(1, SIDE_BUY, price=101.0))] == \
        [(EXEC_REJECT, REJECT_DUPLICATE)]
    oms.on_market_data(quote(99.0, 100.0), T0)
    assert [(r.exec_type, r.price) for r in oms.pop_due(T0)] == [(EXEC_FILL, 100.0)]
    assert kinds(run(oms, order(1, SIDE_BUY, price=101.0))) == [EXEC_ACK, EXEC_FILL]  # done: the id is free


def test_sim_oms_when_market_data_invalid_then_ignored():
    oms = oms_with_market()
    for bad in (quote(float("nan"), 1.0), quote(1.0, float("inf")), quote(-1.0, 2.0), quote(1.0, 2.0, -3.0)):
        assert oms.on_market_data(bad, T0) == 0
    assert oms.stats.market_data_invalid == 4
    assert [r.price for r in run(oms, order(1, SIDE_BUY, price=200.0)) if r.exec_type == EXEC_FILL] == [101.0]


# ---------------------------------------------------------------------------------------------- partials, fees
def test_sim_oms_when_partial_ratio_one_then_partials_add_up_to_qty_and_leaves_count_down():
    oms = SimulatedOms(config(**INSTANT, partial_fill_ratio=1.0, fee_per_unit=0.25, seed=3))
    quantities = [1, 2, 3, 7, 100, 12345]
    reports = run(oms, *(order(i, qty=q) for i, q in enumerate(quantities)))
    parts_seen = set()
    for i, qty in enumerate(quantities):
        fills = [r for r in reports if r.order_id == i and r.exec_type in (EXEC_PARTIAL_FILL, EXEC_FILL)]
        assert sum(r.qty for r in fills) == qty
        assert all(r.qty > 0 for r in fills)
        assert [r.leaves for r in fills] == [qty - sum(f.qty for f in fills[:k + 1]) for k in range(len(fills))]
        assert kinds(fills) == [EXEC_PARTIAL_FILL] * (len(fills) - 1) + [EXEC_FILL]
        assert len(fills) == 1 if qty == 1 else 2 <= len(fills) <= min(3, qty)
        assert [r.fee for r in fills] == [r.qty * 0.25 for r in fills]
        parts_seen.add(len(fills))
    assert parts_seen == {1, 2, 3}
    assert oms.stats.filled_qty == sum(quantities) and oms.stats.fills == len(quantities)
    assert oms.stats.fees == pytest.approx(sum(quantities) * 0.25)


def test_sim_oms_when_partial_ratio_set_then_about_that_share_of_fills_split():
    oms = SimulatedOms(config(**INSTANT, partial_fill_ratio=0.3, seed=11))
    run(oms, *(order(i, qty=50) for i in range(5000)))
    split = oms.stats.partial_fills  # one or two partials per split fill
    assert 0.3 * 5000 * 1.0 < split < 0.3 * 5000 * 2.0


# ---------------------------------------------------------------------------------------------- rejects
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5])
def test_sim_oms_when_reject_ratio_set_then_share_of_random_rejects_matches(ratio):
    oms = SimulatedOms(config(**INSTANT, reject_ratio=ratio, seed=42))
    reports = run(oms, *(order(i) for i in range(20_000)))
    rejects = [r for r in reports if r.exec_type == EXEC_REJECT]
    assert all(r.reason == REJECT_RANDOM for r in rejects)
    assert abs(len(rejects) / 20_000 - ratio) < 0.015  # > 5 standard deviations at 0.5
    assert len(reports) == len(rejects) + 2 * (20_000 - len(rejects))  # the others: ack + fill


# ---------------------------------------------------------------------------------------------- time
def test_sim_oms_when_latency_set_then_reports_due_exactly_then_and_not_before():
    oms = oms_with_market(ack_latency_us=50, fill_latency_us=200)
    oms.on_order(order(1, SIDE_BUY, price=101.0), T0)
    assert oms.pop_due(T0 + 50 * US - 1) == []
    assert oms.next_due_ns() == T0 + 50 * US
    ack = oms.pop_due(T0 + 50 * US)
    assert [(r.exec_type, r.ts_ns) for r in ack] == [(EXEC_ACK, T0 + 50 * US)]
    assert oms.pop_due(T0 + 200 * US - 1) == []
    assert [(r.exec_type, r.ts_ns) for r in oms.pop_due(T0 + 10**9)] == [(EXEC_FILL, T0 + 200 * US)]
    assert oms.next_due_ns() is None and oms.pending() == 0


def test_sim_oms_when_fill_latency_below_ack_latency_then_fill_waits_for_the_ack():
    oms = oms_with_market(ack_latency_us=300, fill_latency_us=10)
    oms.on_order(order(1, SIDE_BUY, price=101.0), T0)
    assert oms.pop_due(T0 + 299 * US) == []
    assert [(r.exec_type, r.ts_ns) for r in oms.pop_due(T0 + 300 * US)] == [(EXEC_ACK, T0 + 300 * US),
                                                                            (EXEC_FILL, T0 + 300 * US)]


def test_sim_oms_when_resting_order_crossed_then_fill_latency_counts_from_the_market_data():
    oms = oms_with_market(ack_latency_us=10, fill_latency_us=100)
    oms.on_order(order(1, SIDE_BUY, price=100.0), T0)
    oms.on_market_data(quote(98.0, 99.0), T0 + 1000 * US)
    reports = oms.pop_due(T0 + 10**9)
    assert [(r.exec_type, r.ts_ns) for r in reports] == [(EXEC_ACK, T0 + 10 * US), (EXEC_FILL, T0 + 1100 * US)]


def test_sim_oms_when_reports_due_out_of_arrival_order_then_popped_in_due_order():
    oms = oms_with_market(ack_latency_us=10, fill_latency_us=1000)
    oms.on_order(order(1, SIDE_BUY, price=101.0), T0)
    oms.on_order(order(2, SIDE_BUY, price=101.0), T0 + 20 * US)
    reports = oms.pop_due(T0 + 10**9)
    assert [(r.order_id, r.exec_type) for r in reports] == [(1, EXEC_ACK), (2, EXEC_ACK), (1, EXEC_FILL),
                                                            (2, EXEC_FILL)]
    assert [r.ts_ns for r in reports] == sorted(r.ts_ns for r in reports)


def test_sim_oms_when_resting_ttl_passes_then_canceled_unless_filled_first():
    oms = oms_with_market(resting_ttl_us=500)
    oms.on_order(order(1, SIDE_BUY, price=100.0), T0)
    oms.on_order(order(2, SIDE_BUY, price=100.0, instrument=0), T0 + 100 * US)
    oms.on_order(order(3, SIDE_SELL, price=102.0), T0 + 200 * US)
    oms.pop_due(T0 + 200 * US)
    oms.on_market_data(quote(101.0, 103.0), T0 + 300 * US)  # bid 101 fills nothing: the sell asks 102
    oms.on_market_data(quote(102.0, 103.0), T0 + 400 * US)  # the sell fills
    reports = oms.pop_due(T0 + 10**9)
    assert [(r.order_id, r.exec_type, r.ts_ns) for r in reports] == [
        (3, EXEC_FILL, T0 + 400 * US), (1, EXEC_CANCELED, T0 + 500 * US), (2, EXEC_CANCELED, T0 + 600 * US)]
    assert oms.resting() == 0 and oms.pending() == 0
    assert kinds(run(oms, order(1, SIDE_BUY, price=103.0), now=T0 + 10**9)) == [EXEC_ACK, EXEC_FILL]


# ---------------------------------------------------------------------------------------------- determinism
def _random_session(seed, oms_seed):
    rng = random.Random(seed)
    oms = SimulatedOms(config(ack_latency_us=20, fill_latency_us=80, reject_ratio=0.1, partial_fill_ratio=0.4,
                              fee_per_unit=0.01, resting_ttl_us=5000, seed=oms_seed))
    out, now, mid = [], T0, [100.0, 50.0]
    for i in range(3000):
        now += rng.randrange(1, 30 * US)
        if rng.random() < 0.3:
            k = rng.randrange(2)
            mid[k] *= 1 + rng.gauss(0, 0.001)
            oms.on_market_data(quote(round(mid[k] - 0.01, 2), round(mid[k] + 0.01, 2), instrument=k), now)
        else:
            k = rng.randrange(2)
            oms.on_order(order(i, rng.choice((SIDE_BUY, SIDE_SELL)), rng.randrange(1, 200),
                               round(mid[k] * (1 + rng.uniform(-0.002, 0.002)), 2),
                               rng.choice((ORDER_LIMIT, ORDER_LIMIT, ORDER_IOC, ORDER_MARKET)), instrument=k), now)
        out += oms.pop_due(now)
    return out + oms.pop_due(now + 10**9)


def test_sim_oms_when_same_seed_and_inputs_then_same_reports():
    first, second = _random_session(1, 7), _random_session(1, 7)
    assert first == second
    assert {EXEC_ACK, EXEC_REJECT, EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_CANCELED} <= set(kinds(first))
    assert _random_session(1, 8) != first


def test_sim_oms_when_random_session_then_every_order_has_a_consistent_report_story():
    reports = _random_session(2, 5)
    assert [r.ts_ns for r in reports] == sorted(r.ts_ns for r in reports)
    stories = {}
    for r in reports:
        stories.setdefault(r.order_id, []).append(r)
    for story in stories.values():
        first, rest = story[0], story[1:]
        if first.exec_type == EXEC_REJECT:
            assert rest == [] and first.leaves == 0 and first.qty == 0
            continue
        assert first.exec_type == EXEC_ACK and first.qty == 0
        qty = leaves = first.leaves
        for k, r in enumerate(rest):
            assert r.exec_type in (EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_CANCELED)
            assert (k == len(rest) - 1) == (r.exec_type != EXEC_PARTIAL_FILL), "only the last report ends it"
            if r.exec_type == EXEC_CANCELED:
                assert r.qty == 0 and r.leaves == 0 and leaves == qty  # nothing was filled before a cancel
            else:
                leaves -= r.qty
                assert r.qty > 0 and r.leaves == leaves and r.fee == pytest.approx(r.qty * 0.01)
        assert not rest or leaves in (0, qty)  # ended: filled in full, or canceled untouched; else resting


# ---------------------------------------------------------------------------------------------- frames in
def _fixed_width_order_frame(o):
    """An Order frame as kernels/codec.py writes it: every field at full width (int8 side, uint8 type)."""
    body = struct.pack(">BBQBIBIBIBIBbBBBqBdBqBIBQBq", 0x9D, 0xCF, o.order_id, 0xCE, o.strategy, 0xCE, o.version,
                       0xCE, o.account, 0xCE, o.instrument, 0xD0, o.side, 0xCC, o.order_type, 0xD3, o.qty, 0xCB,
                       o.price, 0xD3, o.ts_ns, 0xCE, o.signal_source, 0xCF, o.signal_seq, 0xD3, o.signal_ts_ns)
    return struct.pack("<IBBH", len(body), WIRE_VERSION, MSG_ORDER, 0) + body


def test_sim_oms_on_frames_when_mixed_frames_then_orders_and_market_taken_and_the_rest_counted():
    oms = SimulatedOms(config(**INSTANT))
    malformed = struct.pack("<IBBH", 3, WIRE_VERSION, MSG_ORDER, 0) + b"\xc1\xc1\xc1"
    signal_frame = encode_frame(Signal(0, 1, 1, 0, 0, 0.5, 100.0, T0, 0))
    buf = (encode_frame(quote(99.0, 101.0)) + _fixed_width_order_frame(order(1, SIDE_SELL, price=99.0))
           + malformed + signal_frame + encode_frame(order(2, price=101.0)))
    tail = encode_frame(order(3))[:20]
    assert oms.on_frames(buf + tail, T0) == len(buf)
    assert (oms.stats.orders, oms.stats.market_data, oms.stats.malformed, oms.stats.bad_type) == (2, 1, 1, 1)
    assert [(r.order_id, r.exec_type, r.price) for r in oms.pop_due(T0)] == [
        (1, EXEC_ACK, 99.0), (1, EXEC_FILL, 99.0), (2, EXEC_ACK, 101.0), (2, EXEC_FILL, 101.0)]


def test_sim_oms_on_frames_when_max_orders_then_stops_after_that_many():
    oms = SimulatedOms(config(**INSTANT))
    frames = [encode_frame(order(i)) for i in range(5)]
    used = oms.on_frames(b"".join(frames), T0, max_orders=2)
    assert used == len(frames[0]) + len(frames[1]) and oms.stats.orders == 2


def test_sim_oms_on_frames_when_header_untrusted_then_frame_error_after_the_good_frames():
    oms = SimulatedOms(config(**INSTANT))
    bad_version = struct.pack("<IBBH", 3, WIRE_VERSION + 1, MSG_ORDER, 0) + b"abc"
    with pytest.raises(FrameError):
        oms.on_frames(encode_frame(order(1)) + bad_version + encode_frame(order(2)), T0)
    assert oms.stats.orders == 1 and oms.stats.bad_header == 1


# ---------------------------------------------------------------------------------------------- transport
class FakeClock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


def engine_tx(*orders):
    """Orders as the engine sends them: a uint8 array of concatenated frames."""
    return np.frombuffer(b"".join(_fixed_width_order_frame(o) for o in orders), np.uint8)


def reports_in(sink):
    return [msg for frame in sink.frames() for _, msg in iter_frames(frame)]


def test_sim_oms_transport_meets_the_protocols_and_refuses_when_closed():
    transport = SimOmsTransport(config(**INSTANT))
    assert isinstance(transport, Inbound) and isinstance(transport, Outbound)
    with pytest.raises(TransportClosed):
        transport.send(engine_tx(order(1)))
    with transport:
        assert transport.fileno() == -1 and transport.flush()
    with pytest.raises(TransportClosed):
        Sink().poll(transport)


def test_sim_oms_transport_when_engine_sends_its_tx_then_poll_returns_the_reports_as_whole_frames():
    with SimOmsTransport(config(**INSTANT, fee_per_unit=0.5), clock=FakeClock()) as transport:
        transport.on_market_data(encode_frame(quote(99.0, 101.0)) + encode_frame(quote(9.0, 11.0, instrument=1)))
        assert transport.send(engine_tx(*(order(i, price=200.0, instrument=i % 2) for i in range(100))))
        sink = Sink()
        assert sink.poll(transport) == 1
        reports = reports_in(sink)
        assert len(reports) == 200 and all(isinstance(r, ExecutionReport) for r in reports)
        assert [(r.price, r.fee) for r in reports[1::2]] == [(101.0, 5.0), (11.0, 5.0)] * 50
        assert (transport.stats.sent, transport.stats.chunks) == (1, 1)
        assert transport.stats.bytes_in == sum(len(c) for c in sink.chunks)
        assert sink.poll(transport) == 0


def test_sim_oms_transport_when_rx_small_then_reports_wait_and_no_frame_is_cut():
    with SimOmsTransport(config(**INSTANT), clock=FakeClock()) as transport:
        transport.send(engine_tx(*(order(i) for i in range(50))))
        sink = Sink(rx_bytes=300)
        while sink.poll(transport):
            pass  # the Sink checks every chunk is whole frames; each poll starts at offset 0
        assert len(sink.chunks) > 10
        assert [(r.order_id, r.exec_type) for r in reports_in(sink)] == \
            [(i, t) for i in range(50) for t in (EXEC_ACK, EXEC_FILL)]
        assert Sink().poll(transport, max_chunks=0) == 0


def test_sim_oms_transport_when_latency_set_then_reports_appear_only_when_the_clock_reaches_them():
    clock = FakeClock()
    with SimOmsTransport(config(ack_latency_us=100, fill_latency_us=400), clock=clock) as transport:
        transport.send(b"".join(encode_frame(order(i)) for i in range(3)))
        sink = Sink()
        clock.now = T0 + 100 * US - 1
        assert sink.poll(transport) == 0
        clock.now = T0 + 100 * US
        assert sink.poll(transport) == 1 and kinds(reports_in(sink)) == [EXEC_ACK] * 3
        clock.now = T0 + 400 * US
        assert sink.poll(transport) == 1 and kinds(reports_in(sink)) == [EXEC_ACK] * 3 + [EXEC_FILL] * 3


def test_sim_oms_transport_when_header_untrusted_then_counted_and_the_rest_of_that_send_dropped():
    with SimOmsTransport(config(**INSTANT), clock=FakeClock()) as transport:
        bad = struct.pack("<IBBH", 5000, WIRE_VERSION, MSG_ORDER, 0)
        assert transport.send(encode_frame(order(1)) + bad + encode_frame(order(2)))
        assert transport.stats.oversize == 1 and transport.oms.stats.orders == 1


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_sim_oms_transport_when_attached_to_a_loop_then_called_back_when_reports_are_due(loop_factory):
    async def body():
        with SimOmsTransport(config(ack_latency_us=2000, fill_latency_us=20_000)) as transport:
            sink, seen = Sink(), []

            def on_readable():
                sink.poll(transport)
                seen.append(time.monotonic())
            transport.attach(asyncio.get_running_loop(), on_readable)
            start = time.monotonic()
            transport.send(encode_frame(order(1)))
            while len(reports_in(sink)) < 2:
                assert time.monotonic() - start < 5, "no callback"
                await asyncio.sleep(0.001)
            transport.detach()
        assert kinds(reports_in(sink)) == [EXEC_ACK, EXEC_FILL]
        assert seen[-1] - start >= 0.019  # the fill's 20 ms, give or take the loop's clock rounding
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(body())


# ---------------------------------------------------------------------------------------------- TCP server
async def _read_reports(reader, count, timeout=5.0):
    """Read frames off a TCP stream until `count` reports have come (or EOF); return them."""
    buf, out = b"", []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < count:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"got {len(out)} of {count} reports"
        data = await asyncio.wait_for(reader.read(65536), left)
        if not data:
            break
        buf += data
        end = 0
        while len(buf) - end >= 8:
            size = 8 + struct.unpack_from("<I", buf, end)[0]
            if len(buf) - end < size:
                break
            end += size
        out += [m for t, m in iter_frames(buf[:end]) if t == MSG_EXECUTION_REPORT]
        buf = buf[end:]
    return out


def _serve_in_loop(body, **server_args):
    async def main():
        server = await sim_oms.SimOmsServer(**server_args).start()
        try:
            return await body(server)
        finally:
            await server.close()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def test_sim_oms_server_when_orders_over_tcp_then_reports_come_back_on_the_connection():
    async def body(server):
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"".join(_fixed_width_order_frame(order(i, price=100.0 + i)) for i in range(200)))
        reports = await _read_reports(reader, 400)
        writer.close()
        await writer.wait_closed()
        return reports, server.totals()
    reports, totals = _serve_in_loop(body, config=config(ack_latency_us=100, fill_latency_us=300))
    assert [(r.order_id, r.exec_type) for r in reports if r.exec_type == EXEC_FILL] == \
        [(i, EXEC_FILL) for i in range(200)]
    assert kinds(reports).count(EXEC_ACK) == 200
    assert totals["orders"] == 200 and totals["reports"] == 400 and totals["connections"] == 1


def test_sim_oms_server_when_market_data_over_udp_then_resting_orders_fill_against_it():
    async def body(server):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.sendto(encode_frame(quote(99.0, 101.0)), server.market_data_address)
            while server.counts["market_data"] < 1:
                await asyncio.sleep(0.001)
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(encode_frame(order(1, SIDE_BUY, price=100.0)) + encode_frame(order(2, SIDE_BUY, price=102.0)))
            first = await _read_reports(reader, 3)
            udp.sendto(encode_frame(quote(98.0, 99.5)) + encode_frame(Signal(0, 1, 1, 0, 0, 0.5, 1.0, T0, 0)),
                       server.market_data_address)
            second = await _read_reports(reader, 1)
            writer.close()
            await writer.wait_closed()
        finally:
            udp.close()
        return first, second, server.totals()
    first, second, totals = _serve_in_loop(body, config=config(**INSTANT), market_data_port=0)
    assert [(r.order_id, r.exec_type, r.price) for r in first] == [(1, EXEC_ACK, 100.0), (2, EXEC_ACK, 102.0),
                                                                  (2, EXEC_FILL, 101.0)]
    assert [(r.order_id, r.exec_type, r.price) for r in second] == [(1, EXEC_FILL, 100.0)]
    assert totals["market_data"] == 2 and totals["market_data_bad_type"] == 1


def test_sim_oms_server_when_drop_after_n_then_each_connection_closes_after_its_nth_order():
    async def body(server):
        got = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(b"".join(encode_frame(order(i)) for i in range(10)))
            got.append(await _read_reports(reader, 100))  # ends at EOF
            assert reader.at_eof()
            writer.close()
            await writer.wait_closed()
        return got, server.totals()
    got, totals = _serve_in_loop(body, config=config(**INSTANT), drop_after=3)
    for reports in got:
        assert [(r.order_id, r.exec_type) for r in reports] == [(i, t) for i in range(3) for t in (EXEC_ACK, EXEC_FILL)]
    assert totals["dropped"] == 2 and totals["orders"] == 6 and totals["connections"] == 2


def test_sim_oms_server_when_stall_then_no_report_until_the_stall_ends():
    async def body(server):
        reader, writer = await asyncio.open_connection(*server.address)
        start = asyncio.get_running_loop().time()
        writer.write(b"".join(encode_frame(order(i)) for i in range(5)))
        reports = await _read_reports(reader, 10)
        waited = asyncio.get_running_loop().time() - start
        writer.close()
        await writer.wait_closed()
        return reports, waited, server.totals()
    reports, waited, totals = _serve_in_loop(body, config=config(**INSTANT), stall_ms=300)
    assert len(reports) == 10 and waited >= 0.25 and totals["stalls"] == 1


def test_sim_oms_server_when_stall_after_n_then_back_pressure_reaches_the_client():
    """Orders past the N-th wait in the socket; a client writing a lot sees its buffer fill."""
    async def body(server):
        sock = socket.create_connection(server.address)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
            sock.setblocking(False)
            frame = encode_frame(order(1))
            written = 0
            loop = asyncio.get_running_loop()
            for _ in range(200_000):  # at most ~14 MB
                try:
                    written += sock.send(frame * 100)
                except BlockingIOError:
                    break
                await asyncio.sleep(0)
            else:
                pytest.fail("the server never pushed back")
            stalled_at = server.totals()["orders"]
            await asyncio.sleep(0.05)
            assert server.totals()["orders"] == stalled_at  # still stalled: nothing more taken
            deadline = loop.time() + 5
            while server.totals()["orders"] == stalled_at:  # the stall ends, reading resumes
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
        finally:
            sock.close()
        return stalled_at, server.totals()
    stalled_at, totals = _serve_in_loop(body, config=config(**INSTANT), stall_ms=400, stall_after=5)
    assert stalled_at == 5 and totals["stalls"] == 1


def test_sim_oms_process_serves_then_prints_a_summary_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "engine.sim_oms", "--port", "0", "--ack-latency-us", "0",
                             "--fill-latency-us", "0", "--fee-per-unit", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("sim-oms listening on tcp 127.0.0.1:"), ready + proc.stderr.read()
        port = int(ready.strip().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(encode_frame(order(7, qty=4)))
            data = b""
            while len(list(iter_frames(data[:_whole(data)]))) < 2:
                chunk = sock.recv(4096)
                assert chunk, "connection closed early"
                data += chunk
            reports = [m for _, m in iter_frames(data)]
        assert [(r.order_id, r.exec_type, r.fee) for r in reports] == [(7, EXEC_ACK, 0.0), (7, EXEC_FILL, 2.0)]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("sim-oms: ") and " orders=1 " in summary and " fills=1 " in summary


def _whole(data):
    end = 0
    while len(data) - end >= 8 and len(data) - end >= 8 + struct.unpack_from("<I", data, end)[0]:
        end += 8 + struct.unpack_from("<I", data, end)[0]
    return end


def test_sim_oms_cli_when_config_value_out_of_range_then_exits_naming_the_key(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text("[sim_oms]\nreject_ratio = 1.5\n")
    parser = sim_oms.add_arguments(__import__("argparse").ArgumentParser())
    with pytest.raises(SystemExit, match=r"reject_ratio"):
        sim_oms.config_from_args(parser.parse_args(["--config", str(path)]))
    args = parser.parse_args(["--config", str(path), "--reject-ratio", "0.25", "--seed", "9"])
    assert sim_oms.config_from_args(args) == config(reject_ratio=0.25, seed=9)
