"""The record layout is the contract: every dtype, side, reason bit, state, event and counter lives here.

Units: prices in ticks (int64, `_ticks`), quantities in instrument units (int64, a lot is `lot_size` units),
times in nanoseconds since the epoch (int64, `_ns`). Money (P&L, fees, notional, exposure) is float64 currency.
Names (strategy, instrument, account) live in the control plane; everything here is a dense integer id.
"""
import numpy as np

u1, i1, u2, u4, i4, u8, i8, f8 = (np.dtype(c) for c in ("u1", "i1", "u2", "u4", "i4", "u8", "i8", "f8"))


def _record(*fields):
    return np.dtype(list(fields), align=True)


# ---------------------------------------------------------------------------------------------- wire framing
WIRE_VERSION = 1
FRAME_HEADER_SIZE = 8  # u32 body length (LE), u8 version, u8 message type, u16 reserved (0)
MAX_FRAME_BODY = 1024  # a body longer than this is malformed: no message of ours comes close

MSG_SIGNAL = 1
MSG_MARKET_DATA = 2
MSG_ORDER = 3
MSG_EXECUTION_REPORT = 4
MSG_CANCEL = 5  # engine -> OMS: cancel a working order (kill switch)
MSG_STATUS_REQUEST = 6  # engine -> OMS: how do you see this order? (reconciliation; the answer is an EXEC_STATUS)
MSG_NAMES = {MSG_SIGNAL: "signal", MSG_MARKET_DATA: "market_data", MSG_ORDER: "order",
             MSG_EXECUTION_REPORT: "execution_report", MSG_CANCEL: "cancel", MSG_STATUS_REQUEST: "status_request"}

# ---------------------------------------------------------------------------------------------- enums
SIDE_BUY = 1
SIDE_SELL = -1

SIGNAL_TARGET = 0  # value in [-1, 1]: fraction of the strategy's max position to hold
SIGNAL_ORDER = 1   # value: signed quantity in units to trade now (the Signal Engine sized it)
SIGNAL_KIND_NAMES = ("target", "order")

ORDER_LIMIT = 0
ORDER_MARKET = 1
ORDER_IOC = 2
ORDER_TYPE_NAMES = ("limit", "market", "ioc")

EXEC_ACK = 0
EXEC_REJECT = 1
EXEC_PARTIAL_FILL = 2
EXEC_FILL = 3
EXEC_CANCELED = 4
EXEC_STATUS = 5  # the OMS's view of an order: qty = filled in all, price = their average, fee = their fees
EXEC_TYPE_NAMES = ("ack", "reject", "partial_fill", "fill", "canceled", "status")
# an EXEC_STATUS's reason: the OMS still works the order, works it no longer, never saw it
STATUS_WORKING, STATUS_DONE, STATUS_UNKNOWN = 0, 1, 2

SIDES_BUY, SIDES_SELL = 1, 2  # STRATEGY_T / ACCOUNT_T `sides` bits
SIDES_BOTH = SIDES_BUY | SIDES_SELL
SIDES_NAMES = {"both": SIDES_BOTH, "buy_only": SIDES_BUY, "sell_only": SIDES_SELL}
# FILL_T flags: a fill larger than the leaves (clamped), priced off the band, missed and learnt from an EXEC_STATUS
FILL_OVERFILL, FILL_OFF_BAND, FILL_RECONCILED = 1, 2, 4

KILL_ACCOUNT = 1  # ACCOUNT_T.kill bits: the account's own switch ...
KILL_GLOBAL = 2   # ... and the global one, set on every account (so either can be turned off alone)

BREAKER_ACTION_HALT = 0
BREAKER_ACTION_REDUCE = 1
BREAKER_ACTION_NAMES = ("halt", "reduce")

# ---------------------------------------------------------------------------------------------- lifecycle
REGISTERED, READY, ACTIVE, PAUSED, REDUCING, HALTED, RETIRED = range(7)
STATE_NAMES = ("REGISTERED", "READY", "ACTIVE", "PAUSED", "REDUCING", "HALTED", "RETIRED")

EV_VALIDATE, EV_ACTIVATE, EV_PAUSE, EV_REDUCE, EV_HALT, EV_RESET, EV_DEACTIVATE, EV_RETIRE, EV_TRIP_HALT, \
    EV_TRIP_REDUCE, EV_COOLDOWN = range(11)
EVENT_NAMES = ("validate", "activate", "pause", "reduce", "halt", "reset", "deactivate", "retire", "trip_halt",
               "trip_reduce", "cooldown")

