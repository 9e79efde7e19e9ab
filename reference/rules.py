"""The rules in plain Python: a signal, a mark move and an execution report, each at a time in stream time (the
clock, and cool-downs that fall due), over the engine's tables as Python objects. The test oracle of the event
kernels (tests/kernels/test_pipeline_properties.py drives `process_signals`, `apply_mark` and `apply_reports` on
both) and, under reference/stream.py, the plain-Python engine the benchmarks measure the kernels against.

Written to be read, and as fast as plain Python is when written with care: Python ints (they never overflow)
and floats, table rows with __slots__ (reference/records.py), dicts and lists; what an event makes (a working
order, an order, a reject, a fill) is one msgspec Struct each; a few small helpers are written out where they run
for every order, and say so. It shares nothing with `kernels/` but the contract (the constants of
`kernels/dtypes.py`, the region and ring ids) and the transition table the state carries. Money is computed
in the kernels' operation order and running totals are kept the kernels' way (`total += new - old`), so kernel
and reference agree bit for bit.

Where a kernel rule is wrong for a trading system, this reference has the right rule, marked `RIGHT WAY:` with
the reason, and the property tests fail until the kernel agrees. (None at present: the stale-timestamp
overflow, the NaN quantity, the int64 price overflow, the absurd fill price, the order-ring overwrite and the
exposure check at stale marks were fixed in the kernels; tests/kernels/test_rules.py keeps an example of each.)

The working-order table is modelled as {slot: order} with a LIFO free-slot stack (order ids carry their slot,
so the slot choice is part of the contract); the best working prices of an account on an instrument are the
max and min of a multiset of its working prices ({price: orders}), not kept in linked lists with counts.

Outputs: the orders, rejects and fills rings are modelled as the kernels' bounded rings copied from a state
(`Ring`: full means dropped and counted), or, for a stream (`unbounded=True`), as lists the caller drains
(`Outbox`: the batch never lets a ring fill, it stops and hands the rest on instead).
"""
import math

from kernels.arena import (
    RING_FILLS, RING_ORDERS, RING_REJECTS, RING_REPORTS, RING_SIGNALS, S_CLOCK_NS, S_FREE_TOP, S_NEXT_COOLDOWN_NS,
    S_ORDER_GEN,
)
from kernels.dtypes import (
    ACTIVE, BREAKER_ACTION_REDUCE, C_BREAKER_TRIPS, C_FILLS, C_FILL_OFF_BAND, C_FILL_RING_FULL, C_ORDERS,
    C_ORDERS_ACKED, C_ORDERS_CANCELED, C_ORDERS_FILLED, C_ORDERS_REJECTED, C_RECONCILE_FILLS, C_RECONCILE_MISMATCH,
    C_REJECTS, C_REJECT_RING_FULL, C_REPORT_INVALID, C_REPORT_MISMATCH, C_REPORT_OVERFILL, C_REPORT_UNKNOWN_ORDER,
    C_SHADOW_ORDERS, C_SHADOW_REJECTS, C_SIGNAL_NO_CHANGE, C_SIGNAL_UNKNOWN_ID, C_SIGNAL_UNKNOWN_INSTRUMENT,
    C_SIGNAL_UNKNOWN_SOURCE, EV_COOLDOWN, EV_TRIP_HALT, EV_TRIP_REDUCE, EXEC_ACK, EXEC_CANCELED, EXEC_FILL,
    EXEC_PARTIAL_FILL, EXEC_REJECT, EXEC_STATUS, FILL_OFF_BAND, FILL_OVERFILL, FILL_RECONCILED, NO_PRICE, NO_TRIP,
    N_REASONS, ORDER_MARKET, ORDER_SLOT_BITS, REDUCING, R_DUPLICATE, R_DUPLICATE_ORDER, R_GROSS_MAX, R_KILL_SWITCH,
    R_LOSS_ACCOUNT, R_LOSS_STRATEGY, R_MARK_STALE, R_NET_MAX, R_NOTIONAL_MAX, R_NOT_ACTIVE, R_NOT_FINITE,
    R_NOT_TRADABLE, R_NO_REFERENCE, R_OPEN_ORDERS_MAX, R_ORDER_TABLE_FULL, R_OUT_OF_ORDER, R_POSITION_MAX,
    R_PRICE_COLLAR, R_PRICE_INVALID, R_QTY_INVALID, R_QTY_LOT, R_QTY_MAX, R_RATE, R_RESTRICTED, R_SELF_MATCH,
    R_SIDE_BLOCKED, R_SIDE_BLOCKED_ACCOUNT, R_SIGNAL_RANGE, R_STALE, SIDES_BUY, SIDES_SELL, SIDE_BUY, SIDE_SELL,
    SIGNAL_ORDER, SIGNAL_TARGET, STATUS_UNKNOWN, STATUS_WORKING, TRIP_CONSECUTIVE_REJECTS, TRIP_DRAWDOWN,
    TRIP_FILL_RATE, TRIP_LOSS, TRIP_OFF_BAND_FILLS, TRIP_REJECT_RATIO,
)
from kernels.rings import HEAD, TAIL
from reference.records import (
    WORKING_FIELDS, Account, Exposure, FillRecord, Instrument, OrderRecord, Position, RejectRecord, ReportRecord,
    SignalRecord, Strategy, WorkingOrder, row_record,
)

