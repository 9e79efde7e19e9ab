"""engine/quality.py and engine/attribution.py: the measures against hand-computed values, from fills and orders
written as the kernels write them."""
import datetime as dt
import zoneinfo
from pathlib import Path

import msgspec
import numpy as np
import pytest

from engine.attribution import PnlAttribution
from engine.config.schema import Pnl, Quality
from engine.quality import ExecutionQuality
from engine.state import Deploy, EngineState
from kernels.dtypes import EXEC_FILL, EXEC_PARTIAL_FILL, FILL_T, ORDER_SLOT_BITS, ORDER_T, SIDE_BUY, SIDE_SELL

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
MS = 1_000_000
S = 1000 * MS
T0 = 1_800_000_000 * S
ESZ5 = 0


@pytest.fixture
def state():
    return EngineState.load(DEMO)


def order(state, slot, *, s=0, side=SIDE_BUY, qty=10, px_ticks=24_000, arrival_ticks=23_996, ts=T0, signal_ts=T0 - MS):
    """An order record (as the orders ring holds it) and its row in the open-order table."""
    order_id = (1 + slot) << ORDER_SLOT_BITS | slot
    o = np.zeros(1, ORDER_T)
    o["order_id"], o["strategy"], o["instrument"], o["side"], o["qty"] = order_id, s, ESZ5, side, qty
    o["px_ticks"], o["ts_ns"], o["signal_ts_ns"], o["deploy"] = px_ticks, ts, signal_ts, 1
    row = state.open_orders[slot]
    row["order_id"], row["live"], row["arrival_mark_ticks"], row["leaves"] = order_id, 1, arrival_ticks, qty
    return o


def fill(o, qty, price, *, leaves, fee=1.0, ts=T0 + 2 * MS, arrival_ticks=23_996, deploy=1, realized=0.0):
    f = np.zeros(1, FILL_T)
    for key in ("order_id", "strategy", "instrument", "side", "deploy"):
        f[key] = o[key]
    f["deploy"] = deploy
    f["exec_type"] = EXEC_FILL if leaves == 0 else EXEC_PARTIAL_FILL
    f["qty"], f["price"], f["leaves"], f["fee"], f["realized"] = qty, price, leaves, fee, realized
    f["ts_ns"], f["report_ts_ns"], f["order_ts_ns"] = ts, ts - MS // 2, o["ts_ns"]
    f["signal_ts_ns"], f["order_px_ticks"], f["arrival_mark_ticks"] = o["signal_ts_ns"], o["px_ticks"], arrival_ticks
    return f


def quality(state, markouts=(100, 1000)):
    return ExecutionQuality(state, msgspec.convert({"markouts_ms": list(markouts)}, Quality))


def test_quality_when_fills_arrive_then_slippage_markouts_and_latency_are_the_formulas(state):
    q = quality(state)
    tick, mult = float(state.instruments[ESZ5]["tick_size"]), float(state.instruments[ESZ5]["multiplier"])
    o = order(state, 0)
    q.on_batch([o], [], [], T0)
    q.maintain(T0)
    f1, f2 = fill(o, 4, 6000.0, leaves=6), fill(o, 6, 6000.5, leaves=0)
    q.on_batch([], [], [f1, f2], T0 + 2 * MS)
    state.open_orders[0]["live"] = 0  # the fill completed it: its slot is free
    q.maintain(T0 + 3 * MS)

    state.instruments[ESZ5]["mark_ticks"] = 24_010  # 6002.5 at 100 ms
    q.maintain(T0 + 2 * MS + 100 * MS)
    state.instruments[ESZ5]["mark_ticks"] = 23_990  # 5997.5 at 1 s
    q.maintain(T0 + 2 * MS + S)
    row = q.row(0, ESZ5)

    arrival = 23_996 * tick
    cost = (4 * (6000.0 - arrival) + 6 * (6000.5 - arrival)) * mult
    assert row["arrival_slippage_bps"] == pytest.approx(cost / (10 * arrival * mult) * 1e4)
    limit = 24_000 * tick
    assert row["limit_slippage_bps"] == pytest.approx((6 * 0.5) * mult / (10 * limit * mult) * 1e4)
    notional = (4 * 6000.0 + 6 * 6000.5) * mult
    assert row["markouts_bps"]["100ms"] == pytest.approx(
        (4 * (6002.5 - 6000.0) + 6 * (6002.5 - 6000.5)) * mult / notional * 1e4)
    assert row["markouts_bps"]["1s"] == pytest.approx(
        (4 * (5997.5 - 6000.0) + 6 * (5997.5 - 6000.5)) * mult / notional * 1e4)
    assert row["markout_fills"] == {"100ms": 2, "1s": 2} and q.markouts_waiting == 0
    assert (row["orders"], row["fills"], row["filled_units"], row["orders_done"]) == (1, 2, 10, 1)
    assert (row["fill_ratio"], row["cancel_ratio"]) == (1.0, 0.0)
    assert row["shortfall"] == pytest.approx(cost + 2.0)  # fully filled: the cost plus the fees
    latency = q.latency_us(0)
    assert latency["signal_to_fill_us"]["count"] == 2 and 2900 < latency["signal_to_fill_us"]["p50"] < 3200
    assert 1400 < latency["order_to_fill_us"]["p50"] < 1600


