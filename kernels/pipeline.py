"""One event at a time, in arrival order: a signal -> sized, risk-checked orders; market data -> marks, P&L and
exposure; an execution report -> positions, P&L, working orders. The batch (kernels/batch.py) walks its frames
and calls these; so every event sees exactly the market and the fills that arrived before it, whatever way the
stream was cut into batches.

Each event is applied at a time in stream time (`now`: its chunk's arrival, or a venue report's due time);
`set_clock` moves that clock (never back) and lets tripped strategies cool down when their time has come.
Hot path: no allocation, no objects, no exceptions on data; a problem is a counter or a reason bit.
"""
import math

import numpy as np
from numba import types

from kernels import venue
from kernels._jit import helper, inline, kernel
from kernels.arena import (
    ARENA, LAYOUT, RING_FILLS, RING_ORDERS, RING_REJECTS, RING_REPORTS, RING_SIGNALS, S_CLOCK_NS, S_FREE_TOP,
    S_NEXT_COOLDOWN_NS, S_ORDER_GEN, S_STRATEGIES, views,
)
from kernels.breakers import check_fills, check_pnl, cool_down, record_outcome
from kernels.dtypes import (
    C_FILLS, C_FILL_OFF_BAND, C_FILL_RING_FULL, C_ORDERS, C_ORDERS_ACKED, C_ORDERS_CANCELED, C_ORDERS_FILLED,
    C_ORDERS_REJECTED, C_RECONCILE_FILLS, C_RECONCILE_MISMATCH, C_REJECTS, C_REJECT_RING_FULL, C_REPORT_INVALID,
    C_REPORT_MISMATCH, C_REPORT_OVERFILL, C_REPORT_UNKNOWN_ORDER, C_SHADOW_ORDERS, C_SHADOW_REJECTS, C_SIGNAL_NO_CHANGE,
    C_SIGNAL_UNKNOWN_ID, C_SIGNAL_UNKNOWN_INSTRUMENT, C_SIGNAL_UNKNOWN_SOURCE, EXEC_ACK, EXEC_CANCELED, EXEC_FILL,
    EXEC_PARTIAL_FILL, EXEC_REJECT, EXEC_STATUS, FILL_OFF_BAND, FILL_OVERFILL, FILL_RECONCILED, N_REASONS,
    ORDER_SLOT_BITS, R_DUPLICATE, R_NOT_ACTIVE, R_NOT_FINITE, R_OUT_OF_ORDER, R_QTY_LOT, R_SIGNAL_RANGE, R_STALE,
    SIDE_BUY, SIGNAL_ORDER, SIGNAL_TARGET, STATUS_UNKNOWN, STATUS_WORKING,
)
from kernels.positions import apply_fill, finite_positive, link_order, refresh_exposure, release_order, remark, slot_of
from kernels.rings import NO_ROOM, claim, head, publish, release, room, tail
from kernels.risk import order_reasons, refill_tokens
from kernels.sizing import QTY_CLAMP, limit_ticks, order_delta, side_of

MAX_PRICE_TICKS = float(QTY_CLAMP)


# ------------------------------------------------------------------------------------------ the clock
@inline
def set_clock(state, t):
    """Stream time moves to t (never back); return it. Tripped strategies whose cool-down is due come back."""
    scalars = state.scalars
    if t > scalars[S_CLOCK_NS]:
        scalars[S_CLOCK_NS] = t
    now = scalars[S_CLOCK_NS]
    if now >= scalars[S_NEXT_COOLDOWN_NS]:
        scalars[S_NEXT_COOLDOWN_NS] = cool_down(state, now)
    return now


