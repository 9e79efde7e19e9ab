"""The synthetic signal feed (`orchestrator feed`): signals and market data over UDP, TCP or Aeron, open loop.

Open loop: signal i is due at start + i / rate and market data update u at start + u / md_rate, whatever the
receiver does. Each pass sends everything due by now in one batch (at most `max_batch` signals), then sleeps
until the next item is due; a pass that finds items overdue sends them at once and records how late the
oldest was (`max_lag_ms`). Over TCP a receiver that does not read blocks the send: that time shows as lag.

Content is a pure function of the seed and the item's index, never of timing, so two runs with one seed send
the same signals (seq, ids, values, prices) and the same market data, only stamped with other times:
- market data: round robin over the instruments; each update moves that instrument's mid by a Gaussian
  log-return of `volatility_bps`, quotes bid and ask `spread_bps` apart rounded outward to the tick, and
  puts last at the bid or the ask;
- a signal (kind TARGET) picks a signal id and an instrument at random, or with `routes` one of those
  (signal id, instrument) pairs at random (`orchestrator feed --config` derives them from the strategies: each
  signal id with the tradable instruments every strategy subscribed to it trades, so no signal is `restricted`
  for a subscriber). Its value is uniform in [-1, 1]; or with `target_step` > 0 the sine of a random walk kept
  per (signal id, instrument) that starts at 0 and moves each signal by a Gaussian step of `target_step`
  radians plus that pair's drift (`target_drift` times a factor drawn once per pair, +-0.5..1.5): a target
  that swings slowly between long and short, as a strategy's would, so most signals change no position and
  the orders that follow are small steps one way, then the other (a first signal's target of 0 trades
  nothing). Its limit
  price is the instrument's mid as of the signal's due time (the updates due up to it), moved by
  `aggression_bps` toward the side a strategy following it most likely trades: up if the value rose since
  the last signal of the same id and instrument (a buy crosses the ask), down if it fell; rounded to the tick.
  ts_ns is the wall clock when its batch is sent; ttl_ns is `ttl_ms`;
- with `bad_ratio`, that share of signals is replaced by one of `bad_kinds` (drawn evenly); with `bad_every`
  N, every N-th signal too, taking `bad_kinds` in turn (a few of each, however short the run):
  nan (NaN value), price_band (10 x mid), duplicate (repeats the previous seq), stale (ts_ns 1 s old with a
  1 ms ttl), unknown_signal / unknown_instrument (id UNKNOWN_ID), garbage (UDP: a datagram of random bytes
  whose header can never be valid; TCP: a frame whose header is valid and whose body is not msgpack, since
  random bytes would leave the stream with no frame boundary); oversize (not in the default kinds; UDP and
  Aeron only, since a stream cannot be framed past one) a message of its own holding one frame whose body is
  OVERSIZE_BODY bytes, longer than MAX_FRAME_BODY (the engine counts frame_oversize). Only garbage and oversize
  send no Signal, and only
  duplicate reuses a seq: seq counts the other signals from seq_base + 1 (an engine that recovered its
  journal remembers the last seq of the source: a new run of the feed starts above it).

Frames are written by numpy into preallocated fixed-width records (wire/records.py), so a batch costs a few numpy
calls whatever its size. Every byte goes out through an adapter (adapters/udp.py, tcp.py, aeron.py).
UDP packs `frames_per_datagram` frames to a datagram (market data and signals in separate datagrams);
`to_sim_oms` also sends each market data datagram to the simulated OMS.
Aeron packs as many frames to a message, market data on its own stream (which the simulated OMS can subscribe to
as well), through a media driver already running in `aeron_directory` (the engine's). The feed waits up to 5 s
for the engine to subscribe; a publication that is back-pressured is retried until it takes the message (the
wait shows as lag and is counted in `backpressure`); an engine that goes away stops the feed, as over TCP.
Over UDP a datagram to a port nobody listens on is refused (the next send reports it): with `max_send_errors`
the feed gives up after that many refusals (`gave_up`); a full socket buffer is not a refusal.
"""
import math
import select
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal

import msgspec
import numpy as np

