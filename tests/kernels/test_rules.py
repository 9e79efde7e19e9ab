"""One worked example per reject reason, per breaker, per P&L rule and per lifecycle move, on both engines.

The default state (tests/kernels/conftest.py): one strategy, one instrument (tick 0.01, lot 100, multiplier 1,
reference and mark 100.00, collar 5 %), one account; limits loose. An ORDER signal of value 100 at 100.00 is a
plain buy of 100 that every rule accepts, so each test changes one thing and sees one reason.
Tests marked "regression" pin a kernel bug found by the property tests, with the input that found it.
"""
import math

import pytest

from kernels import lifecycle
from kernels.arena import RING_FILLS, RING_ORDERS, RING_REJECTS, RING_SIGNALS, S_FREE_TOP
from kernels.dtypes import (
    ACTIVE, BREAKER_ACTION_REDUCE, C_BREAKER_TRIPS, C_ORDERS, C_ORDERS_ACKED, C_ORDERS_CANCELED, C_RECONCILE_FILLS,
    C_RECONCILE_MISMATCH, C_REJECTS, C_REPORT_INVALID, C_REPORT_MISMATCH, C_REPORT_OVERFILL, C_REPORT_UNKNOWN_ORDER,
    C_SIGNAL_NO_CHANGE, C_SIGNAL_UNKNOWN_ID, C_SIGNAL_UNKNOWN_INSTRUMENT, C_SIGNAL_UNKNOWN_SOURCE, EV_ACTIVATE,
    EV_COOLDOWN, EV_DEACTIVATE, EV_HALT, EV_PAUSE, EV_REDUCE, EV_RESET, EV_RETIRE, EV_TRIP_HALT, EV_TRIP_REDUCE,
    EV_VALIDATE, EXEC_ACK, EXEC_CANCELED, EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_REJECT, EXEC_STATUS, FILL_RECONCILED,
    HALTED, NO_PRICE, NO_TRIP, ORDER_MARKET, PAUSED, READY, REDUCING, REGISTERED, RETIRED, SIDE_BUY, SIDE_SELL,
    SIGNAL_ORDER, SIGNAL_TARGET, STATUS_DONE, STATUS_UNKNOWN, STATUS_WORKING, TRIP_CONSECUTIVE_REJECTS, TRIP_DRAWDOWN,
    TRIP_LOSS, TRIP_REJECT_RATIO, reason_names,
)
from kernels.lifecycle import TRANSITIONS, IllegalTransition, next_state
from kernels.rings import HEAD, TAIL

NOW = 1_700_000_000_000_000_000
SECOND = 10**9
CLAMP = 1 << 62


class Desk:
    """A test's view of one engine state: send signals, read what came out, feed reports and marks."""

    def __init__(self, engine, k):
        self.engine, self.k = engine, k
        self.seq = 0
        self.now = NOW

    def signal(self, value=100.0, price=100.0, kind=SIGNAL_ORDER, seq=None, **fields):
        if seq is None:
            seq = self.seq + 1
        self.seq = max(self.seq, seq)
        fields = dict(seq=seq, ts_ns=self.now, ttl_ns=0, source=0, signal_id=0, instrument=0) | fields
        assert self.k.push_signal(kind=kind, value=value, price=price, **fields)

    def batch(self, max_orders=None):
        return self.engine.process_signals(self.k, self.now, max_orders)

    def send(self, value=100.0, price=100.0, **fields):
        """One signal, one batch: the reject reasons (names), [] when an order was placed."""
        self.signal(value, price, **fields)
        rejects_before = int(self.k.cursors[RING_REJECTS, HEAD])
        placed = self.batch()
        if placed:
            return []
        assert int(self.k.cursors[RING_REJECTS, HEAD]) == rejects_before + 1, "neither an order nor a reject"
        return reason_names(self.last_reject()["reasons"])

    def last_reject(self):
        return self.k.rejects[(int(self.k.cursors[RING_REJECTS, HEAD]) - 1) % len(self.k.rejects)]

    def last_order(self):
        return self.k.orders[(int(self.k.cursors[RING_ORDERS, HEAD]) - 1) % len(self.k.orders)]

    def report(self, exec_type, qty=0, price=0.0, fee=0.0, order=None, **fields):
        o = self.last_order() if order is None else order
        fields = dict(order_id=int(o["order_id"]), strategy=int(o["strategy"]), deploy=int(o["deploy"])) | fields
        assert self.k.push_report(exec_type=exec_type, qty=qty, price=price, fee=fee, ts_ns=self.now, **fields)
        return self.engine.apply_reports(self.k, self.now)

    def trade(self, qty, price, fee=0.0):
        """Send an order of signed qty at price and fill it completely there."""
        assert self.send(float(qty), price) == []
        assert self.report(EXEC_FILL, abs(qty), price, fee) == 1

    def mark(self, price_ticks, instrument=0):
        """Market data moves the instrument's mark at the desk's time."""
        return self.engine.apply_mark(self.k, instrument, price_ticks, self.now)