# ------------------------------------------------------------------------------------------ market data
@inline
def on_mark(state, i, now):
    """Instrument i's mark moved (market data): exposure of every account and P&L of every strategy holding it
    follow at once, the P&L breakers judge it, and the simulated venue matches what now crosses."""
    state.instruments[i]["marked_ns"] = now  # how fresh the mark is (max_mark_age_ms)
    positions = state.positions
    for a in range(len(state.accounts)):
        refresh_exposure(state, a, i)
    for s in range(state.scalars[S_STRATEGIES]):
        if positions[s, i]["qty"] != 0 or positions[s, i]["unrealized"] != 0.0:
            remark(state, s, i)
            check_pnl(state, s, now)
    if state.venue[0]["on"]:
        venue.match_resting(state, i, now)


@kernel(types.int64(ARENA, LAYOUT, types.int64, types.int64, types.int64))
def apply_mark(arena, layout, instrument, mark_ticks, now_ns):
    """Set instrument's mark (as market data would) and apply it at now_ns; return 1 (0 for an unknown one)."""
    state = views(arena, layout)
    if not 0 <= instrument < len(state.instruments):
        return 0
    now = set_clock(state, now_ns)
    state.instruments[instrument]["mark_ticks"] = mark_ticks
    on_mark(state, instrument, now)
    return 1


# ------------------------------------------------------------------------------------------ signals
@helper
def signal_reasons(sig, last_seq, now_ns):
    """Reasons that condemn the signal itself, whatever strategy it reaches."""
    r = 0
    if sig["seq"] == last_seq:
        r |= R_DUPLICATE
    elif sig["seq"] < last_seq:
        r |= R_OUT_OF_ORDER
    if sig["ttl_ns"] > 0 and sig["ts_ns"] < now_ns - sig["ttl_ns"]:  # now - ts could wrap around int64
        r |= R_STALE
    if not (math.isfinite(sig["value"]) and math.isfinite(sig["price"])):
        r |= R_NOT_FINITE
    kind = sig["kind"]
    if kind == SIGNAL_TARGET:
        if abs(sig["value"]) > 1.0:
            r |= R_SIGNAL_RANGE
    elif kind == SIGNAL_ORDER:
        if math.isfinite(sig["value"]) and sig["value"] != math.floor(sig["value"]):
            r |= R_QTY_LOT  # a fraction of a unit is no multiple of any lot
    else:
        r |= R_SIGNAL_RANGE
    return r


@helper
def count_reasons(reason_counts, s, reasons):
    for bit in range(N_REASONS):
        if reasons >> bit & 1:
            reason_counts[s, bit] += 1


@inline
def push_reject(state, sig, s, instrument, side, qty, px_ticks, reasons, now_ns):
    slot = claim(state.cursors, RING_REJECTS, len(state.rejects))
    if slot == NO_ROOM:
        state.counters[C_REJECT_RING_FULL] += 1
        return
    rec = state.rejects[slot]
    rec["signal_seq"] = sig["seq"]
    rec["signal_source"] = sig["source"]
    rec["strategy"] = s
    rec["instrument"] = instrument
    rec["side"] = side
    rec["qty"] = qty
    rec["px_ticks"] = px_ticks
    rec["reasons"] = reasons
    rec["ts_ns"] = now_ns
    publish(state.cursors, RING_REJECTS)