QTY_CLAMP = 1 << 62   # quantities and prices beyond this many units/ticks are clamped (and then rejected)
SLOT_MASK = (1 << ORDER_SLOT_BITS) - 1
NEVER = (1 << 63) - 1  # "no cool-down due"
ORDER_FIELDS = WORKING_FIELDS  # what a working order is (the kernels' prev/next links are theirs)
# The contract's R_* bits are numpy uint32 scalars; rebound here as Python ints, so that a mask is a Python int
# (numpy scalar arithmetic costs ~5x a Python int's, on every rule of every order).
globals().update({name: int(value) for name, value in list(globals().items()) if name.startswith("R_")})


class Ring:
    """A bounded ring of records with monotonic head/tail sequences, as the kernels' (it holds head - tail)."""

    def __init__(self, rows, cls, head, tail):
        self.cls = cls
        self.slots = [row_record(row, cls) for row in rows]
        self.head, self.tail = int(head), int(tail)

    def room(self):
        return len(self.slots) - (self.head - self.tail)

    def put(self, record):
        """Append a record at the head; False (nothing written) when the ring is full, else True."""
        if self.head - self.tail >= len(self.slots):
            return False
        self.slots[self.head % len(self.slots)] = record
        self.head += 1
        return True

    def push(self, **values):
        """`put` a record of these field values (the others 0)."""
        return self.put(self.cls(**values))


class Outbox(list):
    """An unbounded ring: records in the order they were made, for the caller to read and clear. `put` is the
    list's own append (no Python call per record): it returns None, never False, as a ring that is never full."""
    __slots__ = ()
    put = list.append