# ---------------------------------------------------------------------------------------------- reject reasons
# One bit per pre-trade rule. Every rule is evaluated, so a rejection reports all of its reasons.
REASONS = (
    ("R_NOT_ACTIVE", "strategy is not ACTIVE (REDUCING admits only orders that reduce the position)"),
    ("R_KILL_SWITCH", "a kill switch is on (the strategy's, its account's or the global one)"),
    ("R_NOT_TRADABLE", "instrument is not tradable"),
    ("R_RESTRICTED", "instrument is restricted for this strategy"),
    ("R_QTY_INVALID", "quantity is zero or negative"),
    ("R_QTY_LOT", "quantity is not a multiple of the lot size"),
    ("R_NOT_FINITE", "signal value or price is NaN or infinite"),
    ("R_SIGNAL_RANGE", "target signal value outside [-1, 1], or an unknown signal kind"),
    ("R_PRICE_INVALID", "price is zero or negative"),
    ("R_QTY_MAX", "order quantity above max_order_qty"),
    ("R_NOTIONAL_MAX", "order notional above max_order_notional"),
    ("R_PRICE_COLLAR", "price outside the collar around the reference price"),
    ("R_NO_REFERENCE", "no reference price for the instrument"),
    ("R_POSITION_MAX", "position plus open orders would exceed max_position"),
    ("R_GROSS_MAX", "account gross exposure would exceed max_gross_notional"),
    ("R_NET_MAX", "account net exposure would exceed max_net_notional"),
    ("R_RATE", "order rate above the strategy's token bucket"),
    ("R_OPEN_ORDERS_MAX", "strategy has max_open_orders working"),
    ("R_DUPLICATE", "duplicate signal (same source and sequence)"),
    ("R_OUT_OF_ORDER", "signal sequence older than the last one seen from its source"),
    ("R_STALE", "signal older than its time-to-live"),
    ("R_LOSS_STRATEGY", "strategy daily loss limit reached"),
    ("R_LOSS_ACCOUNT", "account daily loss limit reached"),
    ("R_SELF_MATCH", "order would cross a working order of the same account"),
    ("R_ORDER_TABLE_FULL", "engine open-order table is full"),
    ("R_MARK_STALE", "no market data for the instrument within its max_mark_age_ms (or none yet)"),
    ("R_SIDE_BLOCKED", "the order's side is blocked for the strategy (buy_only, sell_only) and it does not reduce "
                       "the position"),
    ("R_DUPLICATE_ORDER", "same side, quantity and price as the strategy's last order, within duplicate_window_ms"),
    ("R_SIDE_BLOCKED_ACCOUNT", "the order's side is blocked for the strategy's account (buy_only, sell_only) and it "
                               "does not reduce the position"),
)
N_REASONS = len(REASONS)
REASON_NAMES = tuple(name[2:].lower() for name, _ in REASONS)
REASON_TEXT = tuple(text for _, text in REASONS)
# Who enforces each rule (docs/risk.md): the signal's own validity, the strategy's limits, its account's, the
# engine's and instruments' rules that hold for everyone (global), or an operator's decision (lifecycle state,
# kill switches). A rule has one level, so a denial's levels are its reasons' levels.
LEVELS = ("signal", "strategy", "account", "global", "operator")
REASON_LEVEL = {
    "not_active": "operator", "kill_switch": "operator", "not_tradable": "global", "restricted": "strategy",
    "qty_invalid": "signal", "qty_lot": "global", "not_finite": "signal", "signal_range": "signal",
    "price_invalid": "signal", "qty_max": "strategy", "notional_max": "strategy", "price_collar": "global",
    "no_reference": "global", "position_max": "strategy", "gross_max": "account", "net_max": "account",
    "rate": "strategy", "open_orders_max": "strategy", "duplicate": "signal", "out_of_order": "signal",
    "stale": "signal", "loss_strategy": "strategy", "loss_account": "account", "self_match": "account",
    "order_table_full": "global", "mark_stale": "global", "side_blocked": "strategy", "duplicate_order": "strategy",
    "side_blocked_account": "account",
}
assert set(REASON_LEVEL) == set(REASON_NAMES) and set(REASON_LEVEL.values()) <= set(LEVELS)
for _bit, (_name, _) in enumerate(REASONS):
    globals()[_name] = np.uint32(1 << _bit)


def reason_names(mask):
    """The names of the bits set in a reason mask, in bit order."""
    return [REASON_NAMES[b] for b in range(N_REASONS) if int(mask) >> b & 1]


