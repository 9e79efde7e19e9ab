"""The simulated venue (an OMS and the market behind it): Order frames in, ExecutionReport frames out, filled
against the market data it is fed.

`SimulatedOms` is the core, pure Python over msgspec Structs, with the clock injected (`now_ns` arguments), so
the same seed, inputs and clock give the same reports, byte for byte. sim/servers.py serves it over TCP and
Aeron; inside the engine, its compiled twin kernels/venue.py runs in the batch.

The rules are the compiled venue's (kernels/venue.py, the stage of the batch when [oms] kind = "sim"), stated in
full there; a property test holds the two to the same reports, bit for bit. In short (what an order gets, in
report order):
- Refused at once, one REJECT and nothing else: qty <= 0 (REJECT_QTY); a limit or IOC price that is NaN,
  infinite, zero or negative (REJECT_PRICE); the id of an order still working here (REJECT_DUPLICATE); a
  market order with nothing to price it (REJECT_NO_MARKET); and, drawn with `reject_ratio`, REJECT_RANDOM.
- Otherwise an ACK (leaves = qty), `ack_latency_us` after the order arrived.
- The touch is the ask for a buy and the bid for a sell; a side quoted 0 (unknown) falls back to last.
  With no touch at all (no market data yet for the instrument, or every price 0) an order fills at its own
  limit price: the simulator then trusts the engine's price, whose collar already checked it.
- Market order: fills at the touch (at its own price if there is no touch and the price is usable).
- Limit or IOC that is marketable (buy px >= touch, sell px <= touch): fills at the touch.
- IOC that is not marketable: CANCELED (leaves 0).
- Limit that is not marketable: rests (the ACK only). Market data that later crosses it (buy: ask or, with
  no ask, last <= px; sell: bid or last >= px) fills it at its own limit price, as the passive side of that
  trade. With `resting_ttl_us` > 0 an order still resting that long after it arrived is CANCELED.
- A fill is reported `fill_latency_us` after the order became fillable (its arrival, or the market data
  that crossed it), never before its ACK. With `partial_fill_ratio` a fill of qty >= 2 is split at random
  into 2 or 3 reports: PARTIAL_FILLs then one FILL, `partial_fill_gap_us` apart (0: all at the same time),
  whose quantities add up to qty and whose leaves count down to 0. Each fill's fee: qty x `fee_per_unit`
  + qty x price x multiplier x bps / 10^4 (`taker_fee_bps` for a fill at once, `maker_fee_bps` for a resting
  order filled later), rounded half away from zero to the cent; the last fill of an order tops its fees
  up to `min_fee` when one is set (0 leaves maker rebates alone).
- A cancel request CANCELs a resting order `ack_latency_us` after it (never before its ACK); an order whose
  fill is already due keeps it.
- A report's ts_ns is the time it is due; reports come out in due order (ties in the order they were made).

Market data with a NaN, infinite or negative price is ignored and counted, as the engine does. Working ids
are remembered only while the order works (until its FILL or CANCELED is popped), so memory stays
flat over any number of orders.
"""
import heapq
import math
from dataclasses import asdict, dataclass
from typing import Annotated

import msgspec

from kernels.dtypes import (
    EXEC_ACK, EXEC_CANCELED, EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_REJECT, EXEC_STATUS, FRAME_HEADER_SIZE, MSG_CANCEL,
    MSG_MARKET_DATA, MSG_ORDER, MSG_STATUS_REQUEST, NO_SLOT, ORDER_IOC, ORDER_LIMIT, ORDER_MARKET, SIDE_BUY,
    STATUS_DONE, STATUS_UNKNOWN, STATUS_WORKING, VENUE_REJECT_DUPLICATE, VENUE_REJECT_NAMES, VENUE_REJECT_NO_MARKET,
    VENUE_REJECT_PRICE, VENUE_REJECT_QTY, VENUE_REJECT_RANDOM,
)
from kernels import venue as venue_kernels
from kernels.venue import splitmix64
from wire.frames import FRAME_OK, FRAME_TRUNCATED, FrameError, next_frame, read_header
from wire.schema import Cancel, ExecutionReport, MarketData, Order, StatusRequest

