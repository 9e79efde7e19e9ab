"""The fused batch: signals -> sized, risk-checked orders; execution reports -> positions and P&L.

One compiled call per batch (kernels/batch.py), not one per signal or check: dispatch costs hundreds of ns.
Each stage is a function of the `Regions` views (`state`) that run_batch inlines, and a public kernel of the same
name over `(arena, layout)` for the tests and the benches.
Hot path: no allocation, no objects, no exceptions on data; a problem is a counter or a reason bit.
"""
import math

from numba import types

from kernels._jit import helper, inline, kernel
from kernels.arena import (
    ARENA, LAYOUT, RING_ORDERS, RING_REJECTS, RING_REPORTS, RING_SIGNALS, S_FREE_TOP, S_ORDER_GEN, views,
)
from kernels.breakers import check_pnl, cool_down, record_outcome
from kernels.dtypes import (
    C_FILLS, C_ORDERS, C_REJECT_RING_FULL, C_REJECTS, C_REPORT_INVALID, C_REPORT_MISMATCH, C_REPORT_OVERFILL,
    C_REPORT_UNKNOWN_ORDER, C_SIGNAL_NO_CHANGE, C_SIGNAL_UNKNOWN_ID, C_SIGNAL_UNKNOWN_INSTRUMENT,
    C_SIGNAL_UNKNOWN_SOURCE, EXEC_ACK, EXEC_CANCELED, EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_REJECT, N_REASONS,
    ORDER_SLOT_BITS, R_DUPLICATE, R_NOT_ACTIVE, R_NOT_FINITE, R_OUT_OF_ORDER, R_QTY_LOT, R_SIGNAL_RANGE, R_STALE,
    SIDE_BUY, SIGNAL_ORDER, SIGNAL_TARGET,
)
from kernels.positions import apply_fill, finite_positive, link_order, refresh_exposure, release_order, remark, slot_of
from kernels.rings import NO_ROOM, claim, head, publish, release, room, tail
from kernels.risk import order_reasons, refill_tokens
from kernels.sizing import QTY_CLAMP, limit_ticks, order_delta, side_of

MAX_PRICE_TICKS = float(QTY_CLAMP)


# ------------------------------------------------------------------------------------------ market data
@helper
def mark_moved_instruments(state, now_ns):
    """Re-mark P&L and exposure on every instrument whose mark moved; return how many instruments."""
    instruments, positions = state.instruments, state.positions
    marked = 0
    for i in range(len(instruments)):
        if not instruments[i]["mark_dirty"]:
            continue
        instruments[i]["mark_dirty"] = 0
        marked += 1
        for a in range(len(state.accounts)):
            refresh_exposure(state, a, i)
        for s in range(len(state.strategies)):
            if positions[s, i]["qty"] != 0 or positions[s, i]["unrealized"] != 0.0:
                remark(state, s, i)
                check_pnl(state, s, now_ns)
    return marked


@kernel(types.int64(ARENA, LAYOUT, types.int64))
def mark_to_market(arena, layout, now_ns):
    """`mark_moved_instruments` on the arena; return how many instruments were re-marked."""
    return mark_moved_instruments(views(arena, layout), now_ns)


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


@helper
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


@helper
def place_order(state, sig, s, side, qty, px_ticks, now_ns):
    """Book an accepted order: working-order table, open quantities, exposure, rate tokens, order ring.
    The caller made sure the order ring has room (process_signals caps its orders at it)."""
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
    o["qty"] = qty
    o["leaves"] = qty
    o["px_ticks"] = px_ticks
    o["ts_ns"] = now_ns
    e = state.exposures[a, i]
    link_order(state.open_orders, e, slot)
    if side == SIDE_BUY:
        state.positions[s, i]["open_buy"] += qty
        e["open_buy"] += qty
    else:
        state.positions[s, i]["open_sell"] += qty
        e["open_sell"] += qty
    refresh_exposure(state, a, i)
    st["tokens"] -= 1.0
    st["open_orders"] += 1
    st["orders"] += 1

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