@pytest.fixture
def desk(engine, make_state):
    def open_desk(**state):
        return Desk(engine, make_state(**state))
    return open_desk


# ============================================================================================ reject reasons
def test_risk_when_every_limit_is_loose_then_order_is_placed(desk):
    d = desk()
    assert d.send(100.0, 100.0) == []
    o = d.last_order()
    assert (o["side"], o["qty"], o["px_ticks"], o["price"]) == (SIDE_BUY, 100, 10_000, 100.0)
    assert d.k.positions[0, 0]["open_buy"] == 100 and d.k.counters[C_ORDERS] == 1


def test_risk_when_strategy_paused_then_not_active(desk):
    d = desk(strategies={"state": PAUSED})
    assert d.send() == ["not_active"]


def test_risk_when_reducing_and_order_adds_to_position_then_not_active(desk):
    d = desk(strategies={"state": REDUCING}, holdings={(0, 0): (300, 10_000.0)})
    assert d.send(100.0) == ["not_active"]


def test_risk_when_reducing_and_order_only_reduces_then_placed(desk):
    d = desk(strategies={"state": REDUCING}, holdings={(0, 0): (300, 10_000.0)})
    assert d.send(-300.0) == []


def test_risk_when_reducing_and_sell_would_flip_through_zero_then_not_active(desk):
    d = desk(strategies={"state": REDUCING}, holdings={(0, 0): (300, 10_000.0)})
    assert d.send(-400.0) == ["not_active"]


def test_risk_when_account_kill_switch_on_then_kill_switch(desk):
    assert desk(accounts={"kill": 1}).send() == ["kill_switch"]


def test_risk_when_instrument_not_tradable_then_not_tradable(desk):
    assert desk(instruments={"tradable": 0}).send() == ["not_tradable"]


def test_risk_when_instrument_restricted_for_strategy_then_restricted(desk):
    assert desk(positions={"allowed": 0}).send() == ["restricted"]


def test_risk_when_order_quantity_zero_then_qty_invalid(desk):
    assert desk().send(0.0) == ["qty_invalid"]


def test_risk_when_order_quantity_not_whole_lots_then_qty_lot(desk):
    assert desk().send(150.0) == ["qty_lot"]


def test_signal_when_order_quantity_fractional_then_qty_lot(desk):
    assert desk(instruments={"lot_size": 1}).send(10.5) == ["qty_lot"]


def test_signal_when_price_not_finite_then_not_finite(desk):
    assert desk().send(100.0, math.nan) == ["not_finite"]


def test_signal_when_order_quantity_is_nan_then_not_finite_only(desk):
    """Regression: compiled added qty_lot (math.floor(NaN) is an int64 in numba), plain Python raised
    ValueError. A quantity that is not a number is not a fraction of a lot."""
    assert desk().send(math.nan) == ["not_finite"]


def test_signal_when_target_outside_minus_one_to_one_then_signal_range(desk):
    assert desk().send(1.5, kind=SIGNAL_TARGET) == ["signal_range"]


def test_signal_when_kind_unknown_then_signal_range(desk):
    assert desk().send(kind=7) == ["signal_range"]


def test_risk_when_price_negative_then_price_invalid(desk):
    d = desk(instruments={"band_pct": 1e6})   # a collar wide enough to leave price_invalid alone
    assert d.send(100.0, -1.0) == ["price_invalid"]
    assert d.last_reject()["px_ticks"] == -100


def test_risk_when_order_quantity_above_max_then_qty_max(desk):
    assert desk(strategies={"max_order_qty": 100}).send(200.0) == ["qty_max"]


def test_risk_when_order_notional_above_max_then_notional_max(desk):
    assert desk(strategies={"max_order_notional": 9_999.0}).send(100.0, 100.0) == ["notional_max"]


def test_risk_when_price_outside_collar_then_price_collar(desk):
    assert desk().send(100.0, 105.01) == ["price_collar"]
    assert desk().send(100.0, 105.00) == []


def test_risk_when_instrument_has_no_reference_price_then_no_reference(desk):
    assert desk(instruments={"mark_ticks": 0, "ref_px_ticks": 0}).send() == ["no_reference"]


def test_risk_when_position_plus_working_orders_would_exceed_max_then_position_max(desk):
    d = desk(strategies={"max_position": 300})
    assert d.send(200.0) == []
    assert d.send(200.0) == ["position_max"]   # 200 working + 200 > 300


def test_risk_when_account_gross_would_exceed_max_then_gross_max(desk):
    assert desk(accounts={"max_gross_notional": 9_999.0}).send() == ["gross_max"]


def test_risk_when_account_net_would_exceed_max_then_net_max(desk):
    assert desk(accounts={"max_net_notional": 9_999.0}).send() == ["net_max"]


def test_risk_when_token_bucket_empty_then_rate(desk):
    assert desk(strategies={"tokens": 0.5, "rate_per_s": 0.0}).send() == ["rate"]


def test_risk_when_tokens_refill_with_time_then_placed_again(desk):
    d = desk(strategies={"tokens": 0.0, "rate_per_s": 2.0, "burst": 1.0})
    assert d.send() == ["rate"]
    d.now += SECOND // 2
    assert d.send() == []


