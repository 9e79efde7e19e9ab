"""kernels/venue.py (the simulated venue in the batch) == sim/venue.py (the one the TCP and Aeron servers run):
the same orders, quotes, cancel requests and clock give the same reports, field for field and floats bit for bit,
and the same counts. Random settings (latencies, reject and partial-fill ratios, a resting TTL, fees), random
sessions of limit, market and IOC orders (good and refused ones), quotes that cross resting orders or not,
cancels, and reports popped at random times. Both engines: compiled, and its Python source."""
import math
import struct

import msgspec
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels import arena as A
from kernels import rings
from kernels.dtypes import ORDER_IOC, ORDER_LIMIT, ORDER_MARKET, SIDE_BUY, SIDE_SELL
from sim.venue import SimOmsConfig, SimulatedOms
from wire.schema import MarketData, Order

T0 = 1_700_000_000_000_000_000
SESSIONS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REPORT_FIELDS = ("order_id", "strategy", "deploy", "exec_type", "qty", "price", "leaves", "fee", "ts_ns", "reason")
STAT_FIELDS = ("orders", "acks", "rejects", "partial_fills", "fills", "canceled", "filled_qty", "fees")


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)
    return int(a) == int(b)


class Pair:
    """The compiled venue (in a kernel state) and the Python one, driven the same way."""

    def __init__(self, engine, make_state, data, venue):
        self.engine, self.data = engine, data
        n_instruments = data.draw(st.integers(1, 2))
        ticks = [data.draw(st.sampled_from([0.01, 0.25, 0.5])) for _ in range(n_instruments)]
        multipliers = [data.draw(st.sampled_from([1.0, 50.0])) for _ in range(n_instruments)]
        self.k = make_state(1, n_instruments, order_table=12, report_ring=64, venue=venue,
                            instruments=dict(tick_size=ticks, multiplier=multipliers))
        self.py = SimulatedOms(msgspec.convert({**venue, "multipliers": multipliers}, SimOmsConfig))
        self.now = T0
        self.gen = 1
        self.busy = {}  # slot -> order id, from arrival to its last report (both venues free it then)

    def draw(self, strategy):
        return self.data.draw(strategy)

    def order(self):
        free = [slot for slot in range(len(self.k.open_orders)) if slot not in self.busy]
        if not free:
            return
        slot = self.draw(st.sampled_from(free))
        i = self.draw(st.integers(0, len(self.k.instruments) - 1))
        tick = float(self.k.instruments[i]["tick_size"])
        mark = 400 + self.draw(st.integers(-20, 20))
        fields = dict(order_id=(self.gen << 24) | slot, strategy=self.draw(st.integers(0, 3)), deploy=1,
                      instrument=i, side=self.draw(st.sampled_from([SIDE_BUY, SIDE_SELL])),
                      order_type=self.draw(st.sampled_from([ORDER_LIMIT, ORDER_LIMIT, ORDER_MARKET, ORDER_IOC, 7])),
                      qty=self.draw(st.sampled_from([1, 2, 3, 10, 99, 0, -5])),
                      px_ticks=self.draw(st.sampled_from([mark, mark, 0, -3])))
        self.gen += 1
        o = self.k.open_orders[slot]
        for name, value in fields.items():
            o[name] = value
        self.engine.kernel("venue", "venue_order")(self.k.arena, self.k.layout, slot, self.now)
        self.py.on_order(Order(account=0, price=fields["px_ticks"] * tick, ts_ns=self.now, signal_source=0,
                               signal_seq=0, signal_ts_ns=0, **{k: v for k, v in fields.items() if k != "px_ticks"}),
                         self.now)
        self.busy[slot] = fields["order_id"]

    def quote(self):
        i = self.draw(st.integers(0, len(self.k.instruments) - 1))
        ins = self.k.instruments[i]
        tick = float(ins["tick_size"])
        mid = 400 + self.draw(st.integers(-30, 30))
        bid, ask = mid - self.draw(st.integers(0, 3)), mid + self.draw(st.integers(1, 3))
        bid, ask = self.draw(st.sampled_from([(bid, ask), (bid, ask), (0, ask), (bid, 0), (0, 0)]))
        last = self.draw(st.sampled_from([mid, 0]))
        ins["bid_ticks"], ins["ask_ticks"], ins["last_ticks"] = bid, ask, last
        assert self.engine.kernel("venue", "venue_quote")(self.k.arena, self.k.layout, i, self.now) == \
            self.py.on_market_data(MarketData(instrument=i, bid=bid * tick, ask=ask * tick, last=last * tick,
                                              ts_ns=self.now), self.now)

    def cancel(self):
        if self.busy:
            slot, order_id = self.draw(st.sampled_from(sorted(self.busy.items())))
            assert bool(self.engine.kernel("venue", "venue_cancel")(self.k.arena, self.k.layout, slot, self.now)) == \
                self.py.cancel(order_id, self.now)

    def pop(self):
        self.now += self.draw(st.sampled_from([0, 10_000, 100_000, 1_000_000, 10_000_000]))
        self.engine.kernel("venue", "venue_reports")(self.k.arena, self.k.layout, self.now)
        tail, head = rings.available(self.k.cursors, A.RING_REPORTS)
        compiled = [row for part in rings.slices(self.k.reports, tail, head) for row in part]
        rings.release(self.k.cursors, A.RING_REPORTS, head)
        python = self.py.pop_due(self.now)
        assert len(compiled) == len(python), (len(compiled), len(python))
        for got, want in zip(compiled, python):
            for name in REPORT_FIELDS:
                assert same(got[name], getattr(want, name)), (name, got[name], getattr(want, name), want)
            if want.exec_type in (3, 4) or (want.exec_type == 1):  # FILL, CANCELED, REJECT: the order is done
                self.busy.pop(int(want.order_id) & ((1 << 24) - 1), None)

    def check_counts(self):
        v = self.k.venue[0]
        for name in STAT_FIELDS:
            assert same(v[name], getattr(self.py.stats, name)), (name, v[name], getattr(self.py.stats, name))
        assert int(v["pending"]) == self.py.pending()


