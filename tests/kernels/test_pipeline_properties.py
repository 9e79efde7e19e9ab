"""process_signals, apply_mark and apply_reports == reference/rules.py, on random tables and sessions.

A session is a random table (tight and loose limits, several strategies on the same instruments, several
accounts, strategies ACTIVE/REDUCING/PAUSED/HALTED/READY, kill switches, non-tradable and restricted
instruments, holdings to start from) and a random sequence of steps: signal batches (edge values, duplicates,
out-of-order, stale, unknown ids), mark moves (market data), execution reports (acks, rejects, partial and
full fills, overfills, cancels, unknown ids, wrong strategy or deploy, NaN prices), lifecycle commands, kill
switch flips and the OMS adapter taking orders. After every step the whole state must be equal, floats bit for
bit: orders, rejects with their reasons, reason and trip counts, counters, positions, open quantities, P&L,
exposure, strategy states. Every session runs on the compiled kernels and on their Python source.
"""
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels.arena import RING_FILLS, RING_ORDERS, RING_REJECTS, RING_REPORTS, RING_SIGNALS
from kernels.dtypes import (
    ACTIVE, BREAKER_ACTION_HALT, BREAKER_ACTION_REDUCE, EV_ACTIVATE, EV_DEACTIVATE, EV_HALT, EV_PAUSE, EV_REDUCE,
    EV_RESET, EXEC_ACK, EXEC_CANCELED, EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_REJECT, HALTED, ORDER_IOC, ORDER_LIMIT,
    ORDER_MARKET, PAUSED, READY, REDUCING, SIDES_BOTH, SIDES_BUY, SIDES_SELL, SIGNAL_ORDER, SIGNAL_TARGET,
)
from kernels.lifecycle import TRANSITIONS
from kernels.rings import HEAD, TAIL
from reference.compare import records_differences, table_differences
from reference.rules import Reference

NOW_NS = 1_700_000_000_000_000_000
NAN, INF = math.nan, math.inf
N_SOURCES = 2

