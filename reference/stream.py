"""A stream of chunks in plain Python, taken as the batch takes it (kernels/batch.py `run_batch`), with no kernel:
each chunk is bytes that arrived at a time, walked frame by frame in arrival order, each event decided as read.

Per chunk (`feed(t, data)`): the venue's reports due at or before t are applied, each at its due time; the clock
moves to t (cool-downs); then, frame by frame: the header is judged by wire/frames.py (the kernel's verdicts, in
its order, counted in the same counters; a bad header ends the chunk), the body is decoded by msgspec
(wire/schema.py; a body it refuses is C_FRAME_MALFORMED, as in the kernel, whose decoder is property-tested to
accept exactly what msgspec accepts), and
- a Signal is decided at once (rules.on_signal: fan-out, sizing, every pre-trade rule, booking); an accepted order
  goes to the venue then and there, before the next subscriber is decided;
- MarketData sets its instrument's bid, ask and last in ticks (price / tick, rounded half to even; NaN, infinite,
  negative or beyond 2**53 ticks voids the whole update, counted) and its mark (the mid of bid and ask when both
  are > 0, else last when > 0, else the reference price); then exposure, P&L and breakers follow (rules.on_mark)
  and the venue matches what the quote now crosses;
- an ExecutionReport is applied (rules.apply_report); an Order, or any other type, is C_FRAME_BAD_TYPE;
- but first each frame keeps to its source's role: execution reports only on the OMS link (none while the venue
  runs here), signals and market data only on the listeners; off its role it is counted and dropped;
and after each frame the venue's reports due by now are applied, so an immediate fill reaches the books before
the next event.

The venue ([oms] kind = "sim") is sim/venue.py `SimulatedOms`, shown the market as the batch's venue sees it:
the instrument's prices in ticks times the tick size. With no venue, orders wait in `orders` for an OMS link.
Outputs: `orders`, `rejects` and `fills`, lists of records in the kernels' ring layouts (reference/records.py),
for the caller to read and clear; `rules` holds the tables, `counters` the engine's counters.
"""
import msgspec

from engine.state import EngineState
from kernels.dtypes import (
    C_FRAMES, C_FRAME_BAD_TYPE, C_FRAME_BAD_VERSION, C_FRAME_MALFORMED, C_FRAME_OVERSIZE, C_FRAME_TRUNCATED,
    C_MARKET_DATA, C_MARKET_DATA_INVALID, C_MARKET_DATA_UNKNOWN_INSTRUMENT, C_REPORTS, C_ROLE_DATA_ON_OMS,
    C_ROLE_REPORT_OFF_OMS, C_SIGNALS, FRAME_HEADER_SIZE, MSG_EXECUTION_REPORT, MSG_MARKET_DATA, MSG_SIGNAL,
)
from kernels.arena import MAX_SOURCES, ROLE_DATA_ON_OMS, ROLE_REPORT_OFF_OMS, SOURCE_OMS
from reference.rules import Reference
from sim.venue import SimOmsConfig, SimulatedOms
from wire.frames import FRAME_BAD_VERSION, FRAME_OK, FRAME_OVERSIZE, FRAME_TRUNCATED, next_frame
from wire.schema import ExecutionReport, MarketData, Signal

MAX_TICKS = 2.0 ** 53  # above this a float no longer holds every whole number of ticks
VERDICT_COUNTERS = {FRAME_BAD_VERSION: C_FRAME_BAD_VERSION, FRAME_OVERSIZE: C_FRAME_OVERSIZE,
                    FRAME_TRUNCATED: C_FRAME_TRUNCATED}