@inline
def process_signals(state, now_ns, max_orders):
    """Turn the signals waiting in the ring into orders (order ring) and rejects (reject ring); return the
    number of orders. Stops early, leaving signals in the ring, when the next signal could produce more
    orders than `max_orders` or the order ring's room still allow (back-pressure, never an overwrite).
    Moved marks are applied first, so every check sees exposure and P&L at the current marks."""
    cool_down(state, now_ns)
    mark_moved_instruments(state, now_ns)
    max_orders = min(max_orders, room(state.cursors, RING_ORDERS, len(state.orders)))
    signals, strategies, instruments, positions = state.signals, state.strategies, state.instruments, \
        state.positions
    sub_ptr, sub_strategy, source_seq, counters = state.sub_ptr, state.sub_strategy, state.source_seq, \
        state.counters
    placed = 0
    mask = len(signals) - 1
    seq = tail(state.cursors, RING_SIGNALS)
    end = head(state.cursors, RING_SIGNALS)
    while seq < end:
        sig = signals[seq & mask]
        sid = sig["signal_id"]
        i = sig["instrument"]
        if sig["source"] >= len(source_seq):
            counters[C_SIGNAL_UNKNOWN_SOURCE] += 1
        elif sid >= len(sub_ptr) - 1 or sub_ptr[sid] == sub_ptr[sid + 1]:
            counters[C_SIGNAL_UNKNOWN_ID] += 1
        elif i >= len(instruments):
            counters[C_SIGNAL_UNKNOWN_INSTRUMENT] += 1
        else:
            if sub_ptr[sid + 1] - sub_ptr[sid] > max_orders - placed:
                break
            last = source_seq[sig["source"]]
            bad = signal_reasons(sig, last, now_ns)
            if sig["seq"] > last:
                source_seq[sig["source"]] = sig["seq"]
            ins = instruments[i]
            for k in range(sub_ptr[sid], sub_ptr[sid + 1]):
                s = sub_strategy[k]
                st = strategies[s]
                st["signals"] += 1
                p = positions[s, i]
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
                    refill_tokens(st, now_ns)
                    reasons = order_reasons(st, state.accounts[st["account"]], ins, p,
                                            state.exposures[st["account"], i], side, qty, px, st["order_type"],
                                            state.scalars[S_FREE_TOP])
                if reasons == 0:
                    place_order(state, sig, s, side, qty, px, now_ns)
                    placed += 1
                    counters[C_ORDERS] += 1
                else:
                    st["rejects"] += 1
                    counters[C_REJECTS] += 1
                    count_reasons(state.reason_counts, s, reasons)
                    push_reject(state, sig, s, i, side, qty, px, reasons, now_ns)
                if bad == 0 and not reasons & R_NOT_ACTIVE:  # breakers judge orders, not the lifecycle
                    record_outcome(state, s, reasons != 0, now_ns)
        seq += 1
    release(state.cursors, RING_SIGNALS, seq)
    return placed


@kernel(types.int64(ARENA, LAYOUT, types.int64, types.int64))
def process_batch(arena, layout, now_ns, max_orders):
    """`process_signals` on the arena: signals in the ring -> orders and rejects; return the orders placed."""
    return process_signals(views(arena, layout), now_ns, max_orders)


# ------------------------------------------------------------------------------------------ execution reports
@inline
def apply_execution_reports(state, now_ns):
    """Apply the execution reports waiting in the ring; return the number of fills applied.
    A report for an order the engine does not know (or of another strategy or deploy) is counted, never applied."""
    reports, open_orders, counters = state.reports, state.open_orders, state.counters
    fills = 0
    mask = len(reports) - 1
    end = head(state.cursors, RING_REPORTS)
    for seq in range(tail(state.cursors, RING_REPORTS), end):
        rep = reports[seq & mask]
        slot = slot_of(rep["order_id"])
        if slot >= len(open_orders) or open_orders[slot]["order_id"] != rep["order_id"] \
                or not open_orders[slot]["live"]:
            counters[C_REPORT_UNKNOWN_ORDER] += 1
            continue
        o = open_orders[slot]
        if o["strategy"] != rep["strategy"] or o["deploy"] != rep["deploy"]:
            counters[C_REPORT_MISMATCH] += 1
            continue
        kind = rep["exec_type"]
        if kind == EXEC_ACK:
            continue
        if kind == EXEC_REJECT or kind == EXEC_CANCELED:
            release_order(state, slot)
            continue
        if (kind != EXEC_FILL and kind != EXEC_PARTIAL_FILL) or rep["qty"] <= 0 \
                or not finite_positive(rep["price"]) or not math.isfinite(rep["fee"]):  # a negative fee is a rebate
            counters[C_REPORT_INVALID] += 1
            continue
        ins = state.instruments[o["instrument"]]
        px = float(rep["price"]) / float(ins["tick_size"])
        if px > MAX_PRICE_TICKS:  # a fat-fingered report must not turn P&L into inf, then NaN
            counters[C_REPORT_INVALID] += 1
            continue
        qty = rep["qty"]
        if qty > o["leaves"]:
            counters[C_REPORT_OVERFILL] += 1
            qty = o["leaves"]
        apply_fill_report(state, slot, qty, px, rep["fee"])
        fills += 1
        if o["leaves"] == 0 or kind == EXEC_FILL:
            release_order(state, slot)
        check_pnl(state, o["strategy"], now_ns)
    release(state.cursors, RING_REPORTS, end)
    return fills


@helper
def apply_fill_report(state, slot, qty, px_ticks, fee):
    """A fill of `qty` at `px_ticks` (a float: fills come at any price) on the working order in `slot`:
    position, average price, realized P&L and fees of strategy and account, open quantities, exposure."""
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


@kernel(types.int64(ARENA, LAYOUT, types.int64))
def apply_reports(arena, layout, now_ns):
    """`apply_execution_reports` on the arena; return the number of fills applied."""
    return apply_execution_reports(views(arena, layout), now_ns)