class Reference:
    """The engine state as plain Python objects, and the event rules over it."""

    def __init__(self, k, unbounded=False):
        """Copy a kernel state (anything with the arena's region names as attributes: a tests KernelState, an
        engine/state.py EngineState). `unbounded`: orders, rejects and fills go to `Outbox` lists and there are
        no inbound rings (a stream feeds events one by one); else the five rings are copied as they are."""
        self.instruments = [row_record(row, Instrument) for row in k.instruments]
        self.strategies = [row_record(row, Strategy) for row in k.strategies]
        self.accounts = [row_record(row, Account) for row in k.accounts]
        n_strategies, n_instruments = k.positions.shape
        self.positions = {(s, i): row_record(k.positions[s, i], Position)
                          for s in range(n_strategies) for i in range(n_instruments)}
        self.exposures = {(a, i): row_record(k.exposures[a, i], Exposure)
                          for a in range(len(self.accounts)) for i in range(n_instruments)}
        live = [int(slot) for slot in k.open_orders["live"].nonzero()[0]]
        self.working = {slot: row_record(k.open_orders[slot], WorkingOrder, WORKING_FIELDS) for slot in live}
        self.working_prices = {}  # (account, instrument, side) -> {px_ticks: working orders at it}
        for o in self.working.values():
            self.add_working_price(o)
        self.free = k.free_slots[:int(k.scalars[S_FREE_TOP])].tolist()
        self.order_gen = int(k.scalars[S_ORDER_GEN])
        ptr = k.sub_ptr.tolist()
        self.subscribers = [k.sub_strategy[ptr[sid]:ptr[sid + 1]].tolist() for sid in range(len(ptr) - 1)]
        self.last_seq = k.source_seq.tolist()
        self.counters = k.counters.tolist()
        self.reason_counts = k.reason_counts.tolist()
        self.trip_counts = k.trip_counts.tolist()
        self.transitions = k.transitions.tolist()
        self.clock_ns = int(k.scalars[S_CLOCK_NS])
        self.next_cooldown_ns = int(k.scalars[S_NEXT_COOLDOWN_NS])
        self.venue = None  # where accepted orders go at once (on_order(order, now_ns)); None: an OMS link takes them
        if unbounded:
            self.signals = self.reports = None
            self.orders, self.rejects, self.fills = Outbox(), Outbox(), Outbox()
            return
        rings = [(k.signals, SignalRecord, RING_SIGNALS), (k.orders, OrderRecord, RING_ORDERS),
                 (k.rejects, RejectRecord, RING_REJECTS), (k.reports, ReportRecord, RING_REPORTS),
                 (k.fills, FillRecord, RING_FILLS)]
        self.signals, self.orders, self.rejects, self.reports, self.fills = (
            Ring(rows, cls, k.cursors[ring, HEAD], k.cursors[ring, TAIL]) for rows, cls, ring in rings)

    # ================================================================================== the clock
    def set_clock(self, t):
        """Stream time moves to t (never back); tripped strategies whose cool-down is due come back. The batch
        looks for them only once the earliest cool-down it knows of is due (`next_cooldown_ns`, lowered by each
        trip): the same moments, so the same results."""
        if t > self.clock_ns:
            self.clock_ns = t
        if self.clock_ns >= self.next_cooldown_ns:
            self.next_cooldown_ns = self.cool_down(self.clock_ns)
        return self.clock_ns

    # ================================================================================== signals
    def process_signals(self, now_ns, max_orders):
        """Signals waiting in the signal ring, in order, each at now_ns -> orders and rejects; returns the
        number of orders placed. Stops before a signal whose subscribers could exceed the orders still allowed:
        `max_orders`, and never more than the order ring has room for (no overwrite)."""
        max_orders = min(max_orders, self.orders.room())
        placed = 0
        ring = self.signals
        while ring.tail < ring.head:
            sig = ring.slots[ring.tail % len(ring.slots)]
            if self.fanout(sig) > max_orders - placed:
                break
            placed += self.on_signal(sig, self.set_clock(now_ns))
            ring.tail += 1
        return placed

    def fanout(self, sig):
        if sig.source >= len(self.last_seq) or sig.signal_id >= len(self.subscribers) \
                or sig.instrument >= len(self.instruments):
            return 0
        return len(self.subscribers[sig.signal_id])

    def on_signal(self, sig, now_ns):
        """One signal: fan out, size, check, book or reject; returns the orders placed."""
        if sig.source >= len(self.last_seq):
            self.counters[C_SIGNAL_UNKNOWN_SOURCE] += 1
        elif sig.signal_id >= len(self.subscribers) or not self.subscribers[sig.signal_id]:
            self.counters[C_SIGNAL_UNKNOWN_ID] += 1
        elif sig.instrument >= len(self.instruments):
            self.counters[C_SIGNAL_UNKNOWN_INSTRUMENT] += 1
        else:
            bad = self.signal_reasons(sig, now_ns)
            if sig.seq > self.last_seq[sig.source]:
                self.last_seq[sig.source] = sig.seq
            placed = 0
            for s in self.subscribers[sig.signal_id]:
                placed += self.signal_to_strategy(sig, s, bad, now_ns)
            return placed
        return 0

    def signal_reasons(self, sig, now_ns):
        """Reasons that condemn the signal itself, whatever strategy it reaches."""
        r = 0
        last = self.last_seq[sig.source]
        if sig.seq == last:
            r |= R_DUPLICATE
        elif sig.seq < last:
            r |= R_OUT_OF_ORDER
        if sig.ttl_ns > 0 and now_ns - sig.ts_ns > sig.ttl_ns:   # exact: no int64 wrap-around for any ts_ns
            r |= R_STALE
        if not (math.isfinite(sig.value) and math.isfinite(sig.price)):
            r |= R_NOT_FINITE
        if sig.kind == SIGNAL_TARGET:
            if abs(sig.value) > 1.0:
                r |= R_SIGNAL_RANGE
        elif sig.kind == SIGNAL_ORDER:
            # fractional only if a finite number with a fraction (NaN and inf are NOT_FINITE, not a lot issue)
            if math.isfinite(sig.value) and sig.value != math.floor(sig.value):
                r |= R_QTY_LOT
        else:
            r |= R_SIGNAL_RANGE
        return r

    def signal_to_strategy(self, sig, s, bad, now_ns):
        """One signal reaches strategy s: size it, check it, book it or reject it. Returns orders placed."""
        st = self.strategies[s]
        i = sig.instrument
        ins = self.instruments[i]
        live = st.shadow_of - 1  # a shadow version sizes and checks against the live one's position, places nothing
        owner = s if live < 0 else live
        p = self.positions[owner, i]
        st.signals += 1
        delta = order_delta(sig.kind, sig.value, st.max_position, ins.lot_size, p.qty + p.open_buy - p.open_sell)
        side = SIDE_BUY if delta > 0 else SIDE_SELL
        qty = abs(delta)
        px_ticks = limit_ticks(sig.price, ins.tick_size, side)
        if bad == 0 and delta == 0 and sig.kind == SIGNAL_TARGET:
            self.counters[C_SIGNAL_NO_CHANGE] += 1
            return 0
        reasons = bad
        if bad == 0:
            refill_tokens(st, now_ns)
            reasons = self.order_reasons(st, i, p, side, qty, px_ticks, now_ns)
        placed = 0
        if reasons == 0 and live >= 0:
            self.count_order(st, side, qty, px_ticks, now_ns)
            self.counters[C_SHADOW_ORDERS] += 1
        elif reasons == 0:
            self.place_order(sig, s, side, qty, px_ticks, now_ns)
            self.counters[C_ORDERS] += 1
            placed = 1
        else:
            st.rejects += 1
            counts = self.reason_counts[s]
            for bit in range(N_REASONS):
                if reasons >> bit & 1:
                    counts[bit] += 1
            if live >= 0:
                self.counters[C_SHADOW_REJECTS] += 1
            else:
                self.counters[C_REJECTS] += 1
                reject = RejectRecord(sig.seq, sig.source, s, i, side, qty, px_ticks, reasons, now_ns)
                if self.rejects.put(reject) is False:
                    self.counters[C_REJECT_RING_FULL] += 1
        if bad == 0 and not reasons & R_NOT_ACTIVE:  # signal or lifecycle rejects: no breaker input
            self.record_outcome(s, reasons != 0, now_ns)
        return placed

    # ---------------------------------------------------------------------------------- pre-trade risk
    def order_reasons(self, st, i, p, side, qty, px_ticks, now_ns):
        """Every pre-trade rule for an order of strategy st on instrument i (p: the position it sizes against: its
        own, or the live version's for a shadow), each setting its own bit (0 = accept)."""
        account = self.accounts[st.account]
        ins = self.instruments[i]
        e = self.exposures[st.account, i]
        held = p.qty
        # reduces(), written out here and below (exposure_of, money_per_unit, pnl_of): this runs for every order
        if side == SIDE_BUY:
            reducing = held < 0 and held + p.open_buy + qty <= 0
        else:
            reducing = held > 0 and held - p.open_sell - qty >= 0
        r = 0
        if st.state != ACTIVE and not (st.state == REDUCING and reducing):
            r |= R_NOT_ACTIVE
        if account.kill or st.kill:
            r |= R_KILL_SWITCH
        if not ins.tradable:
            r |= R_NOT_TRADABLE
        if not p.allowed:
            r |= R_RESTRICTED
        side_bit = SIDES_BUY if side == SIDE_BUY else SIDES_SELL
        if not reducing and not st.sides & side_bit:
            r |= R_SIDE_BLOCKED
        if not reducing and not account.sides & side_bit:
            r |= R_SIDE_BLOCKED_ACCOUNT
        if st.duplicate_window_ns > 0 and now_ns - st.last_order_ns < st.duplicate_window_ns \
                and (st.last_side, st.last_qty, st.last_px_ticks) == (side, qty, px_ticks):
            r |= R_DUPLICATE_ORDER
        if qty <= 0:
            r |= R_QTY_INVALID
        elif qty % ins.lot_size != 0:
            r |= R_QTY_LOT
        if qty > st.max_order_qty:
            r |= R_QTY_MAX
        if px_ticks <= 0:
            r |= R_PRICE_INVALID
        if float(qty) * abs(float(px_ticks)) * (ins.tick_size * ins.multiplier) > st.max_order_notional:
            r |= R_NOTIONAL_MAX
        ref = ins.mark_ticks
        if ins.max_mark_age_ns > 0 and (ins.marked_ns == 0 or now_ns - ins.marked_ns > ins.max_mark_age_ns):
            r |= R_MARK_STALE
        if ref <= 0:
            r |= R_NO_REFERENCE
        elif abs(px_ticks - ref) * 100.0 > ins.band_pct * ref:
            r |= R_PRICE_COLLAR
        # position: the worst case on the order's side, working orders included, may not grow past the limit
        before = p.qty + p.open_buy if side == SIDE_BUY else p.qty - p.open_sell
        after = before + side * qty
        if abs(after) > st.max_position and abs(after) > abs(before):
            r |= R_POSITION_MAX
        # account exposure, worst case with this order working; an order over the limit is rejected only if
        # it adds exposure (the stored e.gross and account.net are at the current marks: the batch re-marked
        # moved instruments first)
        unit = ins.mark_ticks * ins.tick_size * ins.multiplier
        open_buy, open_sell = (e.open_buy + qty, e.open_sell) if side == SIDE_BUY else (e.open_buy, e.open_sell + qty)
        gross = max(abs(e.qty + open_buy), abs(e.qty - open_sell)) * unit
        net = (e.qty + open_buy - open_sell) * unit
        gross_total = account.gross - e.gross + gross
        net_total = account.net - e.net + net
        if gross_total > account.max_gross_notional and gross > e.gross:
            r |= R_GROSS_MAX
        if abs(net_total) > account.max_net_notional and abs(net_total) > abs(account.net):
            r |= R_NET_MAX
        if st.tokens < 1.0:
            r |= R_RATE
        if st.open_orders >= st.max_open_orders:
            r |= R_OPEN_ORDERS_MAX
        if not self.free:
            r |= R_ORDER_TABLE_FULL
        # losses stop new risk, never a reduction
        if not reducing:
            if st.realized + st.unrealized - st.fees <= -st.daily_loss_limit:
                r |= R_LOSS_STRATEGY
            if account.realized + account.unrealized - account.fees <= -account.daily_loss_limit:
                r |= R_LOSS_ACCOUNT
        # self-match: would it cross a working order of the same account on the same instrument?
        other = self.working_prices.get((st.account, i, -side))
        if other:  # the best of the other side: its lowest sell for a buy, its highest buy for a sell
            if side == SIDE_BUY:
                if st.order_type == ORDER_MARKET or px_ticks >= min(other):
                    r |= R_SELF_MATCH
            elif st.order_type == ORDER_MARKET or px_ticks <= max(other):
                r |= R_SELF_MATCH
        return r

    def best_prices(self, a, i):
        """((highest working buy, orders at it), (lowest working sell, orders at it)) of account a on
        instrument i; (NO_PRICE, 0) for a side without working orders."""
        def best(side, pick):
            prices = self.working_prices.get((a, i, side))
            if not prices:
                return NO_PRICE, 0
            price = pick(prices)
            return price, prices[price]
        return best(SIDE_BUY, max), best(SIDE_SELL, min)

    def add_working_price(self, o):
        key = (o.account, o.instrument, o.side)
        prices = self.working_prices.get(key)
        if prices is None:
            prices = self.working_prices[key] = {}
        prices[o.px_ticks] = prices.get(o.px_ticks, 0) + 1

    def remove_working_price(self, o):
        prices = self.working_prices[o.account, o.instrument, o.side]
        left = prices[o.px_ticks] - 1
        if left:
            prices[o.px_ticks] = left
        else:
            del prices[o.px_ticks]

    # ---------------------------------------------------------------------------------- booking
    def place_order(self, sig, s, side, qty, px_ticks, now_ns):
        """Book an accepted order: working-order table, open quantities, exposure, tokens, order ring; hand it
        to the venue at once when one runs here. Return the order record."""
        st = self.strategies[s]
        i, a = sig.instrument, st.account
        ins = self.instruments[i]
        slot = self.free.pop()
        order_id = (self.order_gen << ORDER_SLOT_BITS) | slot
        self.order_gen += 1
        self.working[slot] = WorkingOrder(order_id, s, st.deploy, a, i, side, 1, st.order_type, 0, qty, qty,
                                          px_ticks, now_ns, sig.ts_ns, ins.mark_ticks)
        key = (a, i, side)  # add_working_price(o) and add_open(s, a, i, side, qty), written out: every order
        prices = self.working_prices.get(key)
        if prices is None:
            prices = self.working_prices[key] = {}
        prices[px_ticks] = prices.get(px_ticks, 0) + 1
        p, e = self.positions[s, i], self.exposures[a, i]
        if side == SIDE_BUY:
            p.open_buy += qty
            e.open_buy += qty
        else:
            p.open_sell += qty
            e.open_sell += qty
        self.refresh_exposure(a, i)
        st.open_orders += 1
        self.count_order(st, side, qty, px_ticks, now_ns)
        order = OrderRecord(order_id, s, st.deploy, a, i, side, st.order_type, qty, px_ticks, px_ticks * ins.tick_size,
                            now_ns, sig.seq, sig.source, sig.ts_ns)
        if self.orders.put(order) is False:
            raise AssertionError("process_signals caps max_orders at the order ring's room")
        if self.venue is not None:
            self.venue.on_order(order, now_ns)
        return order

    @staticmethod
    def count_order(st, side, qty, px_ticks, now_ns):
        """An accepted order (placed, or a shadow's): its count, tokens, units by side, and the last order the
        duplicate-order rule compares with."""
        st.tokens -= 1.0
        st.orders += 1
        if side == SIDE_BUY:
            st.ordered_buy += qty
        else:
            st.ordered_sell += qty
        st.last_side, st.last_qty, st.last_px_ticks, st.last_order_ns = side, qty, px_ticks, now_ns

    def add_open(self, s, a, i, side, qty):
        """Working quantity changes by `qty` (negative to release) on the order's side."""
        p, e = self.positions[s, i], self.exposures[a, i]
        if side == SIDE_BUY:
            p.open_buy += qty
            e.open_buy += qty
        else:
            p.open_sell += qty
            e.open_sell += qty
        self.refresh_exposure(a, i)

    def release(self, slot):
        """The order in `slot` is done: its leaves stop counting as open and the slot is free again."""
        o = self.working.pop(slot)
        self.remove_working_price(o)
        self.add_open(o.strategy, o.account, o.instrument, o.side, -o.leaves)
        self.strategies[o.strategy].open_orders -= 1
        self.free.append(slot)

    def refresh_exposure(self, a, i):
        e, ins, account = self.exposures[a, i], self.instruments[i], self.accounts[a]
        unit = ins.mark_ticks * ins.tick_size * ins.multiplier  # exposure_of(..., money_per_unit(ins)), written out
        gross = max(abs(e.qty + e.open_buy), abs(e.qty - e.open_sell)) * unit
        net = (e.qty + e.open_buy - e.open_sell) * unit
        account.gross += gross - e.gross
        account.net += net - e.net
        e.gross, e.net = gross, net

    # ---------------------------------------------------------------------------------- breakers
    def apply_event(self, st, event):
        target = self.transitions[st.state][event]
        if target < 0:
            return False
        st.state = target
        return True

    def trip(self, s, cause, now_ns):
        st = self.strategies[s]
        event = EV_TRIP_REDUCE if st.breaker_action == BREAKER_ACTION_REDUCE else EV_TRIP_HALT
        if self.apply_event(st, event):
            st.trip_cause = cause
            st.tripped_at_ns = now_ns
            self.trip_counts[s][cause] += 1
            self.counters[C_BREAKER_TRIPS] += 1
            if st.cooldown_ns > 0:
                self.next_cooldown_ns = min(self.next_cooldown_ns, now_ns + st.cooldown_ns)

    def record_outcome(self, s, rejected, now_ns):
        """One order outcome into the reject breakers (consecutive rejects, reject ratio in a window)."""
        st = self.strategies[s]
        if now_ns - st.window_start_ns >= st.ratio_window_ns:
            st.window_start_ns = now_ns
            st.window_orders = 0
            st.window_rejects = 0
        st.window_orders += 1
        if rejected:
            st.window_rejects += 1
            st.consecutive_rejects += 1
        else:
            st.consecutive_rejects = 0
        if 0 < st.max_consecutive_rejects <= st.consecutive_rejects:
            self.trip(s, TRIP_CONSECUTIVE_REJECTS, now_ns)
        elif (st.max_reject_ratio > 0 and st.window_orders >= st.ratio_min_orders
              and st.window_rejects >= st.max_reject_ratio * st.window_orders):
            self.trip(s, TRIP_REJECT_RATIO, now_ns)

    def check_fills(self, s, off_band, now_ns):
        """A fill into the fill-rate breaker's window, an off-band one into its count; trip when over."""
        st = self.strategies[s]
        if now_ns - st.fill_window_start_ns >= st.fill_window_ns:
            st.fill_window_start_ns = now_ns
            st.window_fills = 0
        st.window_fills += 1
        if off_band:
            st.off_band_fills += 1
        if 0 < st.max_fills_per_window < st.window_fills:
            self.trip(s, TRIP_FILL_RATE, now_ns)
        elif off_band and 0 < st.max_off_band_fills <= st.off_band_fills:
            self.trip(s, TRIP_OFF_BAND_FILLS, now_ns)

    def check_pnl(self, s, now_ns):
        """Track the P&L peak; trip on the loss limit, else on the drawdown from the peak."""
        st = self.strategies[s]
        pnl = pnl_of(st)
        if pnl > st.peak_pnl:
            st.peak_pnl = pnl
        if st.loss_limit > 0 and pnl <= -st.loss_limit:
            self.trip(s, TRIP_LOSS, now_ns)
        elif st.max_drawdown > 0 and st.peak_pnl - pnl >= st.max_drawdown:
            self.trip(s, TRIP_DRAWDOWN, now_ns)

    def cool_down(self, now_ns):
        """Tripped strategies whose cool-down has passed come back, with their breakers started afresh; returns
        when the next one may (NEVER: none)."""
        next_ns = NEVER
        for st in self.strategies:
            if st.trip_cause == NO_TRIP or st.cooldown_ns <= 0:
                continue
            due = st.tripped_at_ns + st.cooldown_ns
            if now_ns >= due and self.apply_event(st, EV_COOLDOWN):
                self.reset_breakers(st, now_ns)
            elif due > now_ns:
                next_ns = min(next_ns, due)
        return next_ns

    @staticmethod
    def reset_breakers(st, now_ns):
        st.trip_cause = NO_TRIP
        st.tripped_at_ns = 0
        st.consecutive_rejects = 0
        st.window_start_ns = now_ns
        st.window_orders = 0
        st.window_rejects = 0
        st.fill_window_start_ns = now_ns
        st.window_fills = 0
        st.off_band_fills = 0
        st.peak_pnl = pnl_of(st)

    # ================================================================================== market data
    def apply_mark(self, i, mark_ticks, now_ns):
        """Market data moved instrument i's mark at now_ns: every account's exposure and the P&L of every
        strategy holding it follow at once (and its P&L breakers judge it); returns 1, 0 for an unknown one."""
        if not 0 <= i < len(self.instruments):
            return 0
        now = self.set_clock(now_ns)
        self.instruments[i].mark_ticks = mark_ticks
        self.on_mark(i, now)
        return 1

    def on_mark(self, i, now_ns):
        """Instrument i's mark moved (market data set it): exposure of every account and P&L of every strategy
        holding it follow, and the P&L breakers judge it."""
        self.instruments[i].marked_ns = now_ns
        for a in range(len(self.accounts)):
            self.refresh_exposure(a, i)
        for s in range(len(self.strategies)):
            p = self.positions[s, i]
            if p.qty != 0 or p.unrealized != 0.0:
                self.remark(s, i)
                self.check_pnl(s, now_ns)

    def remark(self, s, i):
        """Unrealized P&L of strategy s on instrument i at the mark; strategy and account totals follow."""
        p, ins, st = self.positions[s, i], self.instruments[i], self.strategies[s]
        unrealized = 0.0
        if p.qty != 0:
            unrealized = (ins.mark_ticks - p.avg_px_ticks) * p.qty * ins.tick_size * ins.multiplier
        change = unrealized - p.unrealized
        p.unrealized = unrealized
        st.unrealized += change
        self.accounts[st.account].unrealized += change

    # ================================================================================== apply_reports
    def apply_reports(self, now_ns):
        """Execution reports waiting in the report ring -> working orders, positions, P&L; returns fills."""
        fills = 0
        ring = self.reports
        for seq in range(ring.tail, ring.head):
            fills += self.apply_report(ring.slots[seq % len(ring.slots)], self.set_clock(now_ns))
        ring.tail = ring.head
        return fills

    def apply_report(self, rep, now_ns):
        slot = rep.order_id & SLOT_MASK
        o = self.working.get(slot)
        if o is None or o.order_id != rep.order_id:
            self.counters[C_REPORT_UNKNOWN_ORDER] += 1
            return 0
        if o.strategy != rep.strategy or o.deploy != rep.deploy:
            self.counters[C_REPORT_MISMATCH] += 1
            return 0
        if rep.exec_type == EXEC_ACK:
            if not o.acked:
                self.counters[C_ORDERS_ACKED] += 1
            o.acked = 1
            return 0
        if rep.exec_type in (EXEC_REJECT, EXEC_CANCELED):
            self.counters[C_ORDERS_REJECTED if rep.exec_type == EXEC_REJECT else C_ORDERS_CANCELED] += 1
            self.release(slot)
            return 0
        if rep.exec_type == EXEC_STATUS:
            return self.apply_status(slot, o, rep, now_ns)
        if (rep.exec_type not in (EXEC_FILL, EXEC_PARTIAL_FILL) or rep.qty <= 0
                or not (math.isfinite(rep.price) and rep.price > 0) or not math.isfinite(rep.fee)):
            self.counters[C_REPORT_INVALID] += 1
            return 0
        return self.apply_fill(slot, o, rep, rep.qty, rep.fee, 0, rep.exec_type == EXEC_FILL, now_ns)

    def apply_status(self, slot, o, rep, now_ns):
        """The OMS's view of the order (reconciliation): missed fills applied as one, flagged; an order the OMS
        no longer works released; every difference counted."""
        filled, code = rep.qty, rep.reason
        if filled < 0 or code > STATUS_UNKNOWN or rep.leaves < 0 or not math.isfinite(rep.fee) \
                or (filled > 0 and not (math.isfinite(rep.price) and rep.price > 0)):
            self.counters[C_REPORT_INVALID] += 1
            return 0
        missed = filled - (o.qty - o.leaves)
        if missed != 0 or code != STATUS_WORKING or rep.leaves != o.leaves - max(missed, 0):
            self.counters[C_RECONCILE_MISMATCH] += 1
        if code == STATUS_WORKING and not o.acked:
            self.counters[C_ORDERS_ACKED] += 1
            o.acked = 1
        applied = 0
        if missed > 0:
            self.counters[C_RECONCILE_FILLS] += 1
            applied = self.apply_fill(slot, o, rep, missed, rep.fee * missed / filled, FILL_RECONCILED, False, now_ns)
        if code != STATUS_WORKING and self.working.get(slot) is o:
            self.counters[C_ORDERS_CANCELED] += 1
            self.release(slot)
        return applied

    def apply_fill(self, slot, o, rep, qty, fee, flags, final, now_ns):
        """A fill of `qty` at the report's price with `fee`; `final`: the OMS says the order is done."""
        s, i, a = o.strategy, o.instrument, o.account
        ins, p, st, account = self.instruments[i], self.positions[s, i], self.strategies[s], self.accounts[a]
        px_ticks = rep.price / ins.tick_size
        # a fill price beyond QTY_CLAMP ticks (the bound of every order price) is malformed: booked, it would make
        # the average price inf and P&L inf - inf = NaN, which no loss limit catches
        if not px_ticks <= QTY_CLAMP:
            self.counters[C_REPORT_INVALID] += 1
            return 0
        if qty > o.leaves:   # the contract clamps an overfill to the leaves, and flags it
            self.counters[C_REPORT_OVERFILL] += 1
            flags |= FILL_OVERFILL
            qty = o.leaves
        if ins.mark_ticks > 0 and abs(px_ticks - ins.mark_ticks) * 100.0 > ins.band_pct * ins.mark_ticks:
            self.counters[C_FILL_OFF_BAND] += 1  # the venue's fact: applied, flagged
            flags |= FILL_OFF_BAND
        realized = fill_position(p, o.side, qty, px_ticks) * ins.tick_size * ins.multiplier
        p.realized += realized
        p.fees += fee
        st.realized += realized
        st.fees += fee
        st.fills += 1
        st.filled_qty += qty
        account.realized += realized
        account.fees += fee
        self.exposures[a, i].qty += o.side * qty
        o.leaves -= qty
        self.add_open(s, a, i, o.side, -qty)
        self.remark(s, i)
        self.counters[C_FILLS] += 1
        if self.fills.put(FillRecord(o.order_id, s, o.deploy, a, i, o.side, rep.exec_type, flags, qty, o.leaves,
                                         rep.price, fee, realized, rep.ts_ns, now_ns, o.ts_ns, o.signal_ts_ns,
                                         o.px_ticks, o.arrival_mark_ticks)) is False:
            self.counters[C_FILL_RING_FULL] += 1
        if o.leaves == 0 or final:
            self.counters[C_ORDERS_FILLED] += 1
            self.release(slot)
        self.check_fills(s, flags & FILL_OFF_BAND != 0, now_ns)
        self.check_pnl(s, now_ns)
        return 1