Micros = Annotated[int, msgspec.Meta(ge=0, le=60_000_000)]
Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Money = Annotated[float, msgspec.Meta(ge=0.0, le=1e9)]
Bps = Annotated[float, msgspec.Meta(ge=-1000.0, le=1000.0)]  # negative: a rebate
Multiplier = Annotated[float, msgspec.Meta(gt=0.0, le=1e9)]


class SimOmsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The simulated OMS's behaviour. Build it by decoding (msgspec.convert or TOML): constructors do not validate."""
    ack_latency_us: Micros = 50     # order arrival -> ACK or REJECT
    fill_latency_us: Micros = 150   # order fillable -> fill reports (never before the ACK)
    reject_ratio: Ratio = 0.0       # share of valid orders rejected at random (REJECT_RANDOM)
    partial_fill_ratio: Ratio = 0.0  # share of fills (qty >= 2) split into 2-3 partial fills
    partial_fill_gap_us: Micros = 0  # between the parts of a split fill (the first is due as an unsplit fill is)
    fee_per_unit: Money = 0.0       # currency per unit filled
    taker_fee_bps: Bps = 0.0        # of notional, on a fill at arrival (at the touch, or at its price)
    maker_fee_bps: Bps = 0.0        # of notional, on a resting order filled by later market data
    min_fee: Money = 0.0            # the least an order that fills pays, all its fills together
    resting_ttl_us: Micros = 0      # cancel a resting limit order this long after arrival; 0: rest until filled
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0  # of the draws: random rejects and partial splits
    multipliers: tuple[Multiplier, ...] = ()  # by instrument id (notional = qty x price x multiplier); 1 beyond


def configure_venue(state, config):
    """Turn on the compiled venue (kernels/venue.py) of an engine arena with these settings: `state` has the
    arena's views by region name (venue, venue_orders, venue_books)."""
    v = state.venue[0]
    v["on"] = 1
    v["ack_latency_ns"], v["fill_latency_ns"] = config.ack_latency_us * 1000, config.fill_latency_us * 1000
    v["resting_ttl_ns"] = config.resting_ttl_us * 1000
    v["reject_ratio"], v["partial_fill_ratio"] = config.reject_ratio, config.partial_fill_ratio
    v["partial_fill_gap_ns"] = config.partial_fill_gap_us * 1000
    v["taker_fee_bps"], v["maker_fee_bps"] = config.taker_fee_bps, config.maker_fee_bps
    v["fee_per_unit"], v["min_fee"] = config.fee_per_unit, config.min_fee
    v["rng"] = config.seed
    state.venue_orders["prev"] = NO_SLOT
    state.venue_orders["next"] = NO_SLOT
    state.venue_books[:] = NO_SLOT


class Draws:
    """The venue's uniform draws in [0, 1): splitmix64, the top 53 bits / 2**53 (kernels/venue.py)."""
    __slots__ = ("state",)

    def __init__(self, seed):
        self.state = seed

    def random(self):
        self.state, u = splitmix64(self.state)
        return u


cents = venue_kernels.cents.py_func  # the compiled venue's rounding, run as Python: the same fee to the cent



# The venue's own reject codes (ExecutionReport.reason; an OMS's codes are its own, not the engine's bits), the
# compiled venue's (kernels/dtypes.py).
REJECT_RANDOM, REJECT_QTY, REJECT_PRICE = VENUE_REJECT_RANDOM, VENUE_REJECT_QTY, VENUE_REJECT_PRICE
REJECT_DUPLICATE, REJECT_NO_MARKET, REJECT_NAMES = VENUE_REJECT_DUPLICATE, VENUE_REJECT_NO_MARKET, VENUE_REJECT_NAMES