SESSIONS = settings(max_examples=150, deadline=None, derandomize=False, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FOCUSED = settings(SESSIONS, max_examples=75)


# -------------------------------------------------------------------------------------------- tables
@st.composite
def tables(draw, make_state, tightness=None, holdings_rate=0.25, binding_limits=None):
    """A random engine table. `tightness` (0-4 in 16) is how often a field takes a tight or odd value instead
    of the loose default, so some tables let most orders through and others reject for many reasons."""
    n_strategies = draw(st.integers(1, 4))
    n_instruments = draw(st.integers(1, 3))
    n_accounts = draw(st.integers(1, 2))
    n_signal_ids = draw(st.integers(1, 3))
    tightness = draw(st.sampled_from([0, 0, 1, 2, 4])) if tightness is None else tightness

    def pick(loose, *tight):
        return draw(st.sampled_from(tight)) if tight and draw(st.integers(0, 15)) < tightness else loose

    def rows(n, loose, *tight):
        return [pick(loose, *tight) for _ in range(n)]

    subscriptions = [draw(st.lists(st.integers(0, n_strategies - 1), min_size=pick(1, 0), max_size=3, unique=True))
                     for _ in range(n_signal_ids)]
    ref_px = [draw(st.sampled_from([10_000, 12_345, 100])) for _ in range(n_instruments)]
    ref_px = [pick(px, 0, 1) for px in ref_px]
    instruments = dict(
        tick_size=[draw(st.sampled_from([0.01, 0.05, 0.25, 0.5, 1.0])) for _ in range(n_instruments)],
        lot_size=[draw(st.sampled_from([1, 10, 100])) for _ in range(n_instruments)],
        multiplier=[draw(st.sampled_from([1.0, 10.0, 0.5])) for _ in range(n_instruments)],
        band_pct=rows(n_instruments, 5.0, 50.0, 0.5, 0.0),
        tradable=rows(n_instruments, 1, 0),
        ref_px_ticks=ref_px, mark_ticks=ref_px,
        max_mark_age_ns=rows(n_instruments, 0, 10**6),
    )
    strategies = dict(
        state=rows(n_strategies, ACTIVE, REDUCING, PAUSED, HALTED, READY),
        breaker_action=[draw(st.sampled_from([BREAKER_ACTION_HALT, BREAKER_ACTION_REDUCE]))
                        for _ in range(n_strategies)],
        order_type=rows(n_strategies, ORDER_LIMIT, ORDER_MARKET, ORDER_IOC),
        deploy=[draw(st.integers(0, 3)) for _ in range(n_strategies)],
        account=[draw(st.integers(0, n_accounts - 1)) for _ in range(n_strategies)],
        max_position=rows(n_strategies, 100_000, 1_000, 100, 0),
        max_order_qty=rows(n_strategies, 100_000, 500, 100, 0),
        max_order_notional=rows(n_strategies, 1e9, 1e5, 1e3, 0.0),
        max_open_orders=rows(n_strategies, 10, 3, 1, 0),
        rate_per_s=rows(n_strategies, 1000.0, 1.0, 0.0),
        burst=rows(n_strategies, 10.0, 2.0, 1.0),
        tokens=rows(n_strategies, 10.0, 1.0, 0.5),
        daily_loss_limit=rows(n_strategies, 1e9, 1e3, 10.0, 0.0),
        # breakers trip rather than reject: drawn on their own, mostly off (0) or lenient
        max_consecutive_rejects=[draw(st.sampled_from([0, 0, 0, 5, 2])) for _ in range(n_strategies)],
        ratio_min_orders=[draw(st.sampled_from([10, 4, 0])) for _ in range(n_strategies)],
        max_reject_ratio=[draw(st.sampled_from([0.0, 0.0, 0.0, 0.9, 0.6])) for _ in range(n_strategies)],
        ratio_window_ns=[draw(st.sampled_from([10**9, 10**6, 0, 10**12])) for _ in range(n_strategies)],
        max_drawdown=[draw(st.sampled_from([0.0, 0.0, 1e3, 10.0])) for _ in range(n_strategies)],
        loss_limit=[draw(st.sampled_from([0.0, 0.0, 1e3, 10.0])) for _ in range(n_strategies)],
        cooldown_ns=[draw(st.sampled_from([10**6, 10**9, 0])) for _ in range(n_strategies)],
        kill=rows(n_strategies, 0, 1),
        sides=rows(n_strategies, SIDES_BOTH, SIDES_BUY, SIDES_SELL),
        duplicate_window_ns=rows(n_strategies, 0, 10**9),
        max_fills_per_window=[draw(st.sampled_from([0, 0, 1, 3])) for _ in range(n_strategies)],
        max_off_band_fills=[draw(st.sampled_from([0, 0, 1])) for _ in range(n_strategies)],
        # now and then a shadow version of a strategy (s + 1): sized against that one's position, never placed
        shadow_of=rows(n_strategies, 0, *range(1, n_strategies + 1)),
    )
    accounts = dict(
        kill=rows(n_accounts, 0, 1),
        sides=rows(n_accounts, SIDES_BOTH, SIDES_BUY, SIDES_SELL),
        daily_loss_limit=rows(n_accounts, 1e9, 1e3, 10.0),
    )
    allowed = [rows(n_instruments, 1, 0) for _ in range(n_strategies)]
    holdings = {}
    for s in range(n_strategies):
        for i in range(n_instruments):
            lots = draw(st.sampled_from([1, -2, 30])) if draw(st.floats(0, 1)) < holdings_rate else 0
            if lots and ref_px[i] > 0:
                holdings[s, i] = (lots * instruments["lot_size"][i], ref_px[i] + draw(st.integers(-50, 50)) + 0.25)
    k = make_state(
        n_strategies, n_instruments, n_accounts, subscriptions=subscriptions, n_sources=N_SOURCES,
        order_table=pick(8, 4, 2), signal_ring=16, order_ring=draw(st.sampled_from([16, 4])),
        reject_ring=pick(32, 8, 2), report_ring=16,
        instruments=instruments, strategies=strategies, accounts=accounts, positions={"allowed": allowed},
        holdings=holdings)
    # account exposure limits that bind: near what the holdings already use, or loose
    for a in range(n_accounts):
        for limit, used in (("max_gross_notional", "gross"), ("max_net_notional", "net")):
            factor = pick(None, 0.0, 1.0, 1.05, 1.5, 3.0) if binding_limits is None else draw(
                st.sampled_from(binding_limits))
            k.accounts[a][limit] = 1e12 if factor is None else factor * max(abs(k.accounts[a][used]), 1e5)
    return k


# -------------------------------------------------------------------------------------------- steps
ADVANCE_NS = st.sampled_from([0, 1_000, 10**6, 10**8, 10**9, 5 * 10**9])
ODD_TARGETS = st.sampled_from([0.0, 1.0, -1.0, 1.5, -2.0, NAN, INF, -INF, 1e300, -1e300])
ODD_ORDER_QTYS = st.sampled_from([NAN, 0.0, 1.0, -1.0, 0.5, 150.5, INF, -INF, 1e20, -1e20, 1e300])
ODD_PRICES = st.sampled_from([0.0, -1.0, NAN, INF, -INF, 1e20, 1e307, 1e308])
ODD_FILL_PRICES = st.sampled_from([1e308, NAN, INF, 0.0, -1.0])
ODD_AGES_NS = st.sampled_from([1_000, 10**6 + 1, 10**9 + 1, 10**12, -10**9, None])   # None: ts_ns = -2**63 + 1
TTLS_NS = st.sampled_from([0, 10**9, 10**6, 10**10])
# Inputs that found kernel bugs (now fixed, see tests/kernels/test_rules.py): ts_ns far in the past, ORDER
# quantities NaN or inf, prices whose ticks reach 2**63, fills at absurd prices, a mark move before the next
# batch, max_orders beyond the order ring's room.
EXTREME_TS_NS = -2**63 + 1


class Session:
    """Drives the kernels (KernelState `k`) and the reference `ref` through the same steps."""

    def __init__(self, data, engine, k, odd=16):
        self.data, self.engine, self.k, self.odd = data, engine, k, odd
        self.ref = Reference(k)
        self.now = NOW_NS
        self.top_seq = [0] * N_SOURCES
        self.seen_ids = [0, 12_345]

    def draw(self, strategy):
        return self.data.draw(strategy)

    def tick(self):
        self.now += self.draw(ADVANCE_NS)

    def rare(self):
        """True one time in `odd` (never for odd=0): take an odd value instead of a plausible one."""
        return self.odd > 0 and self.draw(st.integers(0, self.odd - 1)) == 0

    def signal(self):
        k = self.k
        n_instruments = len(k.instruments)
        source = self.draw(st.integers(0, N_SOURCES)) if self.rare() else self.draw(st.integers(0, N_SOURCES - 1))
        top = self.top_seq[source] if source < N_SOURCES else 7
        seq = max(0, top + (self.draw(st.sampled_from([0, -1, 3])) if self.rare() else 1))
        if source < N_SOURCES:
            self.top_seq[source] = max(top, seq)
        n_ids = len(k.sub_ptr) - 1
        signal_id = self.draw(st.integers(0, n_ids)) if self.rare() else self.draw(st.integers(0, n_ids - 1))
        instrument = self.draw(st.integers(0, n_instruments if self.rare() else n_instruments - 1))
        known = instrument < n_instruments
        lot = int(k.instruments[instrument]["lot_size"]) if known else 100
        tick = float(k.instruments[instrument]["tick_size"]) if known else 0.01
        mark = int(k.instruments[instrument]["mark_ticks"]) if known else 10_000
        kind = 2 if self.rare() else self.draw(st.sampled_from([SIGNAL_TARGET, SIGNAL_ORDER]))
        if kind == SIGNAL_ORDER:
            value = self.draw(ODD_ORDER_QTYS) if self.rare() else float(lot * self.draw(st.integers(-20, 20)))
        else:
            value = self.draw(ODD_TARGETS) if self.rare() else self.draw(
                st.one_of(st.sampled_from([0.5, -0.5, 0.25, -0.1, 0.03, 1 / 3]), st.floats(-1.0, 1.0)))
        if self.rare():
            price = self.draw(st.one_of(ODD_PRICES, st.integers(-3000, 3000).map(lambda off: (mark + off) * tick)))
        else:
            off = self.draw(st.integers(-20, 20)) * max(1, mark // 1000) // 10   # within a 2% band
            price = (mark + off + self.draw(st.sampled_from([0.0, 0.0, 0.5, 0.3, 0.999]))) * tick
        age = self.draw(ODD_AGES_NS) if self.rare() else 0
        fields = dict(seq=seq, ts_ns=EXTREME_TS_NS if age is None else self.now - age, ttl_ns=self.draw(TTLS_NS),
                      recv_ns=self.now, source=source, signal_id=signal_id, instrument=instrument, kind=kind,
                      value=value, price=price)
        pushed = k.push_signal(**fields)
        assert self.ref.signals.push(**fields) == pushed

    def batch(self, max_signals=6):
        self.tick()
        for _ in range(self.draw(st.integers(0, max_signals))):
            self.signal()
        room = self.k.order_room()
        # the driver passes the room left in TX; the kernel must not write past the order ring's room either
        max_orders = self.draw(st.sampled_from([room] * 5 + [room + 8, 0, 1]))
        placed = self.engine.process_signals(self.k, self.now, max_orders)
        assert placed == self.ref.process_signals(self.now, max_orders)
        if self.draw(st.booleans()):
            self.drain()

    def drain(self):
        """The OMS adapter takes the orders and the metrics task takes the rejects."""
        self.seen_ids += [int(o["order_id"]) for o in self.k.take_orders()]
        self.k.take_rejects()
        self.k.take_fills()
        for ring in (self.ref.orders, self.ref.rejects, self.ref.fills):
            ring.tail = ring.head

    def market(self):
        """Market data moves one instrument's mark."""
        self.tick()
        i = self.draw(st.integers(0, len(self.k.instruments) - 1))
        mark = int(self.k.instruments[i]["mark_ticks"])
        factor = self.draw(st.sampled_from([1.01, 0.99, 1.1, 0.9, 2.0, 0.5, 1.0]))
        new_mark = max(1, round(mark * factor) if mark else 10_000)
        assert self.engine.apply_mark(self.k, i, new_mark, self.now) == self.ref.apply_mark(i, new_mark, self.now)

    def reports(self):
        k = self.k
        for _ in range(self.draw(st.integers(1, 5)) if k.live_orders() else 1):
            live = k.live_orders()
            if live and not self.rare():
                o = k.open_orders[self.draw(st.sampled_from(live))]
                order_id, strategy, deploy = int(o["order_id"]), int(o["strategy"]), int(o["deploy"])
                leaves, px_ticks = int(o["leaves"]), int(o["px_ticks"])
                tick = float(k.instruments[o["instrument"]]["tick_size"])
                if self.rare():
                    strategy, deploy = self.draw(st.sampled_from([(strategy + 1, deploy),
                                                                   (strategy, deploy + 1)]))
            else:
                order_id = self.draw(st.sampled_from(self.seen_ids + [(1 << 40) | 3]))
                strategy, deploy, leaves, px_ticks, tick = 0, 0, 100, 10_000, 0.01
            lot_ish = max(1, leaves // 3)
            fields = dict(
                order_id=order_id, strategy=strategy, deploy=deploy,
                exec_type=self.draw(st.sampled_from([EXEC_ACK, EXEC_REJECT, EXEC_PARTIAL_FILL, EXEC_PARTIAL_FILL,
                                                     EXEC_FILL, EXEC_FILL, EXEC_CANCELED, 9])),
                qty=self.draw(st.sampled_from([leaves, lot_ish, 1, leaves + lot_ish, 0, -lot_ish]) if self.rare()
                              else st.sampled_from([leaves, lot_ish])),
                price=self.draw(ODD_FILL_PRICES) if self.rare()
                else (px_ticks + self.draw(st.integers(-5, 5))) * tick,
                leaves=0, fee=self.draw(st.sampled_from([-0.1, NAN, INF])) if self.rare()
                else self.draw(st.sampled_from([0.0, 0.5, 1.25])), ts_ns=self.now)
            pushed = k.push_report(**fields)
            assert self.ref.reports.push(**fields) == pushed
        self.tick()
        assert self.engine.apply_reports(k, self.now) == self.ref.apply_reports(self.now)

    def command(self):
        """A lifecycle command from the control plane, between batches."""
        s = self.draw(st.integers(0, len(self.k.strategies) - 1))
        event = self.draw(st.sampled_from([EV_PAUSE, EV_ACTIVATE, EV_REDUCE, EV_HALT, EV_RESET, EV_DEACTIVATE]))
        target = int(TRANSITIONS[self.k.strategies[s]["state"], event])
        if target >= 0:
            self.k.strategies[s]["state"] = target
            self.ref.strategies[s].state = target

    def kill_switch(self):
        """An operator flips an account's kill switch."""
        a = self.draw(st.integers(0, len(self.k.accounts) - 1))
        self.k.accounts[a]["kill"] ^= 1
        self.ref.accounts[a].kill ^= 1

    def run(self, n_steps, steps=None):
        steps = steps or ([self.batch] * 8 + [self.reports] * 6 + [self.market] * 4 + [self.drain, self.command,
                                                                                          self.kill_switch])
        for _ in range(n_steps):
            step = self.draw(st.sampled_from(steps))
            if step == self.kill_switch and not any(k["kill"] for k in self.k.accounts) and not self.rare():
                continue
            step()
            assert_same_state(self.k, self.ref, after=step.__name__)


# -------------------------------------------------------------------------------------------- comparison
RINGS = [(RING_SIGNALS, "signals"), (RING_ORDERS, "orders"), (RING_REJECTS, "rejects"), (RING_REPORTS, "reports"),
         (RING_FILLS, "fills")]


def state_differences(k, ref):
    """Every table (reference/compare.py), and the five rings: their cursors and every slot's record."""
    out = table_differences(k, ref)
    for ring, name in RINGS:
        model = getattr(ref, name)
        cursors = (int(k.cursors[ring, HEAD]), int(k.cursors[ring, TAIL]))
        if cursors != (model.head, model.tail):
            out.append(f"{name} ring head, tail: kernel {cursors}, reference {(model.head, model.tail)}")
        out += records_differences(name, getattr(k, name), model.slots)
    return out


def assert_same_state(k, ref, after):
    differences = state_differences(k, ref)
    assert not differences, f"after {after}:\n  " + "\n  ".join(differences[:30])


# -------------------------------------------------------------------------------------------- properties
@pytest.fixture(scope="module")
def any_table(make_state):
    return tables(make_state)


@pytest.fixture(scope="module")
def loose_table(make_state):
    return tables(make_state, tightness=0)


@pytest.fixture(scope="module")
def held_table(make_state):
    """Every strategy holds something and the account exposure limits bind."""
    return tables(make_state, tightness=0, holdings_rate=1.0, binding_limits=[1.0, 1.05, 1.2])


@SESSIONS
@given(data=st.data())
def test_kernels_when_random_session_then_state_equals_reference(engine, any_table, data):
    k = data.draw(any_table, label="table")
    Session(data, engine, k).run(data.draw(st.integers(1, 20), label="steps"))


@FOCUSED
@given(data=st.data())
def test_process_signals_when_odd_signals_then_orders_and_rejects_equal_reference(engine, any_table, data):
    """Many signals, one in three odd: edge values, duplicates, out of order, stale, unknown ids."""
    session = Session(data, engine, data.draw(any_table, label="table"), odd=3)
    session.run(data.draw(st.integers(1, 4), label="steps"), steps=[lambda: session.batch(max_signals=12)])


@FOCUSED
@given(data=st.data())
def test_apply_reports_when_odd_reports_then_positions_and_pnl_equal_reference(engine, loose_table, data):
    """Working orders, then execution reports of which one in three is odd, with marks moving in between."""
    session = Session(data, engine, data.draw(loose_table, label="table"), odd=0)
    session.batch(max_signals=12)
    session.drain()
    session.odd = 3
    session.run(data.draw(st.integers(1, 8), label="steps"),
                steps=[session.reports] * 4 + [session.market])


@FOCUSED
@given(data=st.data())
def test_risk_when_marks_move_between_signals_then_exposure_checks_equal_reference(engine, held_table, data):
    """Holdings, account exposure limits that bind, marks that move between signals."""
    session = Session(data, engine, data.draw(held_table, label="table"), odd=0)
    session.run(data.draw(st.integers(2, 12), label="steps"),
                steps=[session.batch, session.batch, session.market, session.market, session.reports,
                       session.drain])