@inline
def place_order(state, sig, s, side, qty, px_ticks, now_ns):
    """Book an accepted order: working-order table, open quantities, exposure, rate tokens, order ring; hand it
    to the simulated venue when it runs here. The caller made sure the order ring has room. Return the slot."""
    st = state.strategies[s]
    i = sig["instrument"]
    a = st["account"]
    scalars = state.scalars
    scalars[S_FREE_TOP] -= 1
    slot = state.free_slots[scalars[S_FREE_TOP]]
    order_id = (scalars[S_ORDER_GEN] << ORDER_SLOT_BITS) | slot
    scalars[S_ORDER_GEN] += 1
    o = state.open_orders[slot]
    o["order_id"] = order_id
    o["strategy"] = s
    o["deploy"] = st["deploy"]
    o["account"] = a
    o["instrument"] = i
    o["side"] = side
    o["live"] = 1
    o["order_type"] = st["order_type"]
    o["acked"] = 0
    o["qty"] = qty
    o["leaves"] = qty
    o["px_ticks"] = px_ticks
    o["ts_ns"] = now_ns
    o["signal_ts_ns"] = sig["ts_ns"]
    o["arrival_mark_ticks"] = state.instruments[i]["mark_ticks"]
    e = state.exposures[a, i]
    link_order(state.open_orders, e, slot)
    if side == SIDE_BUY:
        state.positions[s, i]["open_buy"] += qty
        e["open_buy"] += qty
    else:
        state.positions[s, i]["open_sell"] += qty
        e["open_sell"] += qty
    refresh_exposure(state, a, i)
    st["open_orders"] += 1
    count_order(st, side, qty, px_ticks, now_ns)

    out = state.orders[claim(state.cursors, RING_ORDERS, len(state.orders))]
    out["order_id"] = order_id
    out["strategy"] = s
    out["deploy"] = st["deploy"]
    out["account"] = a
    out["instrument"] = i
    out["side"] = side
    out["order_type"] = st["order_type"]
    out["qty"] = qty
    out["px_ticks"] = px_ticks
    out["price"] = px_ticks * state.instruments[i]["tick_size"]
    out["ts_ns"] = now_ns
    out["signal_seq"] = sig["seq"]
    out["signal_source"] = sig["source"]
    out["signal_ts_ns"] = sig["ts_ns"]
    publish(state.cursors, RING_ORDERS)
    if state.venue[0]["on"]:
        venue.accept(state, slot, now_ns)
    return slot


@helper
def count_order(st, side, qty, px_ticks, now_ns):
    """An accepted order on the strategy's row: its count, tokens, units by side, and what the duplicate-order
    rule compares the next one with."""
    st["tokens"] -= 1.0
    st["orders"] += 1
    if side == SIDE_BUY:
        st["ordered_buy"] += qty
    else:
        st["ordered_sell"] += qty
    st["last_side"] = side
    st["last_qty"] = qty
    st["last_px_ticks"] = px_ticks
    st["last_order_ns"] = now_ns


@helper
def shadow_order(st, side, qty, px_ticks, now_ns):
    """An order a shadow version would have placed: counted on its own row, nothing booked."""
    count_order(st, side, qty, px_ticks, now_ns)


@inline
def fanout_of(state, sig):
    """How many strategies a signal reaches (0: it reaches none, it is counted and dropped)."""
    sid = sig["signal_id"]
    if sig["source"] >= len(state.source_seq) or sid >= len(state.sub_ptr) - 1 \
            or sig["instrument"] >= len(state.instruments):
        return 0
    return state.sub_ptr[sid + 1] - state.sub_ptr[sid]


