"""Pre-trade risk for one order: every rule sets its own bit and all rules are evaluated, so a rejection
reports every reason. Hot path: no allocation, no objects, no exceptions on data."""
from kernels._jit import helper
from kernels.dtypes import (
    ACTIVE, NO_PRICE, ORDER_MARKET, REDUCING, R_DUPLICATE_ORDER, R_GROSS_MAX, R_KILL_SWITCH, R_LOSS_ACCOUNT,
    R_LOSS_STRATEGY, R_MARK_STALE, R_NET_MAX, R_NOTIONAL_MAX, R_NOT_ACTIVE, R_NOT_TRADABLE, R_NO_REFERENCE,
    R_OPEN_ORDERS_MAX, R_ORDER_TABLE_FULL, R_POSITION_MAX, R_PRICE_COLLAR, R_PRICE_INVALID, R_QTY_INVALID, R_QTY_LOT,
    R_QTY_MAX, R_RATE, R_RESTRICTED, R_SELF_MATCH, R_SIDE_BLOCKED, R_SIDE_BLOCKED_ACCOUNT, SIDES_BUY, SIDES_SELL,
    SIDE_BUY,
)
from kernels.positions import exposure_of, money_per_unit, pnl_of


@helper
def reduces(qty_held, open_buy, open_sell, side, qty):
    """True when the order can only bring the position toward zero, even if every working order fills."""
    if side == SIDE_BUY:
        return qty_held < 0 and qty_held + open_buy + qty <= 0
    return qty_held > 0 and qty_held - open_sell - qty >= 0


@helper
def refill_tokens(strategy, now_ns):
    """Token bucket: rate_per_s tokens a second, at most `burst` saved up."""
    elapsed = now_ns - strategy["tokens_ts_ns"]
    if elapsed > 0:
        strategy["tokens"] = min(strategy["burst"], strategy["tokens"] + elapsed * 1e-9 * strategy["rate_per_s"])
        strategy["tokens_ts_ns"] = now_ns


@helper
def order_reasons(strategy, account, instrument, position, exposure, side, qty, px_ticks, order_type,
                  free_slots_left, now_ns):
    """The reason mask of one order (0 = accept). Reads state; changes only the strategy's token bucket."""
    r = 0
    held = position["qty"]
    reducing = reduces(held, position["open_buy"], position["open_sell"], side, qty)
    state = strategy["state"]
    if state != ACTIVE and not (state == REDUCING and reducing):
        r |= R_NOT_ACTIVE
    if account["kill"] or strategy["kill"]:
        r |= R_KILL_SWITCH
    if not instrument["tradable"]:
        r |= R_NOT_TRADABLE
    if not position["allowed"]:
        r |= R_RESTRICTED
    side_bit = SIDES_BUY if side == SIDE_BUY else SIDES_SELL
    if not reducing and not strategy["sides"] & side_bit:
        r |= R_SIDE_BLOCKED
    if not reducing and not account["sides"] & side_bit:
        r |= R_SIDE_BLOCKED_ACCOUNT
    if 0 < strategy["duplicate_window_ns"] and now_ns - strategy["last_order_ns"] < strategy["duplicate_window_ns"] \
            and strategy["last_side"] == side and strategy["last_qty"] == qty and strategy["last_px_ticks"] == px_ticks:
        r |= R_DUPLICATE_ORDER
    # quantity
    if qty <= 0:
        r |= R_QTY_INVALID
    elif qty % instrument["lot_size"] != 0:
        r |= R_QTY_LOT
    if qty > strategy["max_order_qty"]:
        r |= R_QTY_MAX
    # price
    if px_ticks <= 0:
        r |= R_PRICE_INVALID
    unit_money = instrument["tick_size"] * instrument["multiplier"]
    if float(qty) * abs(float(px_ticks)) * unit_money > strategy["max_order_notional"]:
        r |= R_NOTIONAL_MAX
    ref = instrument["mark_ticks"]
    if instrument["max_mark_age_ns"] > 0 and (instrument["marked_ns"] == 0 or
                                              now_ns - instrument["marked_ns"] > instrument["max_mark_age_ns"]):
        r |= R_MARK_STALE  # fail closed: a reference nobody has confirmed lately is not a reference
    if ref <= 0:
        r |= R_NO_REFERENCE
    elif abs(px_ticks - ref) * 100.0 > instrument["band_pct"] * ref:
        r |= R_PRICE_COLLAR
    # position: the worst case on the order's side, counting working orders, may not grow past the limit
    if side == SIDE_BUY:
        before = held + position["open_buy"]
    else:
        before = held - position["open_sell"]
    after = before + side * qty
    if abs(after) > strategy["max_position"] and abs(after) > abs(before):
        r |= R_POSITION_MAX
    # account exposure, worst case with this order working
    unit_mark = money_per_unit(instrument)
    open_buy = exposure["open_buy"] + (qty if side == SIDE_BUY else 0)
    open_sell = exposure["open_sell"] + (0 if side == SIDE_BUY else qty)
    gross, net = exposure_of(exposure["qty"], open_buy, open_sell, unit_mark)
    gross_total = account["gross"] - exposure["gross"] + gross
    net_total = account["net"] - exposure["net"] + net
    if gross_total > account["max_gross_notional"] and gross > exposure["gross"]:
        r |= R_GROSS_MAX
    if abs(net_total) > account["max_net_notional"] and abs(net_total) > abs(account["net"]):
        r |= R_NET_MAX
    # throttles
    if strategy["tokens"] < 1.0:
        r |= R_RATE
    if strategy["open_orders"] >= strategy["max_open_orders"]:
        r |= R_OPEN_ORDERS_MAX
    if free_slots_left <= 0:
        r |= R_ORDER_TABLE_FULL
    # losses: a loss limit stops new risk, never a reduction
    if not reducing:
        if pnl_of(strategy) <= -strategy["daily_loss_limit"]:
            r |= R_LOSS_STRATEGY
        if pnl_of(account) <= -account["daily_loss_limit"]:
            r |= R_LOSS_ACCOUNT
    # self-match: would it cross a working order of the same account on the same instrument?
    if side == SIDE_BUY:
        best = exposure["best_sell_ticks"]
        if best != NO_PRICE and (order_type == ORDER_MARKET or px_ticks >= best):
            r |= R_SELF_MATCH
    else:
        best = exposure["best_buy_ticks"]
        if best != NO_PRICE and (order_type == ORDER_MARKET or px_ticks <= best):
            r |= R_SELF_MATCH
    return r