@st.composite
def venues(draw):
    return dict(ack_latency_us=draw(st.sampled_from([0, 50, 500])),
                fill_latency_us=draw(st.sampled_from([0, 30, 2000])),
                reject_ratio=draw(st.sampled_from([0.0, 0.0, 0.2])),
                partial_fill_ratio=draw(st.sampled_from([0.0, 0.5, 1.0])),
                partial_fill_gap_us=draw(st.sampled_from([0, 0, 700])),
                resting_ttl_us=draw(st.sampled_from([0, 0, 3000])),
                fee_per_unit=draw(st.sampled_from([0.0, 0.013])), taker_fee_bps=draw(st.sampled_from([0.0, 2.5])),
                maker_fee_bps=draw(st.sampled_from([0.0, -1.0])), min_fee=draw(st.sampled_from([0.0, 0.35])),
                seed=draw(st.integers(0, 2**40)))


@SESSIONS
@given(data=st.data())
def test_venue_when_same_session_then_compiled_and_python_venues_report_the_same(engine, make_state, data):
    pair = Pair(engine, make_state, data, data.draw(venues(), label="venue"))
    steps = [pair.order] * 4 + [pair.quote] * 3 + [pair.cancel, pair.pop, pair.pop]
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        data.draw(st.sampled_from(steps))()
    pair.now += 10**9
    pair.pop()
    pair.check_counts()


def test_venue_when_a_resting_order_is_crossed_then_it_fills_at_its_own_price_as_maker(engine, make_state):
    k = make_state(1, 1, order_table=4, report_ring=16, venue=dict(ack_latency_us=0, fill_latency_us=0,
                                                                     maker_fee_bps=-1.0, taker_fee_bps=3.0),
                   instruments=dict(tick_size=0.01, multiplier=1.0))
    k.instruments[0]["bid_ticks"], k.instruments[0]["ask_ticks"] = 9_990, 10_010
    o = k.open_orders[0]
    o["order_id"], o["side"], o["order_type"], o["qty"], o["px_ticks"] = (1 << 24), SIDE_BUY, ORDER_LIMIT, 100, 10_000
    engine.kernel("venue", "venue_order")(k.arena, k.layout, 0, T0)
    assert k.venue[0]["pending"] == 1 and k.venue_orders[0]["resting"] == 1  # the ACK only: it rests
    k.instruments[0]["ask_ticks"] = 10_000
    assert engine.kernel("venue", "venue_quote")(k.arena, k.layout, 0, T0 + 5) == 1
    assert engine.kernel("venue", "venue_reports")(k.arena, k.layout, T0 + 5) == 2
    ack, fill = k.reports[0], k.reports[1]
    assert (ack["exec_type"], fill["exec_type"], fill["qty"], fill["price"]) == (0, 3, 100, 100.0)
    assert fill["fee"] == -1.0  # 100 x 100.00 x -1 bp: a maker rebate, to the cent
    assert np.all(k.venue_books[0] == -1)