def test_quality_when_an_order_ends_partly_filled_then_fill_ratio_cancel_ratio_and_shortfall_count_the_rest(state):
    q = quality(state, markouts=())
    tick, mult = float(state.instruments[ESZ5]["tick_size"]), float(state.instruments[ESZ5]["multiplier"])
    sell = order(state, 3, side=SIDE_SELL, qty=10)
    untouched = order(state, 4, qty=5)
    q.on_batch([sell, untouched], [], [fill(sell, 4, 5999.0, leaves=6, fee=0.5)], T0)
    q.maintain(T0)
    assert q.open_orders_tracked == 2, "both still live"
    state.open_orders[3]["live"] = 0  # canceled with 6 left; the other one stays working
    state.instruments[ESZ5]["mark_ticks"] = 23_980  # 5995.0 when it ended
    q.maintain(T0 + S)
    row = q.row(0, ESZ5)

    arrival = 23_996 * tick
    filled_cost = -1 * (5999.0 - arrival) * 4 * mult  # a sell above the arrival mark: negative cost, a gain
    opportunity = -1 * (5995.0 - arrival) * 6 * mult   # the market fell: the unfilled sell missed that
    assert (row["orders"], row["orders_done"], row["orders_canceled"]) == (2, 1, 1)
    assert row["fill_ratio"] == pytest.approx(0.4) and row["cancel_ratio"] == 1.0
    assert row["shortfall"] == pytest.approx(filled_cost + opportunity + 0.5)
    assert row["shortfall_bps"] == pytest.approx((filled_cost + opportunity + 0.5) / (10 * arrival * mult) * 1e4)
    assert q.open_orders_tracked == 1


def test_quality_when_a_slot_is_reused_before_the_listener_runs_then_the_current_mark_is_the_arrival(state):
    q = quality(state, markouts=())
    o = order(state, 1, arrival_ticks=23_000)
    state.open_orders[1]["order_id"] += 1  # another order took the slot within the batch

    q.on_batch([o], [], [], T0)

    (_, arrival), = q._staged_orders
    assert arrival.tolist() == [int(state.instruments[ESZ5]["mark_ticks"])]


def pnl(state, now=T0, **values):
    return PnlAttribution(state, msgspec.convert(values, Pnl), now)


def test_attribution_when_a_deploy_runs_that_has_not_traded_yet_then_its_row_holds_the_unrealized(state):
    a = pnl(state)
    state.strategies[0]["deploy"] = 2  # deployed (or registered by a reload) since the last look: no row yet
    state.deploys[0].append(Deploy(number=2, version="9.9.9", config_hash="x", source="",
                                   spec=state.deploys[0][0].spec))
    state.positions[0, ESZ5]["unrealized"] = 55.0

    table = a.report()["total"][state.strategy_names[0]]["ESZ5"]

    assert table["2"]["unrealized"] == 55.0 and table["2"]["realized"] == 0.0