def test_risk_when_strategy_has_max_open_orders_working_then_open_orders_max(desk):
    d = desk(strategies={"max_open_orders": 1})
    assert d.send() == []
    assert d.send() == ["open_orders_max"]


def test_signal_when_same_sequence_twice_then_duplicate(desk):
    d = desk()
    assert d.send(seq=5) == []
    assert d.send(seq=5) == ["duplicate"]


def test_signal_when_sequence_older_than_last_seen_then_out_of_order(desk):
    d = desk()
    assert d.send(seq=5) == []
    assert d.send(seq=4) == ["out_of_order"]


def test_signal_when_older_than_its_ttl_then_stale(desk):
    assert desk().send(ts_ns=NOW - 2 * SECOND, ttl_ns=SECOND) == ["stale"]
    assert desk().send(ts_ns=NOW - SECOND, ttl_ns=SECOND) == []


def test_signal_when_timestamp_far_in_the_past_then_stale(desk):
    """Regression: `now_ns - ts_ns` wrapped around in int64 and the signal passed as fresh (plain Python:
    overflow warning). The kernel now compares `ts_ns < now_ns - ttl_ns`, which cannot overflow."""
    assert desk().send(ts_ns=-2**63 + 1, ttl_ns=SECOND) == ["stale"]


def test_risk_when_strategy_daily_loss_reached_then_loss_strategy(desk):
    assert desk(strategies={"realized": -10_000.0}).send() == ["loss_strategy"]


def test_risk_when_strategy_daily_loss_reached_and_order_reduces_then_placed(desk):
    d = desk(strategies={"realized": -10_000.0}, holdings={(0, 0): (300, 10_000.0)})
    assert d.send(-100.0) == []


def test_risk_when_account_daily_loss_reached_then_loss_account(desk):
    assert desk(accounts={"realized": -50_000.0, "fees": 50_000.0}).send() == ["loss_account"]


def test_risk_when_buy_would_cross_own_working_sell_then_self_match(desk):
    d = desk()
    assert d.send(-100.0, 100.00) == []
    assert d.send(100.0, 100.00) == ["self_match"]
    assert d.send(100.0, 99.99) == []


def test_risk_when_market_order_and_own_working_sell_then_self_match(desk):
    d = desk(strategies={"order_type": ORDER_MARKET})
    assert d.send(-100.0, 101.00) == []
    assert d.send(100.0, 95.00) == ["self_match"]


def test_risk_when_engine_order_table_full_then_order_table_full(desk):
    d = desk(order_table=1)
    assert d.send() == []
    assert d.send(price=99.0) == ["order_table_full"]


def test_risk_when_many_rules_fail_then_every_reason_is_reported(desk):
    d = desk(strategies={"state": PAUSED, "max_order_qty": 100}, accounts={"kill": 1},
             instruments={"tradable": 0})
    assert d.send(250.0, 110.0) == ["not_active", "kill_switch", "not_tradable", "qty_lot", "qty_max",
                                    "price_collar"]


def test_risk_when_rejected_then_reject_record_names_signal_and_counts(desk):
    d = desk(accounts={"kill": 1})
    d.send(-200.0, 99.995, seq=42, source=1)
    r = d.last_reject()
    assert (r["signal_seq"], r["signal_source"], r["strategy"], r["side"], r["qty"], r["px_ticks"]) == \
        (42, 1, 0, SIDE_SELL, 200, 10_000)   # a sell rounds up: never cheaper than the signal asked
    assert d.k.counters[C_REJECTS] == 1 and d.k.reason_counts[0].tolist()[1] == 1


# ============================================================================================ sizing
def test_sizing_when_target_signal_then_order_is_target_minus_holding_in_whole_lots(desk):
    d = desk(strategies={"max_position": 1_000}, holdings={(0, 0): (200, 10_000.0)})
    assert d.send(0.55, kind=SIGNAL_TARGET) == []   # 550 -> 500 whole lots, minus 200 held
    assert (d.last_order()["side"], d.last_order()["qty"]) == (SIDE_BUY, 300)


def test_sizing_when_target_equals_holding_then_no_order_and_no_reject(desk):
    d = desk(strategies={"max_position": 1_000}, holdings={(0, 0): (500, 10_000.0)})
    d.signal(0.5, kind=SIGNAL_TARGET)
    assert d.batch() == 0
    assert d.k.counters[C_SIGNAL_NO_CHANGE] == 1 and d.k.counters[C_REJECTS] == 0


def test_sizing_when_buy_price_off_tick_then_rounded_down(desk):
    d = desk()
    assert d.send(100.0, 100.005) == []
    assert d.last_order()["px_ticks"] == 10_000


def test_sizing_when_price_whole_ticks_with_float_noise_then_exact_ticks(desk):
    d = desk()
    assert d.send(100.0, 101.27) == []   # 101.27 / 0.01 = 10126.999999999998
    assert d.last_order()["px_ticks"] == 10_127