_ORDER_DECODER = msgspec.msgpack.Decoder(Order)
_MARKET_DATA_DECODER = msgspec.msgpack.Decoder(MarketData)
_CANCEL_DECODER = msgspec.msgpack.Decoder(Cancel)
_STATUS_DECODER = msgspec.msgpack.Decoder(StatusRequest)


@dataclass(slots=True)
class SimOmsStats:
    orders: int = 0               # well-formed orders taken
    acks: int = 0                 # reports made, by type
    rejects: int = 0
    partial_fills: int = 0
    fills: int = 0
    canceled: int = 0
    status_replies: int = 0       # answers to StatusRequest (reconciliation)
    filled_qty: int = 0
    fees: float = 0.0
    market_data: int = 0          # market data applied
    market_data_invalid: int = 0  # market data ignored: NaN, infinite or negative price
    malformed: int = 0            # frames whose body is not the message their header claims
    bad_type: int = 0             # frames of a type the OMS does not take (signals, reports)
    bad_header: int = 0           # headers that cannot be trusted (bad version, oversize): the rest is dropped

    def as_dict(self):
        return asdict(self)


class MarketState:
    """The last valid quote per instrument; several simulators (one per TCP connection) may share one."""
    __slots__ = ("quotes",)

    def __init__(self):
        self.quotes = {}  # instrument -> (bid, ask, last); 0 = that price is unknown

    def update(self, md):
        """Take one MarketData; False (and nothing changes) if a price is NaN, infinite or negative."""
        bid, ask, last = md.bid, md.ask, md.last
        if not (0.0 <= bid < math.inf and 0.0 <= ask < math.inf and 0.0 <= last < math.inf):
            return False
        self.quotes[md.instrument] = (bid, ask, last)
        return True

    def touch(self, instrument, side):
        """The price a market order of `side` trades at: ask (buy) or bid (sell), else last, else 0."""
        q = self.quotes.get(instrument)
        if q is None:
            return 0.0
        px = q[1] if side == SIDE_BUY else q[0]
        return px if px > 0.0 else q[2]


class OrderStatus:
    """What the venue has told about one order so far (the reports it sent): the answer to a StatusRequest."""
    __slots__ = ("order", "filled", "notional", "fees", "done")

    def __init__(self, order, done=False):
        self.order, self.filled, self.notional, self.fees, self.done = order, 0, 0.0, 0.0, done

    def report(self, now_ns):
        """The EXEC_STATUS report of the order as it stands."""
        o = self.order
        avg = self.notional / self.filled if self.filled else 0.0
        return ExecutionReport(o.order_id, o.strategy, o.deploy, EXEC_STATUS, self.filled, avg,
                               0 if self.done else o.qty - self.filled, self.fees, now_ns,
                               STATUS_DONE if self.done else STATUS_WORKING)


class _Resting:
    """A limit order on the simulated book, waiting for market data to cross it."""
    __slots__ = ("order", "ack_due", "live")

    def __init__(self, order, ack_due):
        self.order, self.ack_due, self.live = order, ack_due, True


