"""Per-strategy circuit breakers. A trip moves the strategy to HALTED or REDUCING through the lifecycle table,
is counted with its cause, and lasts until an explicit reset or the configured cool-down (0 = reset only).
A threshold of 0 disables its breaker. Breakers judge a strategy's own orders and P&L: signal-level rejects
(duplicate, stale, malformed signals) are counted but do not trip anyone's breaker."""
from kernels._jit import helper
from kernels.arena import S_NEXT_COOLDOWN_NS, S_STRATEGIES
from kernels.dtypes import (
    BREAKER_ACTION_REDUCE, C_BREAKER_TRIPS, EV_COOLDOWN, EV_TRIP_HALT, EV_TRIP_REDUCE, NO_TRIP,
    TRIP_CONSECUTIVE_REJECTS, TRIP_DRAWDOWN, TRIP_FILL_RATE, TRIP_LOSS, TRIP_OFF_BAND_FILLS, TRIP_REJECT_RATIO,
)
from kernels.lifecycle import apply_event
from kernels.positions import pnl_of

NEVER = 0x7FFF_FFFF_FFFF_FFFF  # "no cool-down due": the int64 maximum


@helper
def trip(state, s, cause, now_ns):
    st = state.strategies[s]
    event = EV_TRIP_REDUCE if st["breaker_action"] == BREAKER_ACTION_REDUCE else EV_TRIP_HALT
    if apply_event(state.transitions, state.strategies, s, event):
        st["trip_cause"] = cause
        st["tripped_at_ns"] = now_ns
        state.trip_counts[s, cause] += 1
        state.counters[C_BREAKER_TRIPS] += 1
        if st["cooldown_ns"] > 0:  # when this one may come back: the batch looks no earlier than that
            state.scalars[S_NEXT_COOLDOWN_NS] = min(state.scalars[S_NEXT_COOLDOWN_NS], now_ns + st["cooldown_ns"])


@helper
def record_outcome(state, s, rejected, now_ns):
    """Count one order outcome in the reject breakers' windows and trip them when over threshold."""
    st = state.strategies[s]
    if now_ns - st["window_start_ns"] >= st["ratio_window_ns"]:
        st["window_start_ns"] = now_ns
        st["window_orders"] = 0
        st["window_rejects"] = 0
    st["window_orders"] += 1
    if rejected:
        st["window_rejects"] += 1
        st["consecutive_rejects"] += 1
    else:
        st["consecutive_rejects"] = 0
    if 0 < st["max_consecutive_rejects"] <= st["consecutive_rejects"]:
        trip(state, s, TRIP_CONSECUTIVE_REJECTS, now_ns)
    elif (st["max_reject_ratio"] > 0 and st["window_orders"] >= st["ratio_min_orders"]
          and st["window_rejects"] >= st["max_reject_ratio"] * st["window_orders"]):
        trip(state, s, TRIP_REJECT_RATIO, now_ns)


@helper
def check_fills(state, s, off_band, now_ns):
    """Count a fill in the fill-rate breaker's window, and an off-band one; trip when over threshold."""
    st = state.strategies[s]
    if now_ns - st["fill_window_start_ns"] >= st["fill_window_ns"]:
        st["fill_window_start_ns"] = now_ns
        st["window_fills"] = 0
    st["window_fills"] += 1
    if off_band:
        st["off_band_fills"] += 1
    if 0 < st["max_fills_per_window"] < st["window_fills"]:
        trip(state, s, TRIP_FILL_RATE, now_ns)
    elif 0 < st["max_off_band_fills"] <= st["off_band_fills"] and off_band:
        trip(state, s, TRIP_OFF_BAND_FILLS, now_ns)


@helper
def check_pnl(state, s, now_ns):
    """Track the P&L peak and trip on drawdown from it or on the loss limit."""
    st = state.strategies[s]
    pnl = pnl_of(st)
    if pnl > st["peak_pnl"]:
        st["peak_pnl"] = pnl
    if st["loss_limit"] > 0 and pnl <= -st["loss_limit"]:
        trip(state, s, TRIP_LOSS, now_ns)
    elif st["max_drawdown"] > 0 and st["peak_pnl"] - pnl >= st["max_drawdown"]:
        trip(state, s, TRIP_DRAWDOWN, now_ns)


@helper
def reset_breakers(strategies, s, now_ns):
    """Start strategy s's breakers afresh: after a reset or a cool-down it is judged from now on. The one reset,
    for the batch (a cool-down) and the control plane (an operator's reset) alike."""
    st = strategies[s]
    st["trip_cause"] = NO_TRIP
    st["tripped_at_ns"] = 0
    st["consecutive_rejects"] = 0
    st["window_start_ns"] = now_ns
    st["window_orders"] = 0
    st["window_rejects"] = 0
    st["fill_window_start_ns"] = now_ns
    st["window_fills"] = 0
    st["off_band_fills"] = 0
    st["peak_pnl"] = pnl_of(st)


@helper
def cool_down(state, now_ns):
    """Bring back tripped strategies whose cool-down has passed; return when the next one may (int64 max: none)."""
    next_ns = NEVER
    for s in range(state.scalars[S_STRATEGIES]):
        st = state.strategies[s]
        if st["trip_cause"] == NO_TRIP or st["cooldown_ns"] <= 0:
            continue
        due = st["tripped_at_ns"] + st["cooldown_ns"]
        if now_ns >= due and apply_event(state.transitions, state.strategies, s, EV_COOLDOWN):
            reset_breakers(state.strategies, s, now_ns)
        elif due > now_ns:
            next_ns = min(next_ns, due)
    return next_ns