# ---------------------------------------------------------------------------------------------- breakers
TRIP_CONSECUTIVE_REJECTS, TRIP_REJECT_RATIO, TRIP_DRAWDOWN, TRIP_LOSS, TRIP_FILL_RATE, TRIP_OFF_BAND_FILLS = range(6)
TRIP_NAMES = ("consecutive_rejects", "reject_ratio", "drawdown", "loss", "fill_rate", "off_band_fills")
N_TRIPS = len(TRIP_NAMES)
NO_TRIP = 255

# ---------------------------------------------------------------------------------------------- engine counters
COUNTERS = (
    ("C_FRAMES", "frames read"),
    ("C_FRAME_TRUNCATED", "bytes left that do not make a whole frame"),
    ("C_FRAME_OVERSIZE", "frame body longer than MAX_FRAME_BODY"),
    ("C_FRAME_BAD_VERSION", "frame with an unknown schema version"),
    ("C_FRAME_BAD_TYPE", "frame with an unknown or unexpected message type"),
    ("C_FRAME_MALFORMED", "frame body that is not the message it claims to be"),
    ("C_SIGNALS", "signals decoded"),
    ("C_SIGNAL_RING_FULL", "signals dropped: signal ring full (a decode alone; the batch takes each one at once)"),
    ("C_SIGNAL_UNKNOWN_SOURCE", "signals from a source id beyond the configured sources"),
    ("C_SIGNAL_UNKNOWN_ID", "signals with a signal id no strategy subscribes to"),
    ("C_SIGNAL_UNKNOWN_INSTRUMENT", "signals for an unknown instrument id"),
    ("C_SIGNAL_NO_CHANGE", "signals whose target equals the current position"),
    ("C_MARKET_DATA", "market data updates applied"),
    ("C_MARKET_DATA_UNKNOWN_INSTRUMENT", "market data for an unknown instrument id"),
    ("C_MARKET_DATA_INVALID", "market data with NaN, infinite or negative prices"),
    ("C_ORDERS", "orders accepted"),
    ("C_REJECTS", "orders rejected by pre-trade risk"),
    ("C_REJECT_RING_FULL", "rejects not recorded: reject ring full (counts are still exact)"),
    ("C_REPORTS", "execution reports decoded (from the OMS link; the in-batch venue's are in its own counts)"),
    ("C_REPORT_RING_FULL", "execution reports dropped: report ring full (likewise only a decode without the batch)"),
    ("C_REPORT_UNKNOWN_ORDER", "execution reports for an order id the engine does not know"),
    ("C_REPORT_MISMATCH", "execution reports whose strategy or deploy differ from the order's"),
    ("C_REPORT_OVERFILL", "fills larger than the order's leaves quantity (clamped, flagged)"),
    ("C_FILL_OFF_BAND", "fills priced outside the instrument's band around its mark (applied, flagged)"),
    ("C_REPORT_INVALID", "execution reports with an unknown type or a NaN, infinite or negative value"),
    ("C_FILLS", "fills applied"),
    ("C_RECONCILE_MISMATCH", "status answers that differ from the engine's books (fills missed, an order the OMS "
                             "no longer works or never saw, other leaves)"),
    ("C_RECONCILE_FILLS", "fills the engine missed, applied from a status answer (flagged reconciled)"),
    ("C_ORDERS_ACKED", "orders the OMS acknowledged"),
    ("C_ORDERS_REJECTED", "orders the OMS rejected"),
    ("C_ORDERS_CANCELED", "orders that ended canceled (by the OMS, or in the books when never sent)"),
    ("C_ORDERS_FILLED", "orders that ended filled"),
    ("C_FILL_RING_FULL", "fill records not written: fills ring full (the fills themselves were applied)"),
    ("C_BREAKER_TRIPS", "circuit breaker trips"),
    ("C_BATCH_STOPS", "batches that stopped at an event for want of room (order or fills ring, tx): the rest waited"),
    ("C_SHADOW_ORDERS", "orders a shadow version would have placed (checked, never sent)"),
    ("C_ROLE_REPORT_OFF_OMS", "execution reports that did not come on the OMS link (a listener, or any while the "
                              "venue runs in the batch): dropped"),
    ("C_ROLE_DATA_ON_OMS", "signals and market data that came on the OMS link: dropped"),
    ("C_SHADOW_REJECTS", "orders a shadow version would have had rejected"),
)
N_COUNTERS = len(COUNTERS)
COUNTER_NAMES = tuple(name[2:].lower() for name, _ in COUNTERS)
COUNTER_TEXT = tuple(text for _, text in COUNTERS)
for _index, (_name, _) in enumerate(COUNTERS):
    globals()[_name] = _index

