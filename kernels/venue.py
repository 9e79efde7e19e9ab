"""The simulated venue as a stage of the batch ([oms] kind = "sim"): an accepted order is matched against the
market at that point of the stream, and its execution reports are due in stream time, applied by the batch
before the next event (kernels/pipeline.py `release_due`). The same rules as sim/venue.py `SimulatedOms`, which
the TCP and Aeron servers run; a property test holds the two to the same reports, bit for bit.

Rules (what an order gets, in report order):
- Refused at once, one REJECT: qty <= 0 (quantity); a limit or IOC price that is NaN, infinite, zero or negative
  (price); the id of an order still working here (duplicate); a market order with nothing to price it (no
  market); and, one uniform draw per order, `reject_ratio` of the rest (random).
- Otherwise an ACK (leaves = qty) `ack_latency` after arrival.
- The touch: the ask for a buy, the bid for a sell, last when that side is unquoted (0). With no touch at all
  the order fills at its own price (the engine's collar already checked it).
- Market order, or a limit/IOC that is marketable (buy price >= touch, sell price <= touch): filled at the
  touch (taker). IOC not marketable: CANCELED. Limit not marketable: rests; market data that later crosses it
  (buy: 0 < touch <= price; sell: price <= touch) fills it at its own price (maker). With `resting_ttl` a
  resting order is CANCELED that long after arrival.
- Fills are due `fill_latency` after the order became fillable, never before its ACK. With `partial_fill_ratio`
  (a draw per fill of qty >= 2) a fill is split into 2 or 3 reports (a draw: 3 if < 0.5, at most qty) cut at
  distinct random units; the last is the FILL. Part k (from 0) is due k x `partial_fill_gap` after the first
  (0: all at once).
- Fee of each fill: qty x fee_per_unit + qty x price x multiplier x bps / 10^4 (taker or maker bps), rounded
  half away from zero to the cent; the last fill of an order tops its fees
  up to `min_fee` when one is set (0 leaves maker rebates alone).
- A cancel request: a resting order is CANCELED `ack_latency` after it (never before its ACK); an order whose
  fill is already due keeps it.
- Reports come out in due order, ties in the order they were made. Random draws: splitmix64 seeded with `seed`,
  a draw = the top 53 bits / 2**53 (sim/venue.py `Draws` is the same generator).
Hot path: no allocation, no objects, no exceptions on data.
"""
import math

import numpy as np
from numba import types

from kernels._jit import helper, kernel
from kernels.arena import ARENA, LAYOUT, RING_REPORTS, views
from kernels.dtypes import (
    EXEC_ACK, EXEC_CANCELED, EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_REJECT, NO_SLOT, ORDER_IOC, ORDER_LIMIT, ORDER_MARKET,
    SIDE_BUY, VENUE_REJECT_DUPLICATE, VENUE_REJECT_NO_MARKET, VENUE_REJECT_PRICE, VENUE_REJECT_QTY, VENUE_REJECT_RANDOM,
)
from kernels.rings import claim, publish

