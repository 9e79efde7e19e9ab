"""Sizing: signal -> order side, quantity and limit price. Hot path: no allocation, no objects, no exceptions."""
import math

from kernels._jit import helper
from kernels.dtypes import SIDE_BUY, SIDE_SELL, SIGNAL_ORDER, SIGNAL_TARGET

QTY_CLAMP = 1 << 62  # any float beyond this is clamped: it fails max_order_qty with a reason, never overflows


@helper
def _clamp(x):
    """A float (finite or infinite) brought inside +-QTY_CLAMP while it is still a float: converting a float
    beyond int64 to an integer is undefined behaviour in compiled code."""
    return min(max(x, -float(QTY_CLAMP)), float(QTY_CLAMP))


@helper
def _clamp_to_int(x):
    return int(_clamp(x))


@helper
def order_delta(kind, value, max_position, lot_size, working_qty):
    """Signed quantity to trade. TARGET: value x max_position, truncated to whole lots, minus what the
    strategy holds or has working. ORDER: the value itself (the Signal Engine sized it; lot rules are risk's)."""
    if not math.isfinite(value):
        return 0
    if kind == SIGNAL_TARGET:
        target = _clamp_to_int(value * max_position)
        target -= target % lot_size if target >= 0 else -((-target) % lot_size)
        return target - working_qty
    if kind == SIGNAL_ORDER:
        return _clamp_to_int(value)
    return 0


@helper
def limit_ticks(price, tick_size, side):
    """Signal price to ticks, rounded passively (a buy down, a sell up): never worse than the signal asked."""
    if not math.isfinite(price):
        return 0
    ticks = _clamp(float(price) / float(tick_size))  # Python floats: no numpy overflow warning
    # A price that is a whole number of ticks can carry float noise (101.27 / 0.01 = 10126.999...).
    nearest = float(round(ticks))
    if abs(ticks - nearest) < 1e-9 * max(1.0, abs(ticks)):
        return _clamp_to_int(nearest)
    return _clamp_to_int(math.floor(ticks) if side == SIDE_BUY else math.ceil(ticks))


@helper
def side_of(delta):
    return SIDE_BUY if delta > 0 else SIDE_SELL