class SimulatedOms:
    """Orders in, reports out, against a MarketState. Not thread-safe. Time is whatever `now_ns` says."""

    def __init__(self, config=SimOmsConfig(), market=None, orders=None):
        self.config = config
        self.market = MarketState() if market is None else market
        # order id -> OrderStatus, of every order taken: shared by the simulators of one server, so an order
        # outlives the connection that sent it and a status request on the next connection finds it
        self.orders = {} if orders is None else orders
        self.stats = SimOmsStats()
        self._rng = Draws(config.seed)
        self._ack_ns = config.ack_latency_us * 1000
        self._fill_ns = config.fill_latency_us * 1000
        self._ttl_ns = config.resting_ttl_us * 1000
        self._due = []      # heap of (due_ns, seq, ExecutionReport or _Resting expiry)
        self._seq = 0
        self._working = set()  # order ids between arrival and their last report
        self._book = {}     # instrument -> [_Resting], arrival order

    # ------------------------------------------------------------------------------------------ inputs
    def on_order(self, order, now_ns):
        """Take one Order that arrived at now_ns: schedule its reports."""
        st = self.stats
        st.orders += 1
        ack_due = now_ns + self._ack_ns
        touch = self.market.touch(order.instrument, order.side)
        reason = self._refusal(order, touch)
        # One draw per order, valid or not, so later draws do not depend on which orders were refused.
        if self._rng.random() < self.config.reject_ratio and not reason:
            reason = REJECT_RANDOM
        if reason:
            price = order.price if math.isfinite(order.price) else 0.0
            self._push(ack_due, EXEC_REJECT, order, 0, price, 0, 0.0, reason)
            st.rejects += 1
            if reason != REJECT_DUPLICATE:  # a duplicate must not hide the order it repeats
                self.orders[order.order_id] = OrderStatus(order, done=True)
            return
        self.orders[order.order_id] = OrderStatus(order)
        self._working.add(order.order_id)
        self._push(ack_due, EXEC_ACK, order, 0, order.price, order.qty, 0.0, 0)
        st.acks += 1
        price, order_type = order.price, order.order_type
        if touch <= 0.0:
            self._fill(order, price, now_ns, ack_due)  # no market to match: trust the engine's price
        elif order_type == ORDER_MARKET or (price >= touch if order.side == SIDE_BUY else price <= touch):
            self._fill(order, touch, now_ns, ack_due)
        elif order_type == ORDER_IOC:
            self._push(max(now_ns + self._fill_ns, ack_due), EXEC_CANCELED, order, 0, price, 0, 0.0, 0)
            st.canceled += 1
        else:
            resting = _Resting(order, ack_due)
            self._book.setdefault(order.instrument, []).append(resting)
            if self._ttl_ns:
                self._seq += 1
                heapq.heappush(self._due, (now_ns + self._ttl_ns, self._seq, resting))

    def on_market_data(self, md, now_ns):
        """Take one MarketData at now_ns and fill the resting orders it crosses; return how many it filled."""
        if not self.market.update(md):
            self.stats.market_data_invalid += 1
            return 0
        self.stats.market_data += 1
        return self.match_resting(md.instrument, now_ns)

    def match_resting(self, instrument, now_ns):
        """Fill the resting orders of `instrument` that its current quote crosses; return how many."""
        book = self._book.get(instrument)
        if not book:
            return 0
        buy_touch = self.market.touch(instrument, SIDE_BUY)
        sell_touch = self.market.touch(instrument, -SIDE_BUY)
        keep = []
        for r in book:
            o = r.order
            if o.side == SIDE_BUY:
                crossed = 0.0 < buy_touch <= o.price
            else:
                crossed = o.price <= sell_touch
            if crossed:
                r.live = False
                self._fill(o, o.price, now_ns, r.ack_due, maker=True)
            else:
                keep.append(r)
        filled = len(book) - len(keep)
        if keep:
            self._book[instrument] = keep
        else:
            del self._book[instrument]
        return filled

    def cancel(self, order_id, now_ns):
        """A cancel request for order_id arrived at now_ns: a resting order is CANCELED (never before its ACK),
        an order whose fill is due keeps it. Return True when a CANCELED is scheduled."""
        for book in self._book.values():
            for r in book:
                if r.order.order_id == order_id and r.live:
                    r.live = False
                    book.remove(r)
                    if not book:
                        del self._book[r.order.instrument]
                    self._push(max(now_ns + self._ack_ns, r.ack_due), EXEC_CANCELED, r.order, 0, r.order.price, 0,
                               0.0, 0)
                    self.stats.canceled += 1
                    return True
        return False

    def status(self, request, now_ns):
        """A StatusRequest arrived at now_ns: the order's EXEC_STATUS report is due at once, after what is already
        due, and says what those reports said (it is made when it is sent)."""
        self._seq += 1
        heapq.heappush(self._due, (now_ns, self._seq, request))
        self.stats.status_replies += 1

    def _status_report(self, request, now_ns):
        known = self.orders.get(request.order_id)
        if known is None:  # never taken here: the engine's order never arrived
            return ExecutionReport(request.order_id, request.strategy, request.deploy, EXEC_STATUS, 0, 0.0, 0, 0.0,
                                   now_ns, STATUS_UNKNOWN)
        return known.report(now_ns)

    def abandon(self):
        """The connection that sent this simulator's orders is gone: cancel on disconnect. Every order still
        working is done as it stands (the reports not yet sent are never sent); the book forgets it."""
        for order_id in self._working:
            known = self.orders.get(order_id)
            if known is not None:
                known.done = True
        self._working.clear()
        self._book.clear()
        self._due.clear()

    def on_frames(self, buf, now_ns, max_orders=-1):
        """Take the whole Order, Cancel and MarketData frames at the start of buf (bytes, bytearray, memoryview or a
        uint8 array); return the bytes consumed (a partial frame at the end is left). With max_orders >= 0,
        stop after that many orders. A frame of another type or a body that does not decode is counted and
        skipped. A header that cannot be trusted (version, oversize) raises FrameError: the frames before it
        are taken, and nothing after it can be framed."""
        with memoryview(buf) as view:
            view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
            pos, end = 0, len(view)
            while pos < end:
                verdict, msg_type, frame_end = next_frame(view, pos, end)
                if verdict == FRAME_TRUNCATED:
                    break
                if verdict != FRAME_OK:
                    self.stats.bad_header += 1
                    raise FrameError(pos, f"untrusted header {tuple(read_header(view, pos))}", verdict)
                if msg_type == MSG_ORDER:
                    if max_orders == 0:
                        break
                    try:
                        order = _ORDER_DECODER.decode(view[pos + FRAME_HEADER_SIZE:frame_end])
                    except msgspec.DecodeError:
                        self.stats.malformed += 1
                    else:
                        self.on_order(order, now_ns)
                        max_orders -= 1
                elif msg_type == MSG_MARKET_DATA:
                    try:
                        md = _MARKET_DATA_DECODER.decode(view[pos + FRAME_HEADER_SIZE:frame_end])
                    except msgspec.DecodeError:
                        self.stats.malformed += 1
                    else:
                        self.on_market_data(md, now_ns)
                elif msg_type == MSG_CANCEL:
                    try:
                        request = _CANCEL_DECODER.decode(view[pos + FRAME_HEADER_SIZE:frame_end])
                    except msgspec.DecodeError:
                        self.stats.malformed += 1
                    else:
                        self.cancel(request.order_id, now_ns)
                elif msg_type == MSG_STATUS_REQUEST:
                    try:
                        request = _STATUS_DECODER.decode(view[pos + FRAME_HEADER_SIZE:frame_end])
                    except msgspec.DecodeError:
                        self.stats.malformed += 1
                    else:
                        self.status(request, now_ns)
                else:
                    self.stats.bad_type += 1
                pos = frame_end
            return pos

    # ------------------------------------------------------------------------------------------ outputs
    def next_due_ns(self):
        """When the next report (or resting expiry) is due; None if nothing is pending."""
        return self._due[0][0] if self._due else None

    def pending(self):
        """Reports and expiries not yet due."""
        return len(self._due)

    def resting(self):
        """Limit orders resting on the simulated book."""
        return sum(len(b) for b in self._book.values())

    def pop_due(self, now_ns, out=None):
        """Append the reports due at or before now_ns to `out` (a new list if None), in due order; return it."""
        out = [] if out is None else out
        due, working = self._due, self._working
        while due and due[0][0] <= now_ns:
            due_ns, _, item = heapq.heappop(due)
            if type(item) is _Resting:  # an expiry: cancel it if it still rests
                if item.live:
                    item.live = False
                    book = self._book[item.order.instrument]
                    book.remove(item)
                    if not book:
                        del self._book[item.order.instrument]
                    working.discard(item.order.order_id)
                    self.stats.canceled += 1
                    self.orders[item.order.order_id].done = True
                    out.append(_report(item.order, EXEC_CANCELED, 0, item.order.price, 0, 0.0, due_ns, 0))
                continue
            if type(item) is StatusRequest:
                out.append(self._status_report(item, due_ns))
                continue
            kind = item.exec_type
            if kind == EXEC_FILL or kind == EXEC_CANCELED:  # a REJECT was never working
                working.discard(item.order_id)
            if kind == EXEC_FILL or kind == EXEC_PARTIAL_FILL or kind == EXEC_CANCELED:
                known = self.orders[item.order_id]  # sent now: what a status request answers from here on
                known.filled += item.qty
                known.notional += item.qty * item.price
                known.fees += item.fee
                known.done = kind != EXEC_PARTIAL_FILL
            out.append(item)
        return out

    # ------------------------------------------------------------------------------------------ internals
    def _refusal(self, order, touch):
        if order.qty <= 0:
            return REJECT_QTY
        price_ok = 0.0 < order.price < math.inf
        if order.order_type == ORDER_MARKET:
            if touch <= 0.0 and not price_ok:
                return REJECT_NO_MARKET
        elif not price_ok or order.order_type not in (ORDER_LIMIT, ORDER_IOC):
            return REJECT_PRICE
        if order.order_id in self._working:
            return REJECT_DUPLICATE
        return 0

    def _push(self, due_ns, exec_type, order, qty, price, leaves, fee, reason):
        self._seq += 1
        heapq.heappush(self._due, (due_ns, self._seq, _report(order, exec_type, qty, price, leaves, fee, due_ns,
                                                               reason)))

    def _fill(self, order, price, fillable_ns, ack_due, maker=False):
        """Schedule the fill reports of the whole order at `price`."""
        st, cfg, qty = self.stats, self.config, order.qty
        due = max(fillable_ns + self._fill_ns, ack_due)
        sizes = (qty,)
        if qty >= 2 and cfg.partial_fill_ratio > 0.0 and self._rng.random() < cfg.partial_fill_ratio:
            parts = min(qty, 3 if self._rng.random() < 0.5 else 2)
            cuts = [1 + int(self._rng.random() * (qty - 1))]  # distinct cuts in [1, qty - 1], drawn in this order
            if parts == 3:
                c = 1 + int(self._rng.random() * (qty - 2))
                cuts.append(c if c < cuts[0] else c + 1)
            cuts.sort()
            sizes = [b - a for a, b in zip([0, *cuts], [*cuts, qty])]
        leaves, paid = qty, 0.0
        instrument = order.instrument
        multiplier = cfg.multipliers[instrument] if instrument < len(cfg.multipliers) else 1.0
        bps = cfg.maker_fee_bps if maker else cfg.taker_fee_bps
        gap = cfg.partial_fill_gap_us * 1000
        for k, size in enumerate(sizes):
            leaves -= size
            fee = cents(size * cfg.fee_per_unit + size * price * multiplier * bps * 1e-4)
            if leaves == 0 and cfg.min_fee > 0.0 and paid + fee < cfg.min_fee:
                fee = cents(cfg.min_fee - paid)
            paid += fee
            self._push(due + k * gap, EXEC_FILL if leaves == 0 else EXEC_PARTIAL_FILL, order, size, price, leaves,
                       fee, 0)
            st.fees += fee
        st.partial_fills += len(sizes) - 1
        st.fills += 1
        st.filled_qty += qty


def _report(order, exec_type, qty, price, leaves, fee, ts_ns, reason):
    return ExecutionReport(order.order_id, order.strategy, order.deploy, exec_type, qty, price, leaves, fee,
                           ts_ns, reason)