# ====================================================================================== pure rules
def clamp_to_int(x):
    """A float quantity or price -> int, truncated toward zero, clamped to +-QTY_CLAMP."""
    if x > QTY_CLAMP:
        return QTY_CLAMP
    if x < -QTY_CLAMP:
        return -QTY_CLAMP
    return int(x)


def order_delta(kind, value, max_position, lot_size, working_qty):
    """Signed quantity to trade. TARGET: value x max_position in whole lots (toward zero), minus what the
    strategy holds and has working. ORDER: the value itself (lot rules are risk's)."""
    if not math.isfinite(value):
        return 0
    if kind == SIGNAL_TARGET:
        target = clamp_to_int(value * max_position)
        whole_lots = abs(target) // lot_size * lot_size
        return (whole_lots if target >= 0 else -whole_lots) - working_qty
    if kind == SIGNAL_ORDER:
        return clamp_to_int(value)
    return 0


def limit_ticks(price, tick_size, side):
    """Signal price -> ticks, rounded passively (a buy down, a sell up); a whole number of ticks up to float
    noise (relative 1e-9) is taken as that number."""
    if not math.isfinite(price):
        return 0
    ticks = price / tick_size
    # clamped while still a float: 1e20 or inf ticks is +2**62 (and then rejected), never an int64 overflow
    if ticks >= QTY_CLAMP:
        return QTY_CLAMP
    if ticks <= -QTY_CLAMP:
        return -QTY_CLAMP
    nearest = round(ticks)
    if abs(ticks - nearest) < 1e-9 * max(1.0, abs(ticks)):
        return nearest
    return math.floor(ticks) if side == SIDE_BUY else math.ceil(ticks)