class Stream:
    """The engine on a stream, in plain Python. Not thread-safe."""

    def __init__(self, k):
        """Start from a copy of kernel state k (a tests KernelState, an EngineState): its tables, and its venue
        settings when the venue runs in the batch (the venue must be fresh: nothing pending, nothing working)."""
        self.rules = Reference(k, unbounded=True)
        self.counters = self.rules.counters
        self.orders, self.rejects, self.fills = self.rules.orders, self.rules.rejects, self.rules.fills
        self.venue = None
        self.role_drops = [[int(x) for x in row] for row in k.role_drops]
        if len(k.venue) and k.venue[0]["on"]:
            self.venue = self.rules.venue = SimulatedOms(venue_config(k))
        self._signal = msgspec.msgpack.Decoder(Signal).decode
        self._market_data = msgspec.msgpack.Decoder(MarketData).decode
        self._report = msgspec.msgpack.Decoder(ExecutionReport).decode

    @classmethod
    def from_config(cls, config):
        """The stream engine of a loaded config (engine.config.load_config), from the tables the engine builds."""
        return cls(EngineState.build(config))

    # ------------------------------------------------------------------------------------------ chunks in
    def feed(self, t, data, source=SOURCE_OMS):
        """One chunk: `data` (bytes-like, whole frames or not) arrived at stream time t from `source` (0 the OMS
        link, 1.. a listener: as the kernels' rx_sources). Return the orders placed."""
        rules, counters, venue = self.rules, self.counters, self.venue
        on_oms_link = source == SOURCE_OMS and venue is None
        if venue is not None:
            self.release_due(t)
        now = rules.set_clock(t)
        placed = 0
        buf = data if type(data) is bytes else bytes(data)  # a body sliced from bytes costs what a memoryview does
        pos, end = 0, len(buf)
        while pos < end:
            verdict, msg_type, frame_end = next_frame(buf, pos, end)
            if verdict != FRAME_OK:
                counters[VERDICT_COUNTERS[verdict]] += 1
                break
            counters[C_FRAMES] += 1
            if msg_type in (MSG_SIGNAL, MSG_MARKET_DATA, MSG_EXECUTION_REPORT) and \
                    (msg_type == MSG_EXECUTION_REPORT) != on_oms_link:  # off its source's role: counted, dropped
                report = msg_type == MSG_EXECUTION_REPORT
                counters[C_ROLE_REPORT_OFF_OMS if report else C_ROLE_DATA_ON_OMS] += 1
                self.role_drops[min(source, MAX_SOURCES - 1)][ROLE_REPORT_OFF_OMS if report else ROLE_DATA_ON_OMS] += 1
                pos = frame_end
                continue
            body = buf[pos + FRAME_HEADER_SIZE:frame_end]
            try:
                if msg_type == MSG_SIGNAL:
                    sig = self._signal(body)
                    counters[C_SIGNALS] += 1
                    placed += rules.on_signal(sig, now)
                elif msg_type == MSG_MARKET_DATA:
                    self.take_market_data(self._market_data(body), now)
                elif msg_type == MSG_EXECUTION_REPORT:
                    rep = self._report(body)
                    counters[C_REPORTS] += 1
                    rules.apply_report(rep, now)
                else:  # an Order goes out, never in
                    counters[C_FRAME_BAD_TYPE] += 1
            except msgspec.DecodeError:  # ValidationError is one; raised by the decode, before any change
                counters[C_FRAME_MALFORMED] += 1
            pos = frame_end
            if venue is not None:
                self.release_due(now)
        return placed

    def advance(self, t):
        """Stream time reaches t with no event (a tick): due venue reports are applied, cool-downs run."""
        if self.venue is not None:
            self.release_due(t)
        self.rules.set_clock(t)

    # ------------------------------------------------------------------------------------------ market data
    def take_market_data(self, md, now):
        """Move md's instrument to md's quote and mark, then everything marked by it, then the venue's book."""
        rules, counters = self.rules, self.counters
        i = md.instrument
        if i >= len(rules.instruments):
            counters[C_MARKET_DATA_UNKNOWN_INSTRUMENT] += 1
            return
        ins = rules.instruments[i]
        tick = ins.tick_size
        bid, ask, last = md.bid / tick, md.ask / tick, md.last / tick
        if not (0.0 <= bid <= MAX_TICKS and 0.0 <= ask <= MAX_TICKS and 0.0 <= last <= MAX_TICKS):  # NaN too
            counters[C_MARKET_DATA_INVALID] += 1
            return
        bid, ask, last = round(bid), round(ask), round(last)
        ins.bid_ticks, ins.ask_ticks, ins.last_ticks, ins.md_ts_ns = bid, ask, last, md.ts_ns
        ins.mark_ticks = (bid + ask) // 2 if bid > 0 and ask > 0 else last if last > 0 else ins.ref_px_ticks
        counters[C_MARKET_DATA] += 1
        rules.on_mark(i, now)
        if self.venue is not None:
            self.venue.on_market_data(MarketData(i, bid * tick, ask * tick, last * tick, md.ts_ns), now)

    # ------------------------------------------------------------------------------------------ the venue
    def release_due(self, t):
        """Apply the venue's reports due at or before t, in due order, each at its due time (applying one never
        makes another, so they are taken together)."""
        venue, rules = self.venue, self.rules
        due = venue.next_due_ns()
        while due is not None and due <= t:
            for rep in venue.pop_due(t):
                rules.apply_report(rep, rules.set_clock(rep.ts_ns))
            due = venue.next_due_ns()


def venue_config(k):
    """The SimOmsConfig that kernel state k's venue was configured with (sim/venue.py `configure_venue`): times
    in microseconds, the seed (the generator's state before its first draw), the instruments' multipliers."""
    v = k.venue[0]
    if v["pending"] or v["orders"] or k.venue_orders["working"].any():
        raise ValueError("the reference starts from a fresh venue: nothing pending, nothing working")
    return msgspec.convert(dict(
        ack_latency_us=int(v["ack_latency_ns"]) // 1000, fill_latency_us=int(v["fill_latency_ns"]) // 1000,
        resting_ttl_us=int(v["resting_ttl_ns"]) // 1000, reject_ratio=float(v["reject_ratio"]),
        partial_fill_ratio=float(v["partial_fill_ratio"]), taker_fee_bps=float(v["taker_fee_bps"]),
        maker_fee_bps=float(v["maker_fee_bps"]), fee_per_unit=float(v["fee_per_unit"]), min_fee=float(v["min_fee"]),
        seed=int(v["rng"]), multipliers=tuple(k.instruments["multiplier"].tolist())), SimOmsConfig)