def test_sizing_when_price_beyond_int64_ticks_then_clamped_positive(desk):
    """Regression: compiled, round/floor of 1e22 ticks overflowed int64 and the buy became -2**62 ticks
    (price_invalid instead of price_collar). Ticks are now clamped while still a float."""
    d = desk()
    assert d.send(100.0, 1e20) == ["notional_max", "price_collar"]
    assert d.last_reject()["px_ticks"] == CLAMP


def test_sizing_when_price_ticks_are_infinite_then_clamped_positive(desk):
    """Regression: 1e307 / 0.01 is inf ticks; compiled gave -2**62, plain Python raised OverflowError."""
    d = desk()
    assert d.send(100.0, 1e307) == ["notional_max", "price_collar"]
    assert d.last_reject()["px_ticks"] == CLAMP


# ============================================================================================ fan-out
def test_fan_out_when_two_strategies_subscribe_then_each_is_sized_and_checked(desk):
    d = desk(n_strategies=2, subscriptions=[[0, 1]], strategies={"max_order_qty": [5_000, 100]})
    d.signal(200.0)
    assert d.batch() == 1
    assert d.last_order()["strategy"] == 0
    assert d.last_reject()["strategy"] == 1 and reason_names(d.last_reject()["reasons"]) == ["qty_max"]


def test_fan_out_when_second_strategy_of_same_account_crosses_first_then_self_match(desk):
    d = desk(n_strategies=2, subscriptions=[[0], [1]])
    assert d.send(100.0, 100.0, signal_id=0) == []
    assert d.send(-100.0, 100.0, signal_id=1) == ["self_match"]


def test_pipeline_when_signal_source_id_or_instrument_unknown_then_counted_not_rejected(desk):
    d = desk()
    d.signal(source=9)
    d.signal(signal_id=9)
    d.signal(instrument=9)
    assert d.batch() == 0
    assert [d.k.counters[c] for c in (C_SIGNAL_UNKNOWN_SOURCE, C_SIGNAL_UNKNOWN_ID,
                                      C_SIGNAL_UNKNOWN_INSTRUMENT, C_REJECTS)] == [1, 1, 1, 0]


def test_pipeline_when_signal_could_exceed_max_orders_then_it_waits_in_the_ring(desk):
    d = desk(n_strategies=2, subscriptions=[[0, 1]])
    d.signal()
    assert d.batch(max_orders=1) == 0
    assert int(d.k.cursors[RING_SIGNALS, TAIL]) == 0   # not consumed
    assert d.batch(max_orders=2) == 2


def test_pipeline_when_order_ring_has_no_room_then_signals_wait_and_no_order_is_overwritten(desk):
    """Regression: process_batch wrote at head & mask whatever `max_orders` said, overwriting orders the OMS
    adapter had not taken. It now caps max_orders at the order ring's room."""
    d = desk(order_ring=2)
    for price in (100.0, 99.0, 98.0):
        d.signal(100.0, price)
    assert d.batch(max_orders=3) == 2
    assert [int(o["px_ticks"]) for o in d.k.orders] == [10_000, 9_900]
    assert int(d.k.cursors[RING_SIGNALS, TAIL]) == 2   # the third signal waits for room
    d.k.take_orders()
    assert d.batch(max_orders=3) == 1 and d.last_order()["px_ticks"] == 9_800


# ============================================================================================ exposure and marks
def test_risk_when_mark_fell_before_the_signal_then_gross_check_uses_the_new_mark(desk):
    """Regression: "does the order add gross" compared with the stored gross at the OLD mark. The account is
    over its gross limit; the mark halves; a buy that adds gross (300 -> 400 x 50 = 20k at the new mark) was
    accepted because 20k < the stale 30k. Market data now re-marks at once, before the next event."""
    d = desk(n_instruments=2, holdings={(0, 0): (300, 10_000.0), (0, 1): (1_000, 10_000.0)},
             accounts={"max_gross_notional": 100_000.0},   # gross 30k + 100k: over the limit
             strategies={"daily_loss_limit": 1e6})          # the 15k loss on the mark move is not the point
    d.mark(5_000)
    assert d.k.exposures[0, 0]["gross"] == pytest.approx(15_000.0)
    assert d.send(100.0, 50.0) == ["gross_max"]


def test_risk_when_mark_rose_before_the_signal_then_order_adding_no_gross_is_not_gross_max(desk):
    """Regression, other side: the mark doubles; a sell of 100 against the 300 held adds no gross (the worst
    case stays 300 x 200 = 60k at the new mark) but was rejected because 60k > the stale 30k: an account
    over its limit could not take risk off."""
    d = desk(n_instruments=2, holdings={(0, 0): (300, 10_000.0), (0, 1): (1_000, 10_000.0)},
             accounts={"max_gross_notional": 100_000.0})
    d.mark(20_000)
    assert d.send(-100.0, 200.0) == []