NEVER = 0x7FFF_FFFF_FFFF_FFFF
_GOLDEN = np.uint64(0x9E37_79B9_7F4A_7C15)
_MIX1 = np.uint64(0xBF58_476D_1CE4_E5B9)
_MIX2 = np.uint64(0x94D0_49BB_1331_11EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_HEAD, _TAIL = 0, 1


# ---------------------------------------------------------------------------------------------- draws
@helper
def draw(v):
    """The next uniform draw in [0, 1) of the venue's generator (splitmix64)."""
    z = np.uint64(v["rng"]) + _GOLDEN
    v["rng"] = z
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    z = z ^ (z >> _S31)
    return np.float64(z >> _S11) * (1.0 / 9007199254740992.0)


def splitmix64(seed):
    """The same generator in Python integers: (next state, draw). sim/venue.py and the tests' Python engine."""
    z = (seed + 0x9E37_79B9_7F4A_7C15) & _MASK64
    state = z
    z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & _MASK64
    return state, ((z ^ (z >> 31)) >> 11) / 9007199254740992.0


def _draw_python(v):
    v["rng"], u = splitmix64(int(v["rng"]))
    return u


_MASK64 = (1 << 64) - 1
draw.python = _draw_python  # run as Python, numpy's u64 arithmetic would warn at every wrap


@helper
def cents(x):
    """Rounded half away from zero to 0.01."""
    return math.copysign(math.floor(abs(x) * 100.0 + 0.5) / 100.0, x)


# ---------------------------------------------------------------------------------------------- the heap
@helper
def _before(events, a, b):
    return events[a]["due_ns"] < events[b]["due_ns"] or (
        events[a]["due_ns"] == events[b]["due_ns"] and events[a]["seq"] < events[b]["seq"])


# At most 5 events wait per working order (ACK, expiry, 3 fills of a resting order crossed before its ACK); the
# last two rows of the table are not heap: one holds the event just popped, one is swap space.
_POPPED, _SWAP = 1, 2


@helper
def _swap(events, a, b):
    spare = len(events) - _SWAP
    events[spare] = events[a]
    events[a] = events[b]
    events[b] = events[spare]


@helper
def _push(state, due, slot, expiry, exec_type, qty, price, leaves, fee, reason):
    v = state.venue[0]
    events = state.venue_events
    n = v["pending"]
    v["seq"] += np.uint64(1)
    e = events[n]
    e["due_ns"] = due
    e["seq"] = v["seq"]
    e["order_id"] = state.venue_orders[slot]["order_id"]
    e["slot"] = slot
    e["expiry"] = expiry
    e["exec_type"] = exec_type
    e["qty"] = qty
    e["price"] = price
    e["leaves"] = leaves
    e["fee"] = fee
    e["reason"] = reason
    v["pending"] = n + 1
    while n > 0:  # sift up
        parent = (n - 1) // 2
        if not _before(events, n, parent):
            break
        _swap(events, n, parent)
        n = parent


@helper
def _pop_top(state):
    """Move the earliest event to the last row of the table and restore the heap; return that row."""
    v = state.venue[0]
    events = state.venue_events
    spare = len(events) - _POPPED
    n = v["pending"] - 1
    events[spare] = events[0]
    v["pending"] = n
    if n > 0:
        events[0] = events[n]
        k = 0
        while True:  # sift down
            left, right, smallest = 2 * k + 1, 2 * k + 2, k
            if left < n and _before(events, left, smallest):
                smallest = left
            if right < n and _before(events, right, smallest):
                smallest = right
            if smallest == k:
                break
            _swap(events, k, smallest)
            k = smallest
    return spare


@helper
def next_due(state):
    """When the next report (or expiry) is due; NEVER if nothing is pending."""
    v = state.venue[0]
    return state.venue_events[0]["due_ns"] if v["pending"] > 0 else NEVER


# ---------------------------------------------------------------------------------------------- the book
@helper
def _touch(state, instrument, side):
    """The price an order of `side` trades at now, in currency: ask (buy) or bid (sell), else last, else 0."""
    if instrument >= len(state.instruments):
        return 0.0
    ins = state.instruments[instrument]
    ticks = ins["ask_ticks"] if side == SIDE_BUY else ins["bid_ticks"]
    return float((ticks if ticks > 0 else ins["last_ticks"]) * ins["tick_size"])


@helper
def _rest(state, slot):
    vo = state.venue_orders[slot]
    book = state.venue_books[vo["instrument"]]
    vo["resting"] = 1
    vo["prev"] = book[_TAIL]
    vo["next"] = NO_SLOT
    if book[_TAIL] != NO_SLOT:
        state.venue_orders[book[_TAIL]]["next"] = slot
    else:
        book[_HEAD] = slot
    book[_TAIL] = slot


@helper
def _unrest(state, slot):
    orders = state.venue_orders
    vo = orders[slot]
    book = state.venue_books[vo["instrument"]]
    if vo["prev"] != NO_SLOT:
        orders[vo["prev"]]["next"] = vo["next"]
    else:
        book[_HEAD] = vo["next"]
    if vo["next"] != NO_SLOT:
        orders[vo["next"]]["prev"] = vo["prev"]
    else:
        book[_TAIL] = vo["prev"]
    vo["resting"] = 0
    vo["prev"] = vo["next"] = NO_SLOT


# ---------------------------------------------------------------------------------------------- fills
@helper
def _fee(state, slot, qty, price, maker):
    v = state.venue[0]
    vo = state.venue_orders[slot]
    multiplier = state.instruments[vo["instrument"]]["multiplier"] if vo["instrument"] < len(state.instruments) \
        else 1.0
    bps = v["maker_fee_bps"] if maker else v["taker_fee_bps"]
    return cents(qty * v["fee_per_unit"] + qty * price * multiplier * bps * 1e-4)


@helper
def _fill(state, slot, price, fillable_ns, maker):
    """Schedule the fill reports of the whole order at `price`."""
    v = state.venue[0]
    vo = state.venue_orders[slot]
    qty = vo["qty"]
    due = max(fillable_ns + v["fill_latency_ns"], vo["ack_due_ns"])
    cut1 = cut2 = qty  # no cut: one report of the whole quantity
    parts = 1
    if qty >= 2 and v["partial_fill_ratio"] > 0.0 and draw(v) < v["partial_fill_ratio"]:
        parts = 3 if draw(v) < 0.5 else 2
        parts = min(parts, qty)
        cut1 = 1 + np.int64(draw(v) * (qty - 1))
        if parts == 3:
            c = 1 + np.int64(draw(v) * (qty - 2))
            cut2 = c if c < cut1 else c + 1
            if cut2 < cut1:
                cut1, cut2 = cut2, cut1
    leaves = qty
    start = 0
    for k in range(parts):
        stop = cut1 if k == 0 and parts > 1 else (cut2 if k == 1 and parts == 3 else qty)
        size = stop - start
        start = stop
        leaves -= size
        fee = _fee(state, slot, size, price, maker)
        if leaves == 0 and v["min_fee"] > 0.0 and vo["fees"] + fee < v["min_fee"]:
            fee = cents(v["min_fee"] - vo["fees"])
        vo["fees"] += fee
        _push(state, due + k * v["partial_fill_gap_ns"], slot, 0, EXEC_FILL if leaves == 0 else EXEC_PARTIAL_FILL,
              size, price, leaves, fee, 0)
        v["fees"] += fee
    v["partial_fills"] += parts - 1
    v["fills"] += 1
    v["filled_qty"] += qty


# ---------------------------------------------------------------------------------------------- inputs
@helper
def _refusal(state, slot, touch):
    vo = state.venue_orders[slot]
    if vo["qty"] <= 0:
        return VENUE_REJECT_QTY
    price_ok = 0.0 < vo["price"] < math.inf
    if vo["order_type"] == ORDER_MARKET:
        if touch <= 0.0 and not price_ok:
            return VENUE_REJECT_NO_MARKET
    elif not price_ok or (vo["order_type"] != ORDER_LIMIT and vo["order_type"] != ORDER_IOC):
        return VENUE_REJECT_PRICE
    return 0


@helper
def accept(state, slot, now):
    """The order booked in open_orders[slot] arrives at the venue at `now`: schedule its reports."""
    v = state.venue[0]
    o = state.open_orders[slot]
    vo = state.venue_orders[slot]
    duplicate = vo["working"] != 0 and vo["order_id"] == o["order_id"]
    v["orders"] += 1
    if not duplicate:
        vo["order_id"] = o["order_id"]
        vo["strategy"] = o["strategy"]
        vo["deploy"] = o["deploy"]
        vo["instrument"] = o["instrument"]
        vo["side"] = o["side"]
        vo["order_type"] = o["order_type"]
        vo["qty"] = o["qty"]
        vo["price"] = o["px_ticks"] * state.instruments[o["instrument"]]["tick_size"]
        vo["fees"] = 0.0
        vo["resting"] = 0
    ack_due = now + v["ack_latency_ns"]
    touch = _touch(state, vo["instrument"], vo["side"])
    reason = _refusal(state, slot, touch)
    if reason == 0 and duplicate:
        reason = VENUE_REJECT_DUPLICATE
    if draw(v) < v["reject_ratio"] and reason == 0:  # one draw per order, refused or not
        reason = VENUE_REJECT_RANDOM
    if reason:
        price = vo["price"] if math.isfinite(vo["price"]) else 0.0
        _push(state, ack_due, slot, 0, EXEC_REJECT, 0, price, 0, 0.0, reason)
        v["rejects"] += 1
        return
    vo["working"] = 1
    vo["ack_due_ns"] = ack_due
    _push(state, ack_due, slot, 0, EXEC_ACK, 0, vo["price"], vo["qty"], 0.0, 0)
    v["acks"] += 1
    price = vo["price"]
    if touch <= 0.0:
        _fill(state, slot, price, now, False)  # no market to match: trust the engine's price
    elif vo["order_type"] == ORDER_MARKET or (price >= touch if vo["side"] == SIDE_BUY else price <= touch):
        _fill(state, slot, touch, now, False)
    elif vo["order_type"] == ORDER_IOC:
        _push(state, max(now + v["fill_latency_ns"], ack_due), slot, 0, EXEC_CANCELED, 0, price, 0, 0.0, 0)
        v["canceled"] += 1
    else:
        _rest(state, slot)
        if v["resting_ttl_ns"] > 0:
            _push(state, now + v["resting_ttl_ns"], slot, 1, EXEC_CANCELED, 0, price, 0, 0.0, 0)


@helper
def match_resting(state, instrument, now):
    """Fill, at their own price, the resting orders of `instrument` that its current quote crosses."""
    if instrument >= len(state.venue_books):
        return 0
    buy_touch = _touch(state, instrument, SIDE_BUY)
    sell_touch = _touch(state, instrument, -SIDE_BUY)
    filled = 0
    slot = state.venue_books[instrument][_HEAD]
    while slot != NO_SLOT:
        vo = state.venue_orders[slot]
        nxt = vo["next"]
        crossed = 0.0 < buy_touch <= vo["price"] if vo["side"] == SIDE_BUY else vo["price"] <= sell_touch
        if crossed:
            _unrest(state, slot)
            _fill(state, slot, vo["price"], now, True)
            filled += 1
        slot = nxt
    return filled


@helper
def cancel(state, slot, now):
    """A cancel request for the order in `slot` arrives: a resting order is canceled (after its ACK), an order
    with a fill due keeps it. Return 1 when a CANCELED is scheduled."""
    v = state.venue[0]
    vo = state.venue_orders[slot]
    if not (vo["working"] and vo["resting"]):
        return 0
    _unrest(state, slot)
    _push(state, max(now + v["ack_latency_ns"], vo["ack_due_ns"]), slot, 0, EXEC_CANCELED, 0, vo["price"], 0, 0.0, 0)
    v["canceled"] += 1
    return 1


# ---------------------------------------------------------------------------------------------- outputs
@helper
def pop_due(state, report_out):
    """Pop the earliest pending event into report_out (a REPORT_T record); return its due time, or -1 for an
    expiry whose order no longer rests (nothing to report)."""
    v = state.venue[0]
    e = state.venue_events[_pop_top(state)]
    slot = e["slot"]
    vo = state.venue_orders[slot]
    if e["expiry"]:  # the order it was set for may be done, its slot even taken by another order since
        if not (vo["working"] and vo["resting"] and vo["order_id"] == e["order_id"]):
            return -1
        _unrest(state, slot)
        v["canceled"] += 1
    if e["exec_type"] == EXEC_FILL or e["exec_type"] == EXEC_CANCELED:  # a REJECT was never working
        vo["working"] = 0
    report_out["order_id"] = vo["order_id"]
    report_out["strategy"] = vo["strategy"]
    report_out["deploy"] = vo["deploy"]
    report_out["exec_type"] = e["exec_type"]
    report_out["qty"] = e["qty"]
    report_out["price"] = e["price"]
    report_out["leaves"] = e["leaves"]
    report_out["fee"] = e["fee"]
    report_out["ts_ns"] = e["due_ns"]
    report_out["reason"] = e["reason"]
    return e["due_ns"]


# ---------------------------------------------------------------------------------------------- public kernels
@kernel(types.int64(ARENA, LAYOUT, types.int64, types.int64))
def venue_order(arena, layout, slot, now_ns):
    """The order in open_orders[slot] arrives at the venue at now_ns (tests: the venue on its own)."""
    accept(views(arena, layout), slot, now_ns)
    return 0


@kernel(types.int64(ARENA, LAYOUT, types.int64, types.int64))
def venue_quote(arena, layout, instrument, now_ns):
    """The instrument's bid/ask/last moved at now_ns: fill what now crosses; return how many orders."""
    return match_resting(views(arena, layout), instrument, now_ns)


@kernel(types.int64(ARENA, LAYOUT, types.int64, types.int64))
def venue_cancel(arena, layout, slot, now_ns):
    """A cancel request for the order in `slot` arrives at now_ns; return 1 when a CANCELED is scheduled."""
    return cancel(views(arena, layout), slot, now_ns)


@kernel(types.int64(ARENA, LAYOUT, types.int64))
def venue_reports(arena, layout, now_ns):
    """Publish the reports due at or before now_ns into the report ring, in due order; return how many (tests).
    Stops when the ring is full."""
    state = views(arena, layout)
    n = 0
    while next_due(state) <= now_ns:
        slot = claim(state.cursors, RING_REPORTS, len(state.reports))
        if slot < 0:
            break
        if pop_due(state, state.reports[slot]) >= 0:
            publish(state.cursors, RING_REPORTS)
            n += 1
    return n