from adapters.aeron import AeronDriverConfig, AeronNode, AeronSender, AeronSenderConfig, Channel, StreamId
from adapters.base import Host, Port, TransportClosed, parse_address
from adapters.tcp import TcpClient, TcpClientConfig
from adapters.udp import UdpSender, UdpSenderConfig
from kernels.dtypes import MAX_FRAME_BODY, MSG_MARKET_DATA, MSG_SIGNAL, SIGNAL_TARGET, WIRE_VERSION
from wire.frames import HEADER
from wire.records import MARKET_DATA_FRAME_SIZE, SIGNAL_FRAME_SIZE, records

BAD_KINDS = ("nan", "price_band", "duplicate", "stale", "unknown_signal", "unknown_instrument", "garbage")  # default
ALL_BAD_KINDS = (*BAD_KINDS, "oversize")
_NAN, _PRICE_BAND, _DUPLICATE, _STALE, _UNKNOWN_SIGNAL, _UNKNOWN_INSTRUMENT, _GARBAGE, _OVERSIZE = range(
    len(ALL_BAD_KINDS))
_GOOD = -1
UNKNOWN_ID = 0x7FFF_FFFF  # a signal id and an instrument id no config uses (config ids are far smaller)
STALE_AGE_NS = 1_000_000_000
STALE_TTL_NS = 1_000_000
PRICE_BAND_FACTOR = 10.0
UDP_MAX_PAYLOAD = 65_507
LOG_STEP = 1e-12  # resolution of the random walk in log price
PHASE_STEP = 1e-12  # resolution of the targets' random walk, in radians
OVERSIZE_BODY = MAX_FRAME_BODY + 64

NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1e8)]
U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
Price = Annotated[float, msgspec.Meta(gt=0.0, le=1e12)]
BadKind = Literal["nan", "price_band", "duplicate", "stale", "unknown_signal", "unknown_instrument", "garbage",
                  "oversize"]
Route = tuple[U32, U32]  # (signal id, instrument id)


class FeedConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What the feed sends, where, how fast. Build it by decoding (msgspec.convert): constructors do not validate."""
    transport: Literal["udp", "tcp", "aeron"] = "udp"
    host: Host = "127.0.0.1"
    port: Port = 47100
    rate: Rate = 1000.0             # signals per second
    duration_s: NonNegative = 10.0  # 0: until `count` signals
    count: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: until `duration_s`
    seed: int = 0
    seq_base: Annotated[int, msgspec.Meta(ge=0, le=1 << 62)] = 0  # seqs count from seq_base + 1
    source: U32 = 0
    signal_ids: Annotated[tuple[U32, ...], msgspec.Meta(min_length=1)] = (1,)
    instruments: Annotated[tuple[U32, ...], msgspec.Meta(min_length=1)] = (0,)
    routes: tuple[Route, ...] = ()  # (signal id, instrument id) pairs to draw from; (): any id with any instrument
    start_prices: Annotated[tuple[Price, ...], msgspec.Meta(min_length=1)] = (100.0,)  # one, or one per instrument
    tick_sizes: Annotated[tuple[Price, ...], msgspec.Meta(min_length=1)] = (0.01,)    # one, or one per instrument
    ttl_ms: NonNegative = 1000.0    # 0: signals never expire
    target_step: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] = 0.0  # 0: values uniform; else the walk's step
    target_drift: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] = 0.0  # with target_step: the walks' mean step
    md_rate: Rate = 1000.0          # market data updates per second, over all instruments
    volatility_bps: NonNegative = 1.0  # standard deviation of one update's log-return
    spread_bps: NonNegative = 2.0
    aggression_bps: NonNegative = 5.0
    bad_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    bad_kinds: Annotated[tuple[BadKind, ...], msgspec.Meta(min_length=1)] = BAD_KINDS
    bad_every: Annotated[int, msgspec.Meta(ge=0)] = 0  # every N-th signal bad, bad_kinds in turn (0: none)
    frames_per_datagram: Annotated[int, msgspec.Meta(ge=1, le=UDP_MAX_PAYLOAD // 70)] = 16
    to_sim_oms: str | None = None   # "host:port": market data also goes there over UDP
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)] = 4096  # signals per pass
    max_send_errors: Annotated[int, msgspec.Meta(ge=0)] = 0  # UDP: stop after this many refused (0: never)
    aeron_directory: str = ""       # the running media driver's directory ("": Aeron's default)
    aeron_channel: Channel = "aeron:ipc"  # signals
    aeron_stream: StreamId = 1001
    aeron_market_data_channel: Channel | None = None  # None: aeron_channel
    aeron_market_data_stream: StreamId = 1002

    def __post_init__(self):
        n = len(self.instruments)
        for key in ("start_prices", "tick_sizes"):
            if len(getattr(self, key)) not in (1, n):
                raise ValueError(f"`{key}`: Expected 1 value or one per instrument ({n}), "
                                 f"got {len(getattr(self, key))}")
        known = set(self.instruments)
        for index, (_, instrument) in enumerate(self.routes):
            if instrument not in known:
                raise ValueError(f"`routes[{index}]`: Expected an instrument of `instruments`, got {instrument}")
        if self.transport == "tcp" and "oversize" in self.bad_kinds:
            raise ValueError("`bad_kinds`: oversize is for UDP and Aeron only: a TCP stream cannot be framed past "
                             "an oversize frame, so nothing after it would arrive")
        if self.duration_s == 0 and self.count == 0:
            raise ValueError("`duration_s`: Expected a duration, a count, or both; got neither")
        if self.rate == 0 and self.duration_s == 0:
            raise ValueError("`duration_s`: Expected a duration when rate is 0 (market data only)")
        if self.to_sim_oms is not None:
            try:
                parse_address(self.to_sim_oms)
            except ValueError as e:
                raise ValueError(f"`to_sim_oms`: {e}") from None


# ---------------------------------------------------------------------------------------------- summary
@dataclass(slots=True)
class FeedSummary:
    signals: int = 0                # good signals sent
    market_data: int = 0
    bad: dict = field(default_factory=lambda: dict.fromkeys(ALL_BAD_KINDS, 0))
    frames: int = 0                 # every frame sent (garbage and oversize messages count one each)
    sends: int = 0                  # datagrams or TCP writes
    bytes: int = 0
    sim_oms_datagrams: int = 0
    send_errors: int = 0            # UDP sends refused (no listener, buffer full): those frames are lost
    refused: int = 0                # of those, refused because nothing listens there (ICMP port unreachable)
    backpressure: int = 0           # Aeron offers refused (publication window full), retried until taken
    closed: bool = False            # TCP peer went away: the feed stopped early
    gave_up: bool = False           # max_send_errors refusals reached (nothing listening): the feed stopped early
    elapsed_s: float = 0.0
    signal_rate: float = 0.0        # signal frames (good and bad) per second, achieved
    max_lag_ms: float = 0.0         # the latest an item went out after its due time

    def as_dict(self):
        return asdict(self)

    def line(self):
        bad = " ".join(f"{k}={v}" for k, v in self.bad.items() if v)
        return (f"feed: signals={self.signals} market_data={self.market_data} bad={sum(self.bad.values())}"
                f"{' (' + bad + ')' if bad else ''} sends={self.sends} bytes={self.bytes} "
                f"elapsed={self.elapsed_s:.3f}s rate={self.signal_rate:,.0f}/s max_lag={self.max_lag_ms:.3f}ms"
                f"{f' send_errors={self.send_errors}' if self.send_errors else ''}"
                f"{' CLOSED by peer' if self.closed else ''}"
                f"{' GAVE UP: too many send errors' if self.gave_up else ''}")


# ---------------------------------------------------------------------------------------------- the feed
class Feed:
    """One run of the feed. `run()` blocks until done (or `stop()` from another thread) and returns the summary."""

    def __init__(self, config, clock=time.perf_counter_ns, wall_clock=time.time_ns, sleep=time.sleep):
        self.config = config
        self.clock, self.wall_clock, self.sleep = clock, wall_clock, sleep
        self.summary = FeedSummary()
        self._stop = False
        c = config
        n = len(c.instruments)
        self._n = n
        self._ids = np.asarray(c.instruments, np.uint32)
        if c.routes:  # signal ids by index of their first route; each route's (signal id index, instrument slot)
            ids = list(dict.fromkeys(sid for sid, _ in c.routes))
            self._signal_ids = np.asarray(ids, np.uint32)
            slots = {instrument: slot for slot, instrument in reversed(list(enumerate(c.instruments)))}
            self._route_sid = np.asarray([ids.index(sid) for sid, _ in c.routes], np.int64)
            self._route_slot = np.asarray([slots[instrument] for _, instrument in c.routes], np.int64)
        else:
            self._signal_ids = np.asarray(c.signal_ids, np.uint32)
        self._start_mid = np.broadcast_to(np.asarray(c.start_prices, np.float64), n).copy()
        self._tick = np.broadcast_to(np.asarray(c.tick_sizes, np.float64), n).copy()
        # The walk is kept in whole units of LOG_STEP of log price: integer sums do not depend on how the updates
        # are grouped into batches, float sums do (in the last bit, which a price at 10 x mid would show).
        self._log_mid = np.round(np.log(self._start_mid) / LOG_STEP).astype(np.int64)
        # price = whole ticks * _tick_mul / _tick_div: dividing by 100 rather than multiplying by 0.01 gives the
        # double nearest 99.99 (prints as 99.99), not 99.99000000000001
        inverse = 1.0 / self._tick
        exact = np.abs(inverse - np.round(inverse)) < 1e-9 * inverse
        self._tick_mul = np.where(exact, 1.0, self._tick)
        self._tick_div = np.where(exact, np.round(inverse), 1.0)
        self._hist = np.empty(0)  # mids after market data updates [_hist_end - len(_hist), _hist_end)
        self._hist_end = 0
        self._bad_kinds = np.array([ALL_BAD_KINDS.index(k) for k in c.bad_kinds])
        self._last_seq = c.seq_base
        self._last_value = np.zeros(len(self._signal_ids) * n)  # per (signal id, instrument): the last target sent
        self._phase = np.zeros(len(self._signal_ids) * n, np.int64)  # per (signal id, instrument): the target walk
        # separate streams, each drawn only by fixed-size rows of doubles, so content never depends on batching
        signal_seq, md_seq, garbage_seq, drift_seq = np.random.SeedSequence(c.seed).spawn(4)
        drift_rng = np.random.Generator(np.random.PCG64(drift_seq))
        factor = drift_rng.uniform(0.5, 1.5, len(self._phase)) * drift_rng.choice((-1.0, 1.0), len(self._phase))
        self._drift = np.round(factor * (c.target_drift / PHASE_STEP)).astype(np.int64)  # per pair, PHASE_STEPs
        self._signal_rng = np.random.Generator(np.random.PCG64(signal_seq))
        self._md_rng = np.random.Generator(np.random.PCG64(md_seq))
        self._garbage_rng = np.random.Generator(np.random.PCG64(garbage_seq))
        self._signals = records(MSG_SIGNAL, c.max_batch)
        self._signals["source"] = c.source
        self._signals["kind"] = SIGNAL_TARGET
        self._market_data = records(MSG_MARKET_DATA, 256)
        # totals and schedule
        sig_end = math.ceil(c.duration_s * c.rate) if c.duration_s else c.count
        self.total_signals = min(sig_end, c.count) if c.count else sig_end
        if c.rate == 0:
            self.total_signals = 0
        end_s = c.duration_s if c.count == 0 or c.rate == 0 else self.total_signals / c.rate
        if c.duration_s:
            end_s = min(end_s, c.duration_s)
        self.total_market_data = math.ceil(end_s * c.md_rate)
        self._sender = self._sim_oms = None  # the UDP or TCP adapter; the simulated OMS's market data copy (UDP)
        self._aeron = ()  # (signals sender, market data sender): the same one when the streams are the same

    def stop(self):
        self._stop = True

    # ------------------------------------------------------------------------------------------ schedule
    def _signals_due(self, elapsed_ns):
        return min(self.total_signals, math.floor(elapsed_ns * self.config.rate / 1e9) + 1) if elapsed_ns >= 0 else 0

    def _market_data_due(self, elapsed_ns):
        c = self.config
        return min(self.total_market_data, math.floor(elapsed_ns * c.md_rate / 1e9) + 1) if c.md_rate else 0

    def _signal_time(self, i):
        return i * 1e9 / self.config.rate

    def _market_data_time(self, u):
        return u * 1e9 / self.config.md_rate

    def _last_update_before(self, i):
        """Index of the last market data update due at or before signal i (-1: none); arrays welcome."""
        c = self.config
        if not c.md_rate or not self.total_market_data:
            return np.full(np.shape(i), -1, np.int64) if np.ndim(i) else -1
        m = np.floor(np.asarray(i, np.float64) * c.md_rate / c.rate).astype(np.int64)
        return np.minimum(m, self.total_market_data - 1)

    # ------------------------------------------------------------------------------------------ run
    def run(self):
        c, s = self.config, self.summary
        self._open()
        start = self.clock()
        try:
            sent_signals = sent_md = 0
            while not self._stop and (sent_signals < self.total_signals or sent_md < self.total_market_data):
                elapsed = self.clock() - start
                due_signals = self._signals_due(elapsed)
                hi_signals = min(due_signals, sent_signals + c.max_batch)
                hi_md = self._market_data_due(elapsed)
                if hi_signals > sent_signals:
                    # Every update due up to the batch's last signal, so each price is the one its index implies;
                    # none beyond it while signals wait (max_batch), so no signal is left behind the history.
                    needed = int(self._last_update_before(hi_signals - 1)) + 1
                    hi_md = needed if hi_signals < due_signals else max(hi_md, needed)
                if hi_signals == sent_signals and hi_md == sent_md:
                    nxt = min(self._signal_time(sent_signals) if sent_signals < self.total_signals else math.inf,
                              self._market_data_time(sent_md) if sent_md < self.total_market_data else math.inf)
                    if nxt > elapsed:
                        self.sleep((nxt - elapsed) / 1e9)
                    continue
                due = min(self._signal_time(sent_signals) if hi_signals > sent_signals else math.inf,
                          self._market_data_time(sent_md) if hi_md > sent_md else math.inf)
                s.max_lag_ms = max(s.max_lag_ms, (elapsed - due) / 1e6)
                wall = self.wall_clock()
                md_view = self._make_market_data(sent_md, hi_md, wall)
                signal_view, garbage = self._make_signals(sent_signals, hi_signals, wall)
                if not self._send(md_view, signal_view, garbage):
                    break
                sent_signals, sent_md = hi_signals, hi_md
        finally:  # also on KeyboardInterrupt: the summary then covers what was sent
            s.elapsed_s = (self.clock() - start) / 1e9
            s.signal_rate = (s.signals + sum(s.bad.values())) / s.elapsed_s if s.elapsed_s > 0 else 0.0
            self._close()
        return s

    # ------------------------------------------------------------------------------------------ content
    def _make_market_data(self, lo, hi, wall_ns):
        """Records for updates [lo, hi) in the market data buffer; their bytes (empty if none)."""
        m = hi - lo
        if m <= 0:
            return memoryview(b"")
        c, n = self.config, self._n
        if len(self._market_data) < m:
            self._market_data = records(MSG_MARKET_DATA, m)
        u = self._md_rng.random((m, 3))
        normal = np.sqrt(-2.0 * np.log1p(-u[:, 0])) * np.cos(2.0 * np.pi * u[:, 1])  # Box-Muller
        shocks = np.round(normal * (c.volatility_bps * 1e-4 / LOG_STEP)).astype(np.int64)
        # Round robin: lay the updates on rows of n (one column per instrument), cumulate down the columns.
        first = lo % n
        rows = -(-(first + m) // n)
        grid = np.zeros(rows * n, np.int64)
        grid[first:first + m] = shocks
        path = np.cumsum(grid.reshape(rows, n), axis=0) + self._log_mid
        self._log_mid = path[-1].copy()
        mids = np.exp(path.reshape(-1)[first:first + m] * LOG_STEP)
        slots = (np.arange(lo, hi) % n)
        tick = self._tick[slots]
        half = c.spread_bps * 0.5e-4
        bid = np.floor(mids * (1.0 - half) / tick + 1e-9)
        ask = np.maximum(np.ceil(mids * (1.0 + half) / tick - 1e-9), bid + 1.0)
        rec = self._market_data[:m]
        rec["instrument"] = self._ids[slots]
        rec["bid"] = bid = self._price(bid, slots)
        rec["ask"] = ask = self._price(ask, slots)
        rec["last"] = np.where(u[:, 2] < 0.5, bid, ask)
        rec["ts_ns"] = wall_ns
        self._hist = np.concatenate((self._hist[-n:], mids))
        self._hist_end = hi
        self.summary.market_data += m
        return memoryview(rec.view(np.uint8))

    def _price(self, ticks, slots):
        return ticks * self._tick_mul[slots] / self._tick_div[slots]

    def _mid_at(self, update, slot):
        """Mid of instrument `slot` after market data update `update` (arrays): its last update at or before."""
        n = self._n
        last = update - np.mod(update - slot, n)  # the latest update of this slot at or before `update`
        mids = self._start_mid[slot]
        known = last >= 0
        if known.any():
            at = np.clip(last[known] - (self._hist_end - len(self._hist)), 0, len(self._hist) - 1)
            mids[known] = self._hist[at]
        return mids

    def _make_signals(self, lo, hi, wall_ns):
        """Records for signals [lo, hi); (their bytes, garbage frames as a list of bytes)."""
        k = hi - lo
        if k <= 0:
            return memoryview(b""), []
        c, s = self.config, self.summary
        u = self._signal_rng.random((k, 6))
        if c.routes:
            route = (u[:, 0] * len(c.routes)).astype(np.int64)
            sid_index, slot = self._route_sid[route], self._route_slot[route]
        else:
            sid_index = (u[:, 0] * len(self._signal_ids)).astype(np.int64)
            slot = (u[:, 1] * self._n).astype(np.int64)
        if c.target_step or c.target_drift:
            value = self._walk(sid_index * self._n + slot, u[:, 2], u[:, 5])
        else:
            value = 2.0 * u[:, 2] - 1.0
        bad = u[:, 3] < c.bad_ratio
        kind = np.where(bad, self._bad_kinds[(u[:, 4] * len(self._bad_kinds)).astype(np.int64)], _GOOD)
        if c.bad_every:
            turn, phase = np.divmod(np.arange(lo + 1, hi + 1), c.bad_every)
            every = phase == 0
            kind[every] = self._bad_kinds[(turn[every] - 1) % len(self._bad_kinds)]
            bad |= every
        if lo == 0 and kind[0] == _DUPLICATE:  # nothing to repeat yet: the first signal goes out good
            kind[0], bad[0] = _GOOD, False
        garbage = (kind == _GARBAGE) | (kind == _OVERSIZE)
        duplicate = kind == _DUPLICATE
        fresh = ~(garbage | duplicate)
        seq = self._last_seq + np.cumsum(fresh)
        self._last_seq = int(seq[-1])
        # prices: the mid as of each signal's due time, pushed toward the side the value asks for
        mid = self._mid_at(self._last_update_before(np.arange(lo, hi)), slot)
        toward = 1.0 + self._direction(sid_index * self._n + slot, value) * (c.aggression_bps * 1e-4)
        price = self._price(np.round(mid * toward / self._tick[slot]), slot)
        keep = ~garbage
        kept = int(keep.sum())
        if len(self._signals) < kept:
            self._signals = records(MSG_SIGNAL, kept)
            self._signals["source"] = c.source
            self._signals["kind"] = SIGNAL_TARGET
        rec = self._signals[:kept]
        kind_kept = kind[keep]
        ttl = round(c.ttl_ms * 1e6)
        rec["seq"] = seq[keep]
        rec["signal_id"] = np.where(kind_kept == _UNKNOWN_SIGNAL, UNKNOWN_ID, self._signal_ids[sid_index[keep]])
        rec["instrument"] = np.where(kind_kept == _UNKNOWN_INSTRUMENT, UNKNOWN_ID, self._ids[slot[keep]])
        rec["value"] = np.where(kind_kept == _NAN, np.nan, value[keep])
        rec["price"] = np.where(kind_kept == _PRICE_BAND, mid[keep] * PRICE_BAND_FACTOR, price[keep])
        stale = kind_kept == _STALE
        rec["ts_ns"] = np.where(stale, wall_ns - STALE_AGE_NS, wall_ns)
        rec["ttl_ns"] = np.where(stale, STALE_TTL_NS, ttl)
        n_bad = int(bad.sum())
        if n_bad:
            for index, count in enumerate(np.bincount(kind[bad], minlength=len(ALL_BAD_KINDS)).tolist()):
                s.bad[ALL_BAD_KINDS[index]] += count
        s.signals += k - n_bad
        return memoryview(rec.view(np.uint8)), [self._garbage() if kind[i] == _GARBAGE else _oversize()
                                                for i in np.flatnonzero(garbage)]

    def _walk(self, pair, u0, u1):
        """The targets' walk: each signal's (pair's) phase moved by its drift and a Gaussian step (Box-Muller),
        summed in whole PHASE_STEPs per pair in signal order (integers: no dependence on batching); its sine."""
        normal = np.sqrt(-2.0 * np.log1p(-u0)) * np.cos(2.0 * np.pi * u1)
        steps = np.round(normal * (self.config.target_step / PHASE_STEP)).astype(np.int64)
        order = np.argsort(pair, kind="stable")
        pairs = pair[order]
        sorted_steps = steps[order] + self._drift[pairs]
        new_group = np.empty(len(pairs), bool)
        new_group[0] = True
        np.not_equal(pairs[1:], pairs[:-1], out=new_group[1:])
        total = np.cumsum(sorted_steps)
        starts = np.flatnonzero(new_group)
        before = (total[starts] - sorted_steps[starts])[np.cumsum(new_group) - 1]  # the sum before each group
        phase = total - before + self._phase[pairs]
        group_end = np.append(new_group[1:], True)
        self._phase[pairs[group_end]] = phase[group_end]
        value = np.empty(len(pairs))
        value[order] = np.sin(phase * PHASE_STEP)
        return value

    def _direction(self, pair, value):
        """+1, -1 or 0: how each value moved from the previous one of its (signal id, instrument) pair, the
        side a strategy following the target most likely trades. Earlier batches' last values carry over."""
        order = np.argsort(pair, kind="stable")
        pairs, values = pair[order], value[order]
        new_group = np.empty(len(pairs), bool)
        new_group[0] = True
        np.not_equal(pairs[1:], pairs[:-1], out=new_group[1:])
        previous = np.empty(len(pairs))
        previous[1:] = values[:-1]
        previous[new_group] = self._last_value[pairs[new_group]]
        group_end = np.append(new_group[1:], True)
        self._last_value[pairs[group_end]] = values[group_end]
        direction = np.empty(len(pairs))
        direction[order] = np.sign(values - previous)
        return direction

    def _garbage(self):
        """One deliberately bad frame: UDP, random bytes with a header that can never be valid; TCP, a valid
        header over a body that is not msgpack (0xc1 is never used), so the stream stays in step."""
        rng = self._garbage_rng
        if self.config.transport != "tcp":  # a datagram or an Aeron message of its own
            data = bytearray(rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes())
            if len(data) > 4 and data[4] == WIRE_VERSION:
                data[4] ^= 0xFF
            return bytes(data)
        body = bytes([0xC1]) + rng.integers(0, 256, 61, dtype=np.uint8).tobytes()
        return _garbage_header(len(body)) + body

    # ------------------------------------------------------------------------------------------ transports
    def _open(self, connect_timeout_s=5.0):
        c = self.config
        if c.transport == "aeron":
            self._open_aeron(connect_timeout_s)
        elif c.transport == "udp":
            self._sender = _opened(UdpSender(msgspec.convert(
                {"host": c.host, "port": c.port, "sndbuf_bytes": 4 << 20}, UdpSenderConfig)))
        else:
            self._sender = _opened(TcpClient(msgspec.convert({"host": c.host, "port": c.port}, TcpClientConfig)))
            deadline = time.monotonic() + connect_timeout_s
            while not self._sender.connect():
                if time.monotonic() > deadline:
                    raise TransportClosed(f"connect to {c.host}:{c.port}: no answer in {connect_timeout_s} s")
                _wait_writable(self._sender)
        if c.to_sim_oms is not None:
            host, port = parse_address(c.to_sim_oms)
            self._sim_oms = _opened(UdpSender(msgspec.convert({"host": host, "port": port}, UdpSenderConfig)))

    def _open_aeron(self, connect_timeout_s):
        c = self.config
        node = AeronNode(msgspec.convert({"driver": "external", "directory": c.aeron_directory}, AeronDriverConfig))
        signals = {"channel": c.aeron_channel, "stream_id": c.aeron_stream}
        market = {"channel": c.aeron_market_data_channel or c.aeron_channel, "stream_id": c.aeron_market_data_stream}
        senders = [AeronSender(msgspec.convert({"stream": signals}, AeronSenderConfig), node)]
        if market != signals:
            senders.append(AeronSender(msgspec.convert({"stream": market}, AeronSenderConfig), node))
        try:
            for sender in senders:
                sender.open()
            deadline = time.monotonic() + connect_timeout_s
            while not all(sender.connect() for sender in senders):
                if time.monotonic() > deadline:
                    raise TransportClosed(f"nobody subscribes to {' and '.join(str(s.config.stream) for s in senders)}"
                                          f" after {connect_timeout_s} s: is the engine running with listen.aeron?")
                time.sleep(0.001)
        except BaseException:
            for sender in senders:
                sender.close()
            raise
        self._aeron = (senders[0], senders[-1])

    def _close(self):
        if isinstance(self._sender, TcpClient):  # what the stream still holds goes before we hang up
            try:
                while not self._stop and not self._sender.flush():
                    _wait_writable(self._sender)
            except TransportClosed:
                self.summary.closed = True
        for transport in (self._sender, self._sim_oms, *self._aeron):
            if transport is not None:
                transport.close()
        self._sender = self._sim_oms = None
        self._aeron = ()

    def _send(self, md, signals, garbage):
        """Send one batch (market data first); False if the TCP or Aeron peer is gone."""
        s, per_message = self.summary, self.config.frames_per_datagram
        s.frames += len(md) // MARKET_DATA_FRAME_SIZE + len(signals) // SIGNAL_FRAME_SIZE + len(garbage)
        transport = self.config.transport
        if transport == "aeron":
            signal_sender, market_sender = self._aeron
        else:
            signal_sender = market_sender = self._sender
        if transport == "tcp":  # a stream: each part in one write
            md_parts, signal_parts = (md,), (signals,)
        else:  # UDP, Aeron: frames_per_datagram frames to a message
            md_parts = _cut(md, MARKET_DATA_FRAME_SIZE * per_message)
            signal_parts = _cut(signals, SIGNAL_FRAME_SIZE * per_message)
        try:
            for sender, parts in ((market_sender, md_parts), (signal_sender, signal_parts), (signal_sender, garbage)):
                for part in parts:
                    if len(part):
                        self._emit(sender, part)
        except TransportClosed:
            s.closed = True
            return False
        if self._sim_oms is not None:
            for part in _cut(md, MARKET_DATA_FRAME_SIZE * per_message):
                if self._sim_oms.send(part):
                    s.sim_oms_datagrams += 1
        return True

    def _emit(self, sender, part):
        """One message. UDP: a refusal (no listener yet, buffer full) is counted and the datagram is lost. TCP:
        wait until the stream takes it (the wait shows as lag). Aeron: retried while back-pressured (counted)."""
        s = self.summary
        while not sender.send(part):
            if isinstance(sender, UdpSender):
                s.send_errors += 1
                s.refused = sender.stats.send_errors  # refused, not merely a full buffer (back-pressure)
                if self.config.max_send_errors and s.refused >= self.config.max_send_errors:
                    s.gave_up = self._stop = True
                return
            if isinstance(sender, AeronSender):
                s.backpressure += 1
                time.sleep(0)
            else:
                _wait_writable(sender)
            if self._stop:
                return
        s.sends += 1
        s.bytes += len(part)


def _opened(transport):
    transport.open()
    return transport


def _wait_writable(client, timeout_s=0.05):
    """Until a TCP client's socket can take more (or timeout_s): a blocked stream sleeps, it does not spin."""
    fd = client.fileno()
    if fd >= 0:
        select.select([], [fd], [], timeout_s)
    else:
        time.sleep(0.001)


def _cut(data, step):
    return (data[pos:pos + step] for pos in range(0, len(data), step))


def _oversize():
    """A frame whose header is valid and whose body is longer than the engine takes (MAX_FRAME_BODY)."""
    return _garbage_header(OVERSIZE_BODY) + bytes(OVERSIZE_BODY)


def _garbage_header(body_length):
    return HEADER.pack(body_length, WIRE_VERSION, MSG_SIGNAL, 0)