def test_mark_when_it_moves_then_unrealized_and_exposure_follow_at_once(desk):
    d = desk(holdings={(0, 0): (300, 10_000.0)})
    assert d.mark(10_100) == 1
    assert d.k.positions[0, 0]["unrealized"] == pytest.approx(300.0)
    assert d.k.strategies[0]["unrealized"] == pytest.approx(300.0)
    assert d.k.accounts[0]["unrealized"] == pytest.approx(300.0)
    assert d.k.accounts[0]["gross"] == pytest.approx(30_300.0) and d.k.exposures[0, 0]["gross"] == \
        pytest.approx(30_300.0)
    assert d.mark(10_100, instrument=1) == 0  # an unknown instrument: nothing moves
    assert d.k.accounts[0]["unrealized"] == pytest.approx(300.0)


def test_exposure_when_orders_work_then_gross_is_the_worse_side_and_net_counts_both(desk):
    d = desk(holdings={(0, 0): (100, 10_000.0)})
    assert d.send(200.0, 99.0) == []
    assert d.send(-500.0, 101.0) == []
    e = d.k.exposures[0, 0]
    assert (e["qty"], e["open_buy"], e["open_sell"]) == (100, 200, 500)
    assert e["gross"] == pytest.approx(400 * 100.0)   # max(|100 + 200|, |100 - 500|) x 100.00
    assert e["net"] == pytest.approx(-200 * 100.0)
    assert (e["best_buy_ticks"], e["best_sell_ticks"]) == (9_900, 10_100)


# ============================================================================================ P&L and positions
def test_pnl_when_buy_300_at_100_then_sell_500_at_101_then_realized_300_and_short_200_at_101(desk):
    d = desk()
    d.trade(300, 100.0, fee=1.5)
    d.trade(-500, 101.0, fee=2.5)
    p, st = d.k.positions[0, 0], d.k.strategies[0]
    assert (p["qty"], p["avg_px_ticks"]) == (-200, 10_100.0)   # flipped: the new short starts at the fill
    assert p["realized"] == pytest.approx(300.0)                # (101 - 100) x 300 closed
    assert p["fees"] == pytest.approx(4.0)
    assert p["unrealized"] == pytest.approx(200.0)              # short 200 from 101, mark 100
    assert st["realized"] + st["unrealized"] - st["fees"] == pytest.approx(496.0)
    assert (p["open_buy"], p["open_sell"], st["open_orders"], st["fills"], st["filled_qty"]) == (0, 0, 0, 2, 800)


def test_pnl_when_adding_to_a_position_then_average_price_is_quantity_weighted(desk):
    d = desk()
    d.trade(100, 100.0)
    d.trade(300, 102.0)
    assert d.k.positions[0, 0]["avg_px_ticks"] == pytest.approx(10_150.0)   # (100 x 100 + 300 x 102) / 400
    assert d.k.positions[0, 0]["realized"] == 0.0


def test_pnl_when_short_covered_lower_then_realized_gain(desk):
    d = desk()
    d.trade(-200, 101.0)
    d.trade(200, 100.0)
    p = d.k.positions[0, 0]
    assert (p["qty"], p["avg_px_ticks"], p["unrealized"]) == (0, 0.0, 0.0)
    assert p["realized"] == pytest.approx(200.0)


def test_pnl_when_future_with_multiplier_then_realized_in_currency(desk):
    d = desk(instruments={"tick_size": 0.25, "lot_size": 1, "multiplier": 50.0, "ref_px_ticks": 16_000,
                          "mark_ticks": 16_000})
    d.trade(2, 4000.00)
    d.trade(-2, 4001.25)
    assert d.k.positions[0, 0]["realized"] == pytest.approx(125.0)   # 5 ticks x 2 x 0.25 x 50


def test_fill_when_partial_then_leaves_stay_open_until_canceled(desk):
    d = desk()
    assert d.send(300.0) == []
    order = d.last_order().copy()
    assert d.report(EXEC_PARTIAL_FILL, 100, 100.0, order=order) == 1
    p = d.k.positions[0, 0]
    assert (p["qty"], p["open_buy"], d.k.strategies[0]["open_orders"]) == (100, 200, 1)
    assert d.report(EXEC_CANCELED, order=order) == 0
    assert (p["qty"], p["open_buy"], d.k.strategies[0]["open_orders"]) == (100, 0, 0)
    assert d.k.exposures[0, 0]["best_buy_ticks"] == NO_PRICE


def test_fill_when_final_fill_smaller_than_leaves_then_order_is_done(desk):
    d = desk()
    assert d.send(300.0) == []
    assert d.report(EXEC_FILL, 100, 100.0) == 1
    assert (d.k.positions[0, 0]["open_buy"], d.k.strategies[0]["open_orders"]) == (0, 0)


def test_fill_when_larger_than_leaves_then_clamped_and_counted(desk):
    d = desk()
    assert d.send(100.0) == []
    assert d.report(EXEC_FILL, 150, 100.0) == 1
    assert d.k.positions[0, 0]["qty"] == 100 and d.k.counters[C_REPORT_OVERFILL] == 1