def reduces(qty_held, open_buy, open_sell, side, qty):
    """True when the order can only bring the position toward zero, even if every working order fills."""
    if side == SIDE_BUY:
        return qty_held < 0 and qty_held + open_buy + qty <= 0
    return qty_held > 0 and qty_held - open_sell - qty >= 0


def refill_tokens(st, now_ns):
    """Token bucket: rate_per_s tokens a second, at most `burst` saved up."""
    elapsed = now_ns - st.tokens_ts_ns
    if elapsed > 0:
        st.tokens = min(st.burst, st.tokens + elapsed * 1e-9 * st.rate_per_s)
        st.tokens_ts_ns = now_ns


def money_per_unit(ins):
    return ins.mark_ticks * ins.tick_size * ins.multiplier


def exposure_of(qty, open_buy, open_sell, unit):
    """(gross, net) money of a holding with working orders: gross is the worse side if all of one fills."""
    gross = max(abs(qty + open_buy), abs(qty - open_sell)) * unit
    net = (qty + open_buy - open_sell) * unit
    return gross, net


def pnl_of(record):
    return record.realized + record.unrealized - record.fees


def fill_position(p, side, qty, px_ticks):
    """Move a position by a fill at px_ticks (float); returns the realized P&L in ticks x units.
    Adding to a position averages the price in; reducing realizes against the average; a flip through zero
    starts the new position at the fill price; flat has average 0."""
    held = p.qty
    realized = 0.0
    if held == 0 or (held > 0) == (side == SIDE_BUY):
        p.avg_px_ticks = (p.avg_px_ticks * abs(held) + px_ticks * qty) / (abs(held) + qty)
    else:
        closed = min(qty, abs(held))
        realized = (px_ticks - p.avg_px_ticks) * closed * (1 if held > 0 else -1)
        after = held + side * qty
        if after == 0:
            p.avg_px_ticks = 0.0
        elif (after > 0) != (held > 0):
            p.avg_px_ticks = float(px_ticks)
    p.qty = held + side * qty
    return realized
