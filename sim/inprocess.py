"""The simulated venue in the engine's own process, behind the transport contract (adapters/base.py): no
socket, no thread. `SimOmsTransport` over its own market state (tests, benches); `InProcessOms` over the engine's
market state (the demo's `oms.kind = "sim"`); `NullOms`, a sink for replays (reports come from the recording).
"""
import time

import msgspec

from adapters.base import Transport, TransportStats
from kernels.dtypes import SIDE_BUY
from sim.venue import SimOmsConfig, SimulatedOms
from wire.frames import FrameError, append_frame, whole_frames_end


class SimOmsTransport(Transport):
    """The simulated OMS behind the transport contract, in process: no socket, no thread.

    send(frames) takes whole Order frames (and MarketData frames: market data may come this way or through
    on_market_data); each call is stamped with one clock reading. poll() writes the reports due by now as
    one chunk of whole frames, as many as fit in rx; the rest wait for the next poll. fileno() is -1: in a
    spin loop just poll; on an event loop, attach() arms a timer for the next due report instead of an fd.
    send() never refuses (no back-pressure) and raises TransportClosed only when the transport is closed.
    A frame whose header cannot be trusted ends what that send() call is read (counted as `oversize`).
    """

    def __init__(self, config=SimOmsConfig(), clock=time.time_ns, market=None):
        super().__init__()
        self.config = config
        self.clock = clock
        self.oms = SimulatedOms(config, market)
        self._encoder = msgspec.msgpack.Encoder()
        self._reports = []           # reused by pop_due
        self._out = bytearray()      # encoded report frames not yet delivered
        self._out_pos = 0
        self._loop = self._callback = self._timer = None
        self._timer_when = 0.0

    def open(self):
        self.closed = False

    def close(self):
        if self._close_common():
            self.detach()

    def fileno(self):
        return -1

    def send(self, frames):
        self._check_open()
        size = self._take(frames)
        self.stats.sent += 1
        self.stats.bytes_out += size
        self._arm()
        return True

    def flush(self):
        """Nothing is ever held on the way in: send() takes every frame at once."""
        return True

    def on_market_data(self, frames):
        """Feed the market: whole MarketData frames, stamped with the clock."""
        self._check_open()
        self._take(frames)
        self._arm()

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        self._check_open()
        if min(max_chunks, len(rx_sizes) - chunk_index) <= 0:
            return 0, offset
        out, reports = self._out, self._reports
        self.oms.pop_due(self.clock(), reports)
        if reports:
            encoder = self._encoder
            for report in reports:
                append_frame(encoder, report, out)
            reports.clear()
        start = self._out_pos
        n = len(out) - start
        room = len(rx) - offset
        if n > room:
            n = whole_frames_end(out, start, start + room) - start
        if n == 0:
            return 0, offset
        self._view(rx)[offset:offset + n] = memoryview(out)[start:start + n]
        if start + n == len(out):
            out.clear()
            self._out_pos = 0
        else:
            self._out_pos = start + n
            self._arm()
        rx_sizes[chunk_index] = n
        self.stats.chunks += 1
        self.stats.bytes_in += n
        return 1, offset + n

    # ------------------------------------------------------------------------------------------ event loop
    def attach(self, loop, on_readable):
        """Call on_readable() from loop when reports are due (a timer, as there is no fd to watch)."""
        self._loop, self._callback = loop, on_readable
        self._arm()

    def detach(self):
        if self._timer is not None:
            self._timer.cancel()
        self._loop = self._callback = self._timer = None

    def _arm(self):
        loop = self._loop
        if loop is None:
            return
        if self._out_pos < len(self._out):
            delay = 0.0
        else:
            due = self.oms.next_due_ns()
            if due is None:
                return
            delay = max(0, due - self.clock()) / 1e9
        when = loop.time() + delay
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer, self._timer_when = loop.call_at(when, self._fire), when

    def _fire(self):
        self._timer = None
        if not self.closed:
            self._callback()
            self._arm()

    def _take(self, frames):
        try:
            with memoryview(frames) as view:
                size = view.nbytes
                self.oms.on_frames(view, self.clock())
        except FrameError:
            self.stats.oversize += 1
        return size


class EngineMarket:
    """The engine's own market state (its instruments table: bid, ask, last in ticks), as the venue sees it: the
    same quotes, no copy."""

    def __init__(self, instruments):
        self.instruments = instruments

    def touch(self, instrument, side):
        if not 0 <= instrument < len(self.instruments):
            return 0.0
        row = self.instruments[instrument]
        ticks = row["ask_ticks"] if side == SIDE_BUY else row["bid_ticks"]
        return float((ticks if ticks > 0 else row["last_ticks"]) * row["tick_size"])

    def update(self, md):  # market data reaches the engine, never the simulator directly
        return True


class InProcessOms(SimOmsTransport):
    """The simulated OMS inside the engine process, filling against the engine's market state. `instruments` and
    `market_data_count` are the engine's (its instruments table, and a callable giving how many market data
    updates it has applied): when that count moves, resting orders may now fill."""

    def __init__(self, instruments, market_data_count, config=SimOmsConfig(), clock=time.time_ns):
        super().__init__(config, clock, EngineMarket(instruments))
        self._market_data_count = market_data_count
        self._market_data_seen = 0
        self._n_instruments = len(instruments)

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        seen = self._market_data_count()
        if seen != self._market_data_seen:  # quotes moved since the last poll: resting orders may now fill
            self._market_data_seen = seen
            now = self.clock()
            for instrument in range(self._n_instruments):
                self.oms.match_resting(instrument, now)
        return super().poll(rx, offset, rx_sizes, chunk_index, max_chunks)


class NullOms:
    """Orders go nowhere; reports come from elsewhere (a recording). Meets the transport contract."""

    def __init__(self):
        self.stats = TransportStats()

    def send(self, frames):
        self.stats.sent += 1
        self.stats.bytes_out += len(frames)
        return True

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        return 0, offset
