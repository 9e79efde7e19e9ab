"""sim/venue.py: the simulated venue's rules, time, determinism and frames in."""
import random

import pytest

from kernels.dtypes import (
    EXEC_ACK, EXEC_CANCELED, EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_REJECT, EXEC_STATUS, MSG_CANCEL, MSG_ORDER, ORDER_IOC,
    ORDER_LIMIT, ORDER_MARKET, SIDE_BUY, SIDE_SELL, STATUS_DONE, STATUS_UNKNOWN, STATUS_WORKING, WIRE_VERSION,
)
from sim.venue import REJECT_DUPLICATE, REJECT_NO_MARKET, REJECT_PRICE, REJECT_QTY, REJECT_RANDOM, SimulatedOms
from tests.sim.sim_kit import INSTANT, T0, US, config, engine_order_frame, kinds, oms_with_market, order, quote, run
from wire.frames import FrameError, encode_frame, frame
from wire.schema import Cancel, Signal, StatusRequest


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
    oms = SimulatedOms(config(**INSTANT, partial_fill_ratio=1.0, fee_per_unit=0.25, seed=1))  # seed 1: 3-part splits
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


def test_sim_oms_when_a_partial_fill_gap_is_set_then_the_parts_come_that_far_apart():
    oms = SimulatedOms(config(ack_latency_us=10, fill_latency_us=100, partial_fill_ratio=1.0, partial_fill_gap_us=5000,
                              seed=1))
    oms.on_order(order(1, qty=12345), T0)

    first = oms.pop_due(T0 + 100 * US)
    assert kinds(first) == [EXEC_ACK, EXEC_PARTIAL_FILL]  # the first part when an unsplit fill would come
    assert oms.pop_due(T0 + 5099 * US) == []               # the next not before one gap after it
    rest = oms.pop_due(T0 + 100 * US + 10 * 5000 * US)
    fills = first[1:] + rest
    assert [r.ts_ns for r in fills] == [T0 + (100 + 5000 * k) * US for k in range(len(fills))]
    assert kinds(fills)[-1] == EXEC_FILL and sum(r.qty for r in fills) == 12345


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
def test_sim_oms_on_frames_when_mixed_frames_then_orders_and_market_taken_and_the_rest_counted():
    oms = SimulatedOms(config(**INSTANT))
    malformed = frame(MSG_ORDER, b"\xc1\xc1\xc1")
    signal_frame = encode_frame(Signal(0, 1, 1, 0, 0, 0.5, 100.0, T0, 0))
    buf = (encode_frame(quote(99.0, 101.0)) + engine_order_frame(order(1, SIDE_SELL, price=99.0))
           + malformed + signal_frame + encode_frame(order(2, price=101.0)))
    tail = encode_frame(order(3))[:20]
    assert oms.on_frames(buf + tail, T0) == len(buf)
    assert (oms.stats.orders, oms.stats.market_data, oms.stats.malformed, oms.stats.bad_type) == (2, 1, 1, 1)
    assert [(r.order_id, r.exec_type, r.price) for r in oms.pop_due(T0)] == [
        (1, EXEC_ACK, 99.0), (1, EXEC_FILL, 99.0), (2, EXEC_ACK, 101.0), (2, EXEC_FILL, 101.0)]


def test_sim_oms_on_frames_when_a_cancel_arrives_then_a_resting_order_is_canceled_and_a_done_one_is_not():
    oms = SimulatedOms(config(**INSTANT))
    buf = encode_frame(quote(99.0, 101.0)) + encode_frame(order(1, price=100.0)) + encode_frame(order(2, price=101.0))
    oms.on_frames(buf, T0)
    cancels = encode_frame(Cancel(order_id=1, strategy=1, deploy=2, ts_ns=T0)) + \
        encode_frame(Cancel(order_id=2, strategy=1, deploy=2, ts_ns=T0)) + frame(MSG_CANCEL, b"\xc1")
    oms.on_frames(cancels, T0)
    assert [(r.order_id, r.exec_type) for r in oms.pop_due(T0)] == [
        (1, EXEC_ACK), (2, EXEC_ACK), (2, EXEC_FILL), (1, EXEC_CANCELED)]
    assert (oms.stats.canceled, oms.stats.malformed, oms.resting()) == (1, 1, 0)


def test_sim_oms_on_frames_when_max_orders_then_stops_after_that_many():
    oms = SimulatedOms(config(**INSTANT))
    frames = [encode_frame(order(i)) for i in range(5)]
    used = oms.on_frames(b"".join(frames), T0, max_orders=2)
    assert used == len(frames[0]) + len(frames[1]) and oms.stats.orders == 2


def test_sim_oms_on_frames_when_header_untrusted_then_frame_error_after_the_good_frames():
    oms = SimulatedOms(config(**INSTANT))
    bad_version = frame(MSG_ORDER, b"abc", version=WIRE_VERSION + 1)
    with pytest.raises(FrameError):
        oms.on_frames(encode_frame(order(1)) + bad_version + encode_frame(order(2)), T0)
    assert oms.stats.orders == 1 and oms.stats.bad_header == 1


# ---------------------------------------------------------------------------------------------- reconciliation
def status_of(oms, order_id, now=T0, strategy=1, deploy=2):
    oms.on_frames(encode_frame(StatusRequest(order_id=order_id, strategy=strategy, deploy=deploy, ts_ns=now)), now)
    replies = [r for r in oms.pop_due(now) if r.exec_type == EXEC_STATUS]
    assert len(replies) == 1
    r = replies[0]
    return r.reason, r.qty, r.price, r.leaves, r.fee


def test_sim_oms_status_when_asked_then_answers_what_its_reports_said_when_the_answer_is_sent():
    oms = SimulatedOms(config(**INSTANT, fee_per_unit=0.01))
    oms.on_frames(encode_frame(quote(99.0, 101.0)) + encode_frame(order(1, price=100.0)) +
                  encode_frame(order(2, price=101.0)), T0)
    # asked before its reports went out: the answer, due after them, includes them
    assert status_of(oms, 2) == (STATUS_DONE, 10, 101.0, 0, 0.1)
    assert status_of(oms, 1) == (STATUS_WORKING, 0, 0.0, 10, 0.0)  # resting
    assert status_of(oms, 99, strategy=3, deploy=4) == (STATUS_UNKNOWN, 0, 0.0, 0, 0.0)
    assert oms.stats.status_replies == 3


def test_sim_oms_status_when_the_session_is_abandoned_then_its_orders_are_done_for_the_next_session():
    orders = {}
    first = SimulatedOms(config(**INSTANT), orders=orders)
    first.on_frames(encode_frame(quote(99.0, 101.0)) + encode_frame(order(1, price=100.0)), T0)
    first.pop_due(T0)
    first.abandon()  # the connection dropped: cancel on disconnect
    second = SimulatedOms(config(**INSTANT), market=first.market, orders=orders)
    assert status_of(second, 1) == (STATUS_DONE, 0, 0.0, 0, 0.0)
    assert first.resting() == 0 and first.pending() == 0