@inline
def on_signal(state, sig, now):
    """One signal at time now: fan out to its subscribers; size, check and book or reject each one's order.
    Return the orders placed. The caller made sure the order ring has room for every subscriber."""
    sid = sig["signal_id"]
    i = sig["instrument"]
    counters, source_seq, sub_ptr = state.counters, state.source_seq, state.sub_ptr
    if sig["source"] >= len(source_seq):
        counters[C_SIGNAL_UNKNOWN_SOURCE] += 1
        return 0
    if sid >= len(sub_ptr) - 1 or sub_ptr[sid] == sub_ptr[sid + 1]:
        counters[C_SIGNAL_UNKNOWN_ID] += 1
        return 0
    if i >= len(state.instruments):
        counters[C_SIGNAL_UNKNOWN_INSTRUMENT] += 1
        return 0
    last = source_seq[sig["source"]]
    bad = signal_reasons(sig, last, now)
    if sig["seq"] > last:
        source_seq[sig["source"]] = sig["seq"]
    ins = state.instruments[i]
    placed = 0
    for k in range(sub_ptr[sid], sub_ptr[sid + 1]):
        s = state.sub_strategy[k]
        st = state.strategies[s]
        st["signals"] += 1
        live = np.int64(st["shadow_of"]) - 1  # a shadow sizes and checks against the live version's position
        p = state.positions[s if live < 0 else live, i]
        delta = order_delta(sig["kind"], sig["value"], st["max_position"], ins["lot_size"],
                            p["qty"] + p["open_buy"] - p["open_sell"])
        side = side_of(delta)
        qty = abs(delta)
        px = limit_ticks(sig["price"], ins["tick_size"], side)
        if bad == 0 and delta == 0 and sig["kind"] == SIGNAL_TARGET:
            counters[C_SIGNAL_NO_CHANGE] += 1
            continue
        reasons = bad
        if bad == 0:
            refill_tokens(st, now)
            reasons = order_reasons(st, state.accounts[st["account"]], ins, p, state.exposures[st["account"], i],
                                    side, qty, px, st["order_type"], state.scalars[S_FREE_TOP], now)
        if reasons == 0 and live >= 0:
            shadow_order(st, side, qty, px, now)
            counters[C_SHADOW_ORDERS] += 1
        elif reasons == 0:
            place_order(state, sig, s, side, qty, px, now)
            placed += 1
            counters[C_ORDERS] += 1
        else:
            st["rejects"] += 1
            count_reasons(state.reason_counts, s, reasons)
            if live >= 0:
                counters[C_SHADOW_REJECTS] += 1
            else:
                counters[C_REJECTS] += 1
                push_reject(state, sig, s, i, side, qty, px, reasons, now)
        if bad == 0 and not reasons & R_NOT_ACTIVE:  # breakers judge orders, not the lifecycle
            record_outcome(state, s, reasons != 0, now)
    return placed


@kernel(types.int64(ARENA, LAYOUT, types.int64, types.int64))
def process_signals(arena, layout, now_ns, max_orders):
    """The signals waiting in the signal ring, in order, each at now_ns -> orders and rejects; return the orders
    placed. Stops before a signal whose subscribers could exceed `max_orders` or the order ring's room (it and
    the rest wait in the ring: back-pressure, never an overwrite)."""
    state = views(arena, layout)
    signals = state.signals
    max_orders = min(max_orders, room(state.cursors, RING_ORDERS, len(state.orders)))
    placed = 0
    seq = tail(state.cursors, RING_SIGNALS)
    end = head(state.cursors, RING_SIGNALS)
    while seq < end:
        sig = signals[seq & (len(signals) - 1)]
        if fanout_of(state, sig) > max_orders - placed:
            break
        placed += on_signal(state, sig, set_clock(state, now_ns))
        seq += 1
    release(state.cursors, RING_SIGNALS, seq)
    return placed


# ------------------------------------------------------------------------------------------ execution reports
@inline
def apply_report(state, rep, now):
    """One execution report at time now; return 1 if it applied a fill. A report for an order the engine does not
    know (or of another strategy or deploy) is counted, never applied."""
    open_orders, counters = state.open_orders, state.counters
    slot = slot_of(rep["order_id"])
    if slot >= len(open_orders) or open_orders[slot]["order_id"] != rep["order_id"] or not open_orders[slot]["live"]:
        counters[C_REPORT_UNKNOWN_ORDER] += 1
        return 0
    o = open_orders[slot]
    if o["strategy"] != rep["strategy"] or o["deploy"] != rep["deploy"]:
        counters[C_REPORT_MISMATCH] += 1
        return 0
    kind = rep["exec_type"]
    if kind == EXEC_ACK:
        if not o["acked"]:
            counters[C_ORDERS_ACKED] += 1
        o["acked"] = 1
        return 0
    if kind == EXEC_REJECT or kind == EXEC_CANCELED:
        counters[C_ORDERS_REJECTED if kind == EXEC_REJECT else C_ORDERS_CANCELED] += 1
        release_order(state, slot)
        return 0
    if kind == EXEC_STATUS:
        return apply_status(state, slot, rep, now)
    if (kind != EXEC_FILL and kind != EXEC_PARTIAL_FILL) or rep["qty"] <= 0 \
            or not finite_positive(rep["price"]) or not math.isfinite(rep["fee"]):  # a negative fee is a rebate
        counters[C_REPORT_INVALID] += 1
        return 0
    return apply_fill_of(state, slot, rep, rep["qty"], rep["fee"], 0, kind == EXEC_FILL, now)