def test_report_when_order_rejected_by_oms_then_open_quantity_released(desk):
    d = desk()
    assert d.send(100.0) == []
    assert d.report(EXEC_REJECT) == 0
    assert (d.k.positions[0, 0]["open_buy"], d.k.accounts[0]["gross"], d.k.scalars[S_FREE_TOP]) == (0, 0.0, 64)


def test_report_when_ack_then_only_the_order_is_marked_acknowledged(desk):
    d = desk()
    assert d.send(100.0) == []
    before = d.k.copy()
    slot = d.k.live_orders()[0]
    assert d.k.open_orders[slot]["acked"] == 0
    assert d.report(EXEC_ACK) == 0
    assert d.k.open_orders[slot]["acked"] == 1
    assert d.k.counters[C_ORDERS_ACKED] == before.counters[C_ORDERS_ACKED] + 1
    assert d.report(EXEC_ACK) == 0  # a second ack of the same order is not a second acknowledged order
    assert d.k.counters[C_ORDERS_ACKED] == before.counters[C_ORDERS_ACKED] + 1
    d.k.open_orders[slot]["acked"] = 0
    d.k.counters[C_ORDERS_ACKED] -= 1
    for name in ("strategies", "positions", "accounts", "exposures", "open_orders", "free_slots", "counters"):
        assert getattr(d.k, name).tobytes() == getattr(before, name).tobytes(), name


# ------------------------------------------------------------------------------------------ reconciliation
def status(d, filled=0, avg=0.0, leaves=0, fee=0.0, code=STATUS_WORKING):
    """The OMS's EXEC_STATUS answer for the desk's last order."""
    return d.report(EXEC_STATUS, filled, avg, fee, leaves=leaves, reason=code)


def test_reconcile_when_oms_agrees_then_nothing_changes_but_the_ack(desk):
    d = desk()
    assert d.send(300.0) == [] and d.report(EXEC_PARTIAL_FILL, 100, 100.0, leaves=200) == 1
    assert status(d, filled=100, avg=100.0, leaves=200) == 0
    assert d.k.counters[C_RECONCILE_MISMATCH] == 0 and d.k.positions[0, 0]["qty"] == 100
    assert d.k.strategies[0]["open_orders"] == 1 and d.k.open_orders[d.k.live_orders()[0]]["acked"] == 1


def test_reconcile_when_oms_filled_more_then_missed_fill_applied_flagged_with_its_fee_share(desk):
    d = desk()
    assert d.send(300.0) == [] and d.report(EXEC_PARTIAL_FILL, 100, 100.0, 1.0, leaves=200) == 1
    # the OMS filled 250 in all at an average of 100.10, fees 2.50: the engine missed 150 of it (and 1.50 of fees)
    assert status(d, filled=250, avg=100.10, leaves=50, fee=2.5) == 1
    p = d.k.positions[0, 0]
    assert p["qty"] == 250 and d.k.strategies[0]["fees"] == pytest.approx(1.0 + 1.5)
    fill = d.k.fills[(int(d.k.cursors[RING_FILLS, HEAD]) - 1) % len(d.k.fills)]
    assert (fill["qty"], fill["flags"], fill["price"]) == (150, FILL_RECONCILED, 100.10)
    assert d.k.counters[C_RECONCILE_MISMATCH] == 1 and d.k.counters[C_RECONCILE_FILLS] == 1
    assert d.k.strategies[0]["open_orders"] == 1  # still working at the OMS: 50 left


def test_reconcile_when_oms_no_longer_works_the_order_then_it_is_released_after_its_missed_fills(desk):
    d = desk()
    assert d.send(300.0) == []
    assert status(d, filled=100, avg=100.0, fee=0.3, code=STATUS_DONE) == 1  # filled 100, the rest canceled
    assert d.k.positions[0, 0]["qty"] == 100 and d.k.positions[0, 0]["open_buy"] == 0
    assert d.k.strategies[0]["open_orders"] == 0 and d.k.counters[C_ORDERS_CANCELED] == 1
    assert d.k.counters[C_RECONCILE_MISMATCH] == 1


def test_reconcile_when_oms_never_saw_the_order_then_released_nothing_filled(desk):
    d = desk()
    assert d.send(300.0) == []
    assert status(d, code=STATUS_UNKNOWN) == 0
    assert d.k.positions[0, 0]["qty"] == 0 and d.k.positions[0, 0]["open_buy"] == 0
    assert d.k.strategies[0]["open_orders"] == 0 and d.k.counters[C_RECONCILE_MISMATCH] == 1


@pytest.mark.parametrize("filled, avg, fee, code", [(-1, 0.0, 0.0, STATUS_WORKING), (100, math.nan, 0.0, STATUS_DONE),
                                                   (100, 100.0, math.inf, STATUS_DONE), (0, 0.0, 0.0, 7)])
def test_reconcile_when_status_is_malformed_then_counted_invalid_and_nothing_moves(desk, filled, avg, fee, code):
    d = desk()
    assert d.send(300.0) == []
    assert status(d, filled=filled, avg=avg, fee=fee, code=code) == 0
    assert d.k.counters[C_REPORT_INVALID] == 1 and d.k.strategies[0]["open_orders"] == 1
    assert d.k.positions[0, 0]["qty"] == 0