# ---------------------------------------------------------------------------------------------- records
SIGNAL_T = _record(
    ("seq", u8), ("ts_ns", i8), ("ttl_ns", i8), ("recv_ns", i8),
    ("source", u4), ("signal_id", u4), ("instrument", u4), ("kind", u1),
    ("value", f8), ("price", f8),
)

ORDER_T = _record(
    ("order_id", u8), ("strategy", u4), ("deploy", u4), ("account", u4), ("instrument", u4),
    ("side", i1), ("order_type", u1), ("qty", i8), ("px_ticks", i8), ("price", f8),
    ("ts_ns", i8), ("signal_seq", u8), ("signal_source", u4), ("signal_ts_ns", i8),
)

REJECT_T = _record(
    ("signal_seq", u8), ("signal_source", u4), ("strategy", u4), ("instrument", u4), ("side", i1),
    ("qty", i8), ("px_ticks", i8), ("reasons", u4), ("ts_ns", i8),
)

REPORT_T = _record(
    ("order_id", u8), ("strategy", u4), ("deploy", u4), ("exec_type", u1), ("qty", i8), ("price", f8),
    ("leaves", i8), ("fee", f8), ("ts_ns", i8), ("reason", u4),
)

INSTRUMENT_T = _record(
    ("tick_size", f8), ("lot_size", i8), ("multiplier", f8), ("band_pct", f8), ("tradable", u1),
    ("ref_px_ticks", i8),  # configured reference, used until market data arrives
    ("bid_ticks", i8), ("ask_ticks", i8), ("last_ticks", i8), ("md_ts_ns", i8),
    ("mark_ticks", i8),  # mid if both sides are known, else last, else ref_px_ticks
    ("marked_ns", i8),         # stream time of the last market data applied (0: none yet)
    ("max_mark_age_ns", i8),   # orders need market data this fresh (0: no such rule)
)

STRATEGY_T = _record(
    ("state", u1), ("breaker_action", u1), ("trip_cause", u1), ("order_type", u1), ("kill", u1),
    ("deploy", u4), ("account", u4),  # deploy: the number of the strategy's running deploy (1, 2, ...)
    ("shadow_of", u4),  # 0: a strategy; s + 1: a shadow version of strategy s (its orders are never placed)
    ("sides", u1),      # SIDES_* bits: the sides new risk may take (an order that reduces the position always may)
    # limits
    ("max_position", i8), ("max_order_qty", i8), ("max_order_notional", f8), ("max_open_orders", i4),
    ("rate_per_s", f8), ("burst", f8), ("daily_loss_limit", f8),
    # breaker thresholds
    ("max_consecutive_rejects", i4), ("ratio_min_orders", i4), ("max_reject_ratio", f8), ("ratio_window_ns", i8),
    ("max_drawdown", f8), ("loss_limit", f8), ("cooldown_ns", i8),
    ("max_fills_per_window", i4), ("fill_window_ns", i8),  # the fill-rate breaker (0: off)
    ("max_off_band_fills", i4),   # trip after this many fills priced outside the instrument's band (0: off)
    ("duplicate_window_ns", i8),  # the duplicate-order rule's window (0: off)
    # live state
    ("tokens", f8), ("tokens_ts_ns", i8), ("open_orders", i4), ("consecutive_rejects", i4),
    ("window_orders", i4), ("window_rejects", i4), ("window_start_ns", i8), ("tripped_at_ns", i8),
    ("realized", f8), ("unrealized", f8), ("fees", f8), ("peak_pnl", f8),
    ("signals", i8), ("orders", i8), ("rejects", i8), ("fills", i8), ("filled_qty", i8),
    ("ordered_buy", i8), ("ordered_sell", i8),  # units of the orders accepted, by side (shadows compare them)
    ("fill_window_start_ns", i8), ("window_fills", i4), ("off_band_fills", i4),
    ("last_side", i1), ("last_qty", i8), ("last_px_ticks", i8), ("last_order_ns", i8),  # the last order placed
)

POSITION_T = _record(  # one per (strategy, instrument)
    ("qty", i8), ("open_buy", i8), ("open_sell", i8), ("avg_px_ticks", f8),
    ("realized", f8), ("unrealized", f8), ("fees", f8), ("allowed", u1),
)

ACCOUNT_T = _record(  # kill: KILL_ACCOUNT | KILL_GLOBAL bits (either blocks its orders)
    ("kill", u1), ("sides", u1), ("max_gross_notional", f8), ("max_net_notional", f8), ("daily_loss_limit", f8),
    ("gross", f8), ("net", f8), ("realized", f8), ("unrealized", f8), ("fees", f8),
)

