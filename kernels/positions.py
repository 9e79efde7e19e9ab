"""Positions, P&L, account exposure and the working-order table. Hot path: no allocation, no exceptions.

Exposure of an account on an instrument is its worst case if every working order fills:
gross = max(|qty + open_buy|, |qty - open_sell|) x mark x tick x multiplier, net = (qty + open_buy - open_sell)
x mark x tick x multiplier. Account totals are kept incrementally (each (account, instrument) remembers its
last contribution), so a risk check is O(1) and a mark move costs O(strategies + accounts) for its instrument.
"""
import math

from kernels._jit import helper
from kernels.arena import S_FREE_TOP
from kernels.dtypes import NO_PRICE, NO_SLOT, ORDER_SLOT_BITS, SIDE_BUY


# ------------------------------------------------------------------------------------------ exposure
@helper
def exposure_of(qty, open_buy, open_sell, money_per_unit):
    """(gross, net) of one account and instrument."""
    gross = max(abs(qty + open_buy), abs(qty - open_sell)) * money_per_unit
    net = (qty + open_buy - open_sell) * money_per_unit
    return gross, net


@helper
def money_per_unit(instrument):
    return instrument["mark_ticks"] * instrument["tick_size"] * instrument["multiplier"]


@helper
def refresh_exposure(state, a, i):
    """Account a's exposure on instrument i at the current mark; the account totals follow."""
    e = state.exposures[a, i]
    account = state.accounts[a]
    gross, net = exposure_of(e["qty"], e["open_buy"], e["open_sell"], money_per_unit(state.instruments[i]))
    account["gross"] += gross - e["gross"]
    account["net"] += net - e["net"]
    e["gross"] = gross
    e["net"] = net


# ------------------------------------------------------------------------------------------ P&L
@helper
def remark(state, s, i):
    """Recompute the unrealized P&L of strategy s on instrument i at the instrument's mark."""
    p = state.positions[s, i]
    ins = state.instruments[i]
    st = state.strategies[s]
    unrealized = 0.0
    if p["qty"] != 0:
        unrealized = (ins["mark_ticks"] - p["avg_px_ticks"]) * p["qty"] * ins["tick_size"] * ins["multiplier"]
    change = unrealized - p["unrealized"]
    p["unrealized"] = unrealized
    st["unrealized"] += change
    state.accounts[st["account"]]["unrealized"] += change


@helper
def pnl_of(record):
    """Net P&L of a strategy or account record: realized + unrealized - fees."""
    return record["realized"] + record["unrealized"] - record["fees"]


@helper
def apply_fill(position, side, qty, px_ticks):
    """Move a position by a fill; return the realized P&L in ticks x units (caller converts to money)."""
    held = position["qty"]
    signed = side * qty
    realized = 0.0
    if held == 0 or (held > 0) == (side == SIDE_BUY):
        total = abs(held) + qty
        position["avg_px_ticks"] = (position["avg_px_ticks"] * abs(held) + px_ticks * qty) / total
    else:
        closed = min(qty, abs(held))
        realized = (px_ticks - position["avg_px_ticks"]) * closed * (1 if held > 0 else -1)
        after = held + signed
        if after == 0:
            position["avg_px_ticks"] = 0.0
        elif (after > 0) != (held > 0):
            position["avg_px_ticks"] = float(px_ticks)
    position["qty"] = held + signed
    return realized


# ------------------------------------------------------------------------------------------ working orders
@helper
def slot_of(order_id):
    return order_id & ((1 << ORDER_SLOT_BITS) - 1)


@helper
def _better(side, px, best):
    return best == NO_PRICE or (px > best if side == SIDE_BUY else px < best)


@helper
def _recompute_best(open_orders, exposure, side):
    """Walk the account-instrument's working orders for the best price of one side and how many sit there."""
    best = NO_PRICE
    count = 0
    slot = exposure["working_head"]
    while slot != NO_SLOT:
        o = open_orders[slot]
        if o["side"] == side:
            px = o["px_ticks"]
            if _better(side, px, best):
                best = px
                count = 1
            elif px == best:
                count += 1
        slot = o["next"]
    if side == SIDE_BUY:
        exposure["best_buy_ticks"] = best
        exposure["best_buy_count"] = count
    else:
        exposure["best_sell_ticks"] = best
        exposure["best_sell_count"] = count


@helper
def _join_best(exposure, side, px):
    """A new working order at px: it may set or share the best price of its side."""
    if side == SIDE_BUY:
        if _better(side, px, exposure["best_buy_ticks"]):
            exposure["best_buy_ticks"] = px
            exposure["best_buy_count"] = 1
        elif px == exposure["best_buy_ticks"]:
            exposure["best_buy_count"] += 1
    elif _better(side, px, exposure["best_sell_ticks"]):
        exposure["best_sell_ticks"] = px
        exposure["best_sell_count"] = 1
    elif px == exposure["best_sell_ticks"]:
        exposure["best_sell_count"] += 1


@helper
def link_order(open_orders, exposure, slot):
    """Put a new working order at the head of its account-instrument list and update the best prices."""
    head = exposure["working_head"]
    open_orders[slot]["prev"] = NO_SLOT
    open_orders[slot]["next"] = head
    if head != NO_SLOT:
        open_orders[head]["prev"] = slot
    exposure["working_head"] = slot
    _join_best(exposure, open_orders[slot]["side"], open_orders[slot]["px_ticks"])


@helper
def _leave_best(open_orders, exposure, side, px):
    """A working order at px is gone: only the last one at the best price makes the side look again."""
    if side == SIDE_BUY:
        if px == exposure["best_buy_ticks"]:
            exposure["best_buy_count"] -= 1
            if exposure["best_buy_count"] == 0:
                _recompute_best(open_orders, exposure, side)
    elif px == exposure["best_sell_ticks"]:
        exposure["best_sell_count"] -= 1
        if exposure["best_sell_count"] == 0:
            _recompute_best(open_orders, exposure, side)


@helper
def release_order(state, slot):
    """The order in `slot` is done: release its leaves from open quantities, unlink it and free the slot."""
    open_orders = state.open_orders
    o = open_orders[slot]
    s, i = o["strategy"], o["instrument"]
    a = o["account"]
    leaves = o["leaves"]
    e = state.exposures[a, i]
    if o["side"] == SIDE_BUY:
        state.positions[s, i]["open_buy"] -= leaves
        e["open_buy"] -= leaves
    else:
        state.positions[s, i]["open_sell"] -= leaves
        e["open_sell"] -= leaves
    o["leaves"] = 0
    o["live"] = 0
    prev, nxt = o["prev"], o["next"]
    if prev != NO_SLOT:
        open_orders[prev]["next"] = nxt
    else:
        e["working_head"] = nxt
    if nxt != NO_SLOT:
        open_orders[nxt]["prev"] = prev
    _leave_best(open_orders, e, o["side"], o["px_ticks"])
    refresh_exposure(state, a, i)
    state.strategies[s]["open_orders"] -= 1
    state.free_slots[state.scalars[S_FREE_TOP]] = slot
    state.scalars[S_FREE_TOP] += 1


@helper
def finite_positive(x):
    return math.isfinite(x) and x > 0