def test_report_when_order_id_unknown_then_counted_not_applied(desk):
    d = desk()
    assert d.send(100.0) == []
    assert d.report(EXEC_FILL, 100, 100.0, order_id=12_345) == 0
    assert d.k.counters[C_REPORT_UNKNOWN_ORDER] == 1 and d.k.positions[0, 0]["qty"] == 0


def test_report_when_strategy_deploy_differs_then_mismatch_not_applied(desk):
    d = desk()
    assert d.send(100.0) == []
    assert d.report(EXEC_FILL, 100, 100.0, deploy=7) == 0
    assert d.k.counters[C_REPORT_MISMATCH] == 1 and d.k.positions[0, 0]["qty"] == 0


@pytest.mark.parametrize("qty, price, fee", [(0, 100.0, 0.0), (100, math.nan, 0.0), (100, -1.0, 0.0),
                                             (100, 100.0, math.nan), (100, 100.0, math.inf)])
def test_report_when_fill_has_invalid_value_then_counted_not_applied(desk, qty, price, fee):
    d = desk()
    assert d.send(100.0) == []
    assert d.report(EXEC_FILL, qty, price, fee) == 0
    assert d.k.counters[C_REPORT_INVALID] == 1 and d.k.positions[0, 0]["qty"] == 0


def test_report_when_fill_pays_a_rebate_then_applied_with_a_negative_fee(desk):
    d = desk()
    assert d.send(100.0) == []
    assert d.report(EXEC_FILL, 100, 100.0, -0.5) == 1
    assert d.k.positions[0, 0]["qty"] == 100 and d.k.strategies[0]["fees"] == -0.5


def test_report_when_fill_price_is_absurd_then_invalid_and_pnl_stays_a_number(desk):
    """Regression: a fill at 1e308 (inf ticks) was booked; avg price inf, then P&L inf - inf = NaN, and a
    NaN P&L silently disables the daily loss limits and the P&L breakers (`NaN <= -limit` is False)."""
    d = desk()
    assert d.send(100.0) == []
    assert d.report(EXEC_FILL, 100, 1e308) == 0
    assert d.k.counters[C_REPORT_INVALID] == 1 and d.k.positions[0, 0]["avg_px_ticks"] == 0.0


# ============================================================================================ breakers
def test_breaker_when_consecutive_rejects_reach_threshold_then_halted(desk):
    d = desk(strategies={"max_consecutive_rejects": 2, "max_order_qty": 100})
    assert d.send(200.0) == ["qty_max"]
    assert d.k.strategies[0]["state"] == ACTIVE
    assert d.send(200.0) == ["qty_max"]
    st = d.k.strategies[0]
    assert (st["state"], st["trip_cause"], st["tripped_at_ns"]) == (HALTED, TRIP_CONSECUTIVE_REJECTS, NOW)
    assert d.k.trip_counts[0, TRIP_CONSECUTIVE_REJECTS] == 1 and d.k.counters[C_BREAKER_TRIPS] == 1
    assert d.send(100.0) == ["not_active"]


def test_breaker_when_an_order_is_accepted_then_consecutive_rejects_restart(desk):
    d = desk(strategies={"max_consecutive_rejects": 2, "max_order_qty": 100})
    assert d.send(200.0) == ["qty_max"]
    assert d.send(100.0) == []
    assert d.send(200.0, 99.0) == ["qty_max"]
    assert d.k.strategies[0]["state"] == ACTIVE


def test_breaker_when_reject_ratio_in_window_reaches_threshold_then_halted(desk):
    d = desk(strategies={"max_reject_ratio": 0.5, "ratio_min_orders": 4, "max_order_qty": 100})
    assert d.send(100.0, 100.0) == []
    assert d.send(200.0) == ["qty_max"]
    assert d.send(100.0, 99.0) == []
    assert d.k.strategies[0]["state"] == ACTIVE          # 1 of 3: under the minimum count
    assert d.send(200.0) == ["qty_max"]                  # 2 of 4 >= 0.5
    assert (d.k.strategies[0]["state"], d.k.strategies[0]["trip_cause"]) == (HALTED, TRIP_REJECT_RATIO)


def test_breaker_when_window_passes_then_reject_ratio_counts_afresh(desk):
    d = desk(strategies={"max_reject_ratio": 0.5, "ratio_min_orders": 2, "max_order_qty": 100,
                         "ratio_window_ns": SECOND})
    assert d.send(100.0) == []
    d.now += SECOND
    assert d.send(200.0) == ["qty_max"]   # a new window: 1 of 1, under the minimum count
    assert d.k.strategies[0]["state"] == ACTIVE and d.k.strategies[0]["window_orders"] == 1


def test_breaker_when_signal_is_rejected_as_duplicate_then_no_breaker_input(desk):
    d = desk(strategies={"max_consecutive_rejects": 1})
    assert d.send(seq=3) == []
    assert d.send(seq=3) == ["duplicate"]
    assert d.k.strategies[0]["state"] == ACTIVE and d.k.strategies[0]["consecutive_rejects"] == 0