@inline
def apply_fill_of(state, slot, rep, qty, fee, flags, final, now):
    """A fill of `qty` (at the report's price, with `fee`) on the working order in `slot`, flagged as it is odd;
    `final`: the OMS says the order is done. Return 1 when applied."""
    o, counters = state.open_orders[slot], state.counters
    ins = state.instruments[o["instrument"]]
    px = float(rep["price"]) / float(ins["tick_size"])
    if px > MAX_PRICE_TICKS:  # a fat-fingered report must not turn P&L into inf, then NaN
        counters[C_REPORT_INVALID] += 1
        return 0
    if qty > o["leaves"]:
        counters[C_REPORT_OVERFILL] += 1
        flags |= FILL_OVERFILL
        qty = o["leaves"]
    mark = ins["mark_ticks"]
    if mark > 0 and abs(px - mark) * 100.0 > ins["band_pct"] * mark:  # the venue's fact, applied, but flagged
        counters[C_FILL_OFF_BAND] += 1
        flags |= FILL_OFF_BAND
    s = o["strategy"]
    realized = apply_fill_report(state, slot, qty, px, fee)
    record_fill(state, o, rep, qty, fee, realized, flags, now)
    if o["leaves"] == 0 or final:
        counters[C_ORDERS_FILLED] += 1
        release_order(state, slot)
    check_fills(state, s, flags & FILL_OFF_BAND != 0, now)
    check_pnl(state, s, now)
    return 1


@inline
def apply_status(state, slot, rep, now):
    """The OMS's view of a working order, its answer to a StatusRequest (reconciliation, docs/wire.md): qty
    filled in all at an average price, fees in all, and whether it still works the order (reason). Fills the
    engine missed are applied as one fill, flagged FILL_RECONCILED, with their share of the fees; an order the
    OMS no longer works (done, or never seen) is released; every difference from the books is counted. Return 1
    when it applied a fill."""
    o, counters = state.open_orders[slot], state.counters
    filled, code = rep["qty"], rep["reason"]
    if filled < 0 or code > STATUS_UNKNOWN or rep["leaves"] < 0 or not math.isfinite(rep["fee"]) \
            or (filled > 0 and not finite_positive(rep["price"])):
        counters[C_REPORT_INVALID] += 1
        return 0
    missed = filled - (o["qty"] - o["leaves"])
    if missed != 0 or code != STATUS_WORKING or rep["leaves"] != o["leaves"] - max(missed, 0):
        counters[C_RECONCILE_MISMATCH] += 1
    if code == STATUS_WORKING and not o["acked"]:
        counters[C_ORDERS_ACKED] += 1
        o["acked"] = 1
    applied = 0
    if missed > 0:
        counters[C_RECONCILE_FILLS] += 1
        applied = apply_fill_of(state, slot, rep, missed, rep["fee"] * missed / filled, FILL_RECONCILED, False, now)
    if code != STATUS_WORKING and o["live"]:
        counters[C_ORDERS_CANCELED] += 1  # the OMS holds it no more: what did not fill never will
        release_order(state, slot)
    return applied