def test_attribution_when_two_deploys_traded_then_realized_and_fees_are_each_ones_and_unrealized_the_running(state):
    state.positions[0, ESZ5]["realized"], state.positions[0, ESZ5]["fees"] = 100.0, 2.0  # held at start
    a = pnl(state)
    o = order(state, 0)
    a.on_batch([], [], [fill(o, 4, 6000.0, leaves=6, fee=1.5, realized=30.0)], T0)
    state.strategies[0]["deploy"] = 2
    state.deploys[0].append(Deploy(number=2, version="9.9.9", config_hash="x", source="",
                                   spec=state.deploys[0][0].spec))
    a.on_batch([], [], [fill(o, 6, 6001.0, leaves=0, fee=2.5, realized=-10.0, deploy=2)], T0)
    a.maintain(T0 + S)
    state.positions[0, ESZ5]["unrealized"] = 55.0

    table = a.report()["total"][state.strategy_names[0]]["ESZ5"]
    version = state.deploys[0][0].version
    assert table["1"] == {"version": version, "fills": 1, "realized": 130.0, "unrealized": 0.0, "fees": 3.5,
                          "net": 126.5}
    assert table["2"] == {"version": "9.9.9", "fills": 1, "realized": -10.0, "unrealized": 55.0, "fees": 2.5,
                          "net": 42.5}


def test_attribution_when_the_day_start_passes_in_its_time_zone_then_the_day_closes_and_a_new_one_counts_from_zero(
        state):
    zone = zoneinfo.ZoneInfo("America/New_York")
    start = dt.datetime(2026, 3, 6, 12, 0, tzinfo=zone)  # the Friday before daylight saving starts
    now = int(start.timestamp()) * S
    a = pnl(state, now, day_start="17:00", time_zone="America/New_York", days_kept=2)
    assert a.day == "2026-03-05" and a.next_roll_ns == int(dt.datetime(2026, 3, 6, 17, 0, tzinfo=zone).timestamp()) * S

    o = order(state, 0)
    a.on_batch([], [], [fill(o, 4, 6000.0, leaves=6, fee=1.0, realized=20.0)], now)
    a.maintain(now + S)
    a.maintain(a.next_roll_ns)  # 17:00 New York: the day closes
    assert a.day == "2026-03-06" and [d["day"] for d in a.days] == ["2026-03-05"]
    closed = a.days[0]["strategies"][state.strategy_names[0]]["ESZ5"]["1"]
    assert (closed["realized"], closed["fees"]) == (20.0, 1.0)
    today = a.report()["today"]
    assert today == {}, "nothing since the roll"
    # two rolls later, across the change to daylight time: 17:00 local is 21:00 UTC then
    a.maintain(a.next_roll_ns)
    a.maintain(a.next_roll_ns)
    assert a.day == "2026-03-08" and len(a.days) == 2
    assert dt.datetime.fromtimestamp(a.next_roll_ns / S, dt.timezone.utc).hour == 21


def test_markout_queue_when_taken_heartbeat_by_heartbeat_then_the_same_markouts_as_one_flat_filter():
    """The queue (chunks per horizon, only the front read) takes at each heartbeat exactly what filtering every
    pending markout would, clock steps back included."""
    from engine.quality import MarkoutQueue
    rng = np.random.default_rng(7)
    horizons = (1_000, 10_000)
    queue, flat = MarkoutQueue(len(horizons)), []
    clock, seen_due = 0, []
    for beat in range(300):
        clock += int(rng.integers(50, 400)) - (2_000 if beat % 97 == 50 else 0)  # now and then the clock goes back
        n = int(rng.integers(0, 6))
        ts = clock + np.sort(rng.integers(0, 50, n))
        s, i = rng.integers(0, 3, n), rng.integers(0, 4, n)
        signed, price = rng.normal(size=n), rng.uniform(90, 110, n)
        for h, horizon in enumerate(horizons):
            queue.add(h, {"due": ts + horizon, "s": s, "i": i, "signed": signed, "price": price})
            flat += [(int(d), h, int(a), int(b), float(x), float(p))
                     for d, a, b, x, p in zip(ts + horizon, s, i, signed, price)]
        now = clock
        due = sorted(m for m in flat if m[0] <= now)
        flat = [m for m in flat if m[0] > now]
        got = queue.take(now)
        rows = [] if got is None else sorted(zip(got["due"].tolist(), got["h"].tolist(), got["s"].tolist(),
                                                 got["i"].tolist(), got["signed"].tolist(), got["price"].tolist()))
        assert rows == due
        assert queue.pending == len(flat)
        seen_due += rows
    assert seen_due and queue.take(1 << 62) is not None and queue.pending == 0