def test_breaker_when_drawdown_from_peak_reaches_threshold_then_halted(desk):
    d = desk(strategies={"max_drawdown": 100.0})
    d.trade(100, 100.0)
    d.mark(11_000)                                      # +1000: the peak
    assert d.k.strategies[0]["peak_pnl"] == pytest.approx(1_000.0)
    d.mark(10_901)                                      # +901: 99 off the peak
    assert d.k.strategies[0]["state"] == ACTIVE
    d.mark(10_900)                                      # +900: 100 off the peak (exact in floats)
    assert (d.k.strategies[0]["state"], d.k.strategies[0]["trip_cause"]) == (HALTED, TRIP_DRAWDOWN)


def test_breaker_when_loss_limit_reached_then_trips_with_configured_action_reduce(desk):
    d = desk(strategies={"loss_limit": 500.0, "breaker_action": BREAKER_ACTION_REDUCE})
    d.trade(100, 100.0, fee=10.0)
    d.mark(9_600)                                       # -400 - 10 fees: not yet
    assert d.k.strategies[0]["state"] == ACTIVE
    d.mark(9_500)                                       # -500 - 10 fees = -510
    st = d.k.strategies[0]
    assert (st["state"], st["trip_cause"]) == (REDUCING, TRIP_LOSS)
    assert d.send(100.0, 95.0) == ["not_active"]
    assert d.send(-100.0, 95.0) == []                   # reducing is still allowed


def test_breaker_when_cool_down_passed_then_active_again_with_breakers_reset(desk):
    d = desk(strategies={"max_consecutive_rejects": 1, "max_order_qty": 100, "cooldown_ns": SECOND})
    assert d.send(200.0) == ["qty_max"]
    assert d.k.strategies[0]["state"] == HALTED
    d.now += SECOND - 1
    assert d.send(100.0) == ["not_active"]              # not yet
    d.now += 1
    assert d.send(100.0) == []                          # cool-down at batch start, then the order
    st = d.k.strategies[0]
    assert (st["state"], st["trip_cause"], st["consecutive_rejects"], st["window_start_ns"]) == \
        (ACTIVE, NO_TRIP, 0, d.now)


def test_breaker_when_cool_down_is_zero_then_only_reset_brings_back(desk):
    d = desk(strategies={"max_consecutive_rejects": 1, "max_order_qty": 100})
    assert d.send(200.0) == ["qty_max"]
    d.now += 1_000 * SECOND
    assert d.send(100.0) == ["not_active"]


def test_breaker_when_strategy_paused_then_rejects_do_not_trip(desk):
    d = desk(strategies={"state": PAUSED, "max_consecutive_rejects": 1})
    assert d.send() == ["not_active"]
    assert d.k.strategies[0]["state"] == PAUSED and d.k.counters[C_BREAKER_TRIPS] == 0


# ============================================================================================ lifecycle
LEGAL_MOVES = [  # (from states, event, to): the lifecycle of DESIGN.md, written out as a spec
    ((REGISTERED,), EV_VALIDATE, READY),
    ((READY, PAUSED, REDUCING), EV_ACTIVATE, ACTIVE),
    ((ACTIVE, REDUCING), EV_PAUSE, PAUSED),
    ((ACTIVE, PAUSED), EV_REDUCE, REDUCING),
    ((READY, ACTIVE, PAUSED, REDUCING), EV_HALT, HALTED),
    ((HALTED,), EV_RESET, READY),
    ((ACTIVE, PAUSED, REDUCING), EV_DEACTIVATE, READY),
    ((REGISTERED, READY, PAUSED, HALTED), EV_RETIRE, RETIRED),
    ((ACTIVE, REDUCING), EV_TRIP_HALT, HALTED),
    ((ACTIVE,), EV_TRIP_REDUCE, REDUCING),
    ((HALTED, REDUCING), EV_COOLDOWN, ACTIVE),
]
LEGAL = {(state, event): target for states, event, target in LEGAL_MOVES for state in states}
N_STATES, N_EVENTS = 7, 11


@pytest.mark.parametrize("state, event", sorted(LEGAL))
def test_lifecycle_when_event_is_legal_then_kernel_moves_strategy(engine, make_state, state, event):
    k = make_state(strategies={"state": state})
    assert lifecycle.apply_event(k.transitions, k.strategies, 0, event)
    assert k.strategies[0]["state"] == LEGAL[state, event] == next_state(state, event)


def test_lifecycle_when_event_is_not_in_the_design_then_kernel_leaves_state_and_control_plane_refuses(
        engine, make_state):
    assert TRANSITIONS.shape == (N_STATES, N_EVENTS)
    k = make_state()
    for state in range(N_STATES):
        for event in range(N_EVENTS):
            if (state, event) in LEGAL:
                continue
            k.strategies[0]["state"] = state
            assert not lifecycle.apply_event(k.transitions, k.strategies, 0, event), (state, event)
            assert k.strategies[0]["state"] == state
            with pytest.raises(IllegalTransition, match="cannot"):
                next_state(state, event)