@inline
def apply_fill_report(state, slot, qty, px_ticks, fee):
    """A fill of `qty` at `px_ticks` (a float: fills come at any price) on the working order in `slot`:
    position, average price, realized P&L and fees of strategy and account, open quantities, exposure. Return
    the realized P&L in currency."""
    o = state.open_orders[slot]
    s, i, a = o["strategy"], o["instrument"], o["account"]
    ins = state.instruments[i]
    p = state.positions[s, i]
    realized = apply_fill(p, o["side"], qty, px_ticks) * ins["tick_size"] * ins["multiplier"]
    p["realized"] += realized
    p["fees"] += fee
    st = state.strategies[s]
    st["realized"] += realized
    st["fees"] += fee
    st["fills"] += 1
    st["filled_qty"] += qty
    account = state.accounts[a]
    account["realized"] += realized
    account["fees"] += fee
    e = state.exposures[a, i]
    e["qty"] += o["side"] * qty
    if o["side"] == SIDE_BUY:
        p["open_buy"] -= qty
        e["open_buy"] -= qty
    else:
        p["open_sell"] -= qty
        e["open_sell"] -= qty
    o["leaves"] -= qty
    refresh_exposure(state, a, i)
    remark(state, s, i)
    state.counters[C_FILLS] += 1
    return realized


@inline
def record_fill(state, o, rep, qty, fee, realized, flags, now):
    """The fill as a record of the fills ring (metrics, mirror); counted, not written, when the ring is full."""
    slot = claim(state.cursors, RING_FILLS, len(state.fills))
    if slot == NO_ROOM:
        state.counters[C_FILL_RING_FULL] += 1
        return
    f = state.fills[slot]
    f["order_id"] = o["order_id"]
    f["strategy"] = o["strategy"]
    f["deploy"] = o["deploy"]
    f["account"] = o["account"]
    f["instrument"] = o["instrument"]
    f["side"] = o["side"]
    f["exec_type"] = rep["exec_type"]
    f["flags"] = flags
    f["qty"] = qty
    f["leaves"] = o["leaves"]
    f["price"] = rep["price"]
    f["fee"] = fee
    f["realized"] = realized
    f["report_ts_ns"] = rep["ts_ns"]
    f["ts_ns"] = now
    f["order_ts_ns"] = o["ts_ns"]
    f["signal_ts_ns"] = o["signal_ts_ns"]
    f["order_px_ticks"] = o["px_ticks"]
    f["arrival_mark_ticks"] = o["arrival_mark_ticks"]
    publish(state.cursors, RING_FILLS)


@kernel(types.int64(ARENA, LAYOUT, types.int64))
def apply_reports(arena, layout, now_ns):
    """The execution reports waiting in the report ring, in order, each at now_ns; return the fills applied."""
    state = views(arena, layout)
    reports = state.reports
    fills = 0
    end = head(state.cursors, RING_REPORTS)
    for seq in range(tail(state.cursors, RING_REPORTS), end):
        fills += apply_report(state, reports[seq & (len(reports) - 1)], set_clock(state, now_ns))
    release(state.cursors, RING_REPORTS, end)
    return fills


# ------------------------------------------------------------------------------------------ the venue's reports
@inline
def release_due(state, t):
    """Apply the simulated venue's reports due at or before t, in due order, each at its due time. Return False
    when one could not be applied for want of room in the fills ring (it and the rest stay due)."""
    v = state.venue[0]
    if not v["on"]:
        return True
    reports = state.reports
    while venue.next_due(state) <= t:
        if room(state.cursors, RING_FILLS, len(state.fills)) < 1:
            return False
        slot = claim(state.cursors, RING_REPORTS, len(reports))
        due = venue.pop_due(state, reports[slot])
        if due < 0:  # an expiry that found its order already done: nothing to report
            continue
        publish(state.cursors, RING_REPORTS)
        apply_report(state, reports[slot], set_clock(state, due))
        release(state.cursors, RING_REPORTS, head(state.cursors, RING_REPORTS))
    return True


@kernel(types.int64(ARENA, LAYOUT, types.int64))
def advance(arena, layout, now_ns):
    """Stream time reaches now_ns with no event (a tick): due venue reports are applied, cool-downs run; return 1,
    or 0 when a venue report had to wait for room in the fills ring."""
    state = views(arena, layout)
    done = release_due(state, now_ns)
    set_clock(state, now_ns)
    return np.int64(done)