EXPOSURE_T = _record(  # one per (account, instrument): the account's net of all its strategies
    ("qty", i8), ("open_buy", i8), ("open_sell", i8), ("gross", f8), ("net", f8),
    ("best_buy_ticks", i8), ("best_sell_ticks", i8),  # best working prices, for self-match prevention
    ("best_buy_count", i4), ("best_sell_count", i4),  # working orders at those prices: a fill of one of several
                                                      # at the best leaves the best as it is, no list walk
    ("working_head", i4),  # first working order slot of this account and instrument, -1 if none
)

OPEN_ORDER_T = _record(  # the engine's table of working orders; a slot is freed when the order is done
    ("order_id", u8), ("strategy", u4), ("deploy", u4), ("account", u4), ("instrument", u4),
    ("side", i1), ("live", u1), ("order_type", u1), ("acked", u1),
    ("qty", i8), ("leaves", i8), ("px_ticks", i8), ("ts_ns", i8),
    ("signal_ts_ns", i8),        # the signal's own time: signal -> ack and signal -> fill latencies
    ("arrival_mark_ticks", i8),  # the instrument's mark when the order was decided: arrival slippage
    ("prev", i4), ("next", i4),
)

FILL_T = _record(  # one applied fill, for whoever reads the fills ring (metrics, mirror, journal readers)
    ("order_id", u8), ("strategy", u4), ("deploy", u4), ("account", u4), ("instrument", u4),
    ("side", i1), ("exec_type", u1), ("flags", u2),
    ("qty", i8), ("leaves", i8), ("price", f8), ("fee", f8), ("realized", f8),
    ("report_ts_ns", i8),       # the OMS's time on the report
    ("ts_ns", i8),              # the engine's clock when it applied the fill
    ("order_ts_ns", i8), ("signal_ts_ns", i8), ("order_px_ticks", i8), ("arrival_mark_ticks", i8),
)

# ---------------------------------------------------------------------------------------------- simulated venue
# The in-process simulated venue (kernels/venue.py) when [oms] kind = "sim": one record of settings and counts,
# its view of each working order (indexed like open_orders), its resting book per instrument, and a heap of
# reports (and resting-order expiries) waiting for their due time in stream time.
VENUE_T = _record(
    ("on", u1),
    ("ack_latency_ns", i8), ("fill_latency_ns", i8), ("resting_ttl_ns", i8),
    ("reject_ratio", f8), ("partial_fill_ratio", f8), ("partial_fill_gap_ns", i8),
    ("taker_fee_bps", f8), ("maker_fee_bps", f8), ("fee_per_unit", f8), ("min_fee", f8),
    ("rng", u8), ("seq", u8), ("pending", i8),
    ("orders", i8), ("acks", i8), ("rejects", i8), ("partial_fills", i8), ("fills", i8), ("canceled", i8),
    ("filled_qty", i8), ("fees", f8),
)
VENUE_ORDER_T = _record(
    ("order_id", u8), ("strategy", u4), ("deploy", u4), ("instrument", u4), ("side", i1), ("order_type", u1),
    ("working", u1),   # between its arrival and its last report
    ("resting", u1),   # on the book, waiting for market data to cross it
    ("qty", i8), ("price", f8), ("ack_due_ns", i8), ("fees", f8), ("prev", i4), ("next", i4),
)
VENUE_EVENT_T = _record(
    ("due_ns", i8), ("seq", u8), ("order_id", u8), ("slot", i4), ("expiry", u1), ("exec_type", u1), ("reason", u4),
    ("qty", i8), ("leaves", i8), ("price", f8), ("fee", f8),
)
VENUE_REJECT_RANDOM, VENUE_REJECT_QTY, VENUE_REJECT_PRICE, VENUE_REJECT_DUPLICATE, VENUE_REJECT_NO_MARKET = \
    range(1, 6)
VENUE_REJECT_NAMES = {VENUE_REJECT_RANDOM: "random", VENUE_REJECT_QTY: "quantity", VENUE_REJECT_PRICE: "price",
                      VENUE_REJECT_DUPLICATE: "duplicate_order_id", VENUE_REJECT_NO_MARKET: "no_market"}

NO_PRICE = np.iinfo(np.int64).min  # "no working buy/sell" sentinel for best_*_ticks
NO_SLOT = -1

# Order ids carry their table slot in the low bits, so a report finds its order in O(1) and an id is never
# reused: (generation << ORDER_SLOT_BITS) | slot.
ORDER_SLOT_BITS = 24
MAX_OPEN_ORDERS_CAPACITY = 1 << ORDER_SLOT_BITS
