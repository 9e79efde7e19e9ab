"""The simulated venue served to an engine in another process (`orchestrator sim-oms`): over TCP and over Aeron.

TCP: the engine's OMS client connects and writes Order frames (the 8-byte header carries each body's length,
so the stream is frames back to back); the reports go back on the same connection. Each connection gets its
own SimulatedOms (seeded from the config, so a connection's reports depend only on what it sent and on the
market), and all of them share one MarketState and one table of the orders taken. When a connection ends, its
working orders are done as they stand (cancel on disconnect) and their unsent reports are dropped; a
StatusRequest on a later connection gets each order's EXEC_STATUS from that table (reconciliation).
UDP (optional, `--market-data-port`): MarketData frames, several to a datagram if you like; they update the
shared market and fill resting orders on every connection. Frames of other types are counted and ignored.

Reports are written on the first loop iteration at or after they are due (timers are as fine as the event
loop's: about 1 ms on uvloop), so on a busy server the socket sees them later than their ts_ns.

Fault injection, per connection: `drop_after` closes the connection after its N-th order (reports already
due are written first; later ones are lost with it); `stall_ms` stops reading for that long, once, after the
connection's first `stall_after` orders (0: as soon as it connects), so the client's writes back up. While
the client does not read its reports and our send buffer is full, we stop reading orders too.

Aeron (`--aeron ENGINE_CONFIG`): orders, reports and market data on the streams of that engine config's [aeron]
table, through the media driver running in its directory (the engine's embedded one, or an external driver):
see AeronSimOms. Fault injection is TCP only.

Ends on SIGTERM or SIGINT with one summary line on stdout.
"""
import asyncio
import signal
import sys
import threading
import time

import msgspec
import numpy as np
import pyaeron
import uvloop

from adapters.aeron import (
    AeronNode, AeronReceiver, AeronReceiverConfig, AeronSender, AeronSenderConfig, AeronUnavailable,
)
from adapters.base import TransportClosed
from kernels.dtypes import MSG_MARKET_DATA
from sim.venue import MarketState, SimOmsConfig, SimulatedOms
from wire.frames import FrameError, append_frame, iter_frames

# the counts of each connection's SimulatedOms that the server's totals add up
_CORE_COUNTS = ("orders", "acks", "rejects", "partial_fills", "fills", "canceled", "status_replies", "malformed",
                "bad_type", "bad_header")

class SimOmsServer:
    """The asyncio side: a TCP server for orders and an optional UDP endpoint for market data."""

    def __init__(self, config=SimOmsConfig(), host="127.0.0.1", port=0, market_data_port=None, *,
                 drop_after=0, stall_ms=0, stall_after=0, clock=time.time_ns):
        self.config, self.host, self.port, self.market_data_port = config, host, port, market_data_port
        self.drop_after, self.stall_ms, self.stall_after = drop_after, stall_ms, stall_after
        self.clock = clock
        self.market = MarketState()
        self.orders = {}  # every order taken, over all connections: what a StatusRequest is answered from
        self.connections = set()
        # server-side counts; totals() adds the order-side counts of the connections' simulators
        self.counts = dict(connections=0, disconnects=0, dropped=0, stalls=0, reports=0, market_data=0,
                           market_data_invalid=0, market_data_malformed=0, market_data_bad_type=0)
        self._gone = dict.fromkeys(_CORE_COUNTS, 0)  # order-side counts of the closed connections
        self._server = self._udp = None

    async def start(self):
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _OrderConnection(self), self.host, self.port)
        if self.market_data_port is not None:
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _MarketDataProtocol(self), local_addr=(self.host, self.market_data_port))
        return self

    @property
    def address(self):
        return self._server.sockets[0].getsockname()[:2]

    @property
    def market_data_address(self):
        return None if self._udp is None else self._udp.get_extra_info("sockname")[:2]

    async def close(self):
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.transport.abort()
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let connection_lost callbacks run

    def on_market_data(self, data):
        """One datagram of MarketData frames: update the market, fill what it crosses on every connection."""
        now, counts = self.clock(), self.counts
        try:
            for msg_type, md in iter_frames(data):
                if msg_type != MSG_MARKET_DATA:
                    counts["market_data_bad_type"] += 1
                elif not self.market.update(md):
                    counts["market_data_invalid"] += 1
                else:
                    counts["market_data"] += 1
                    for conn in self.connections:
                        if conn.oms.match_resting(md.instrument, now):
                            conn.flush()
        except FrameError:
            counts["market_data_malformed"] += 1  # the rest of the datagram is dropped

    def totals(self):
        """The server's counts plus the order-side counts of every connection, open or gone."""
        totals = {**self.counts, **self._gone}
        for conn in self.connections:
            conn.add_counts(totals)
        return totals

    def summary(self):
        return "sim-oms: " + " ".join(f"{k}={v}" for k, v in self.totals().items())


class _OrderConnection(asyncio.Protocol):
    def __init__(self, server):
        self.server = server
        self.oms = SimulatedOms(server.config, server.market, server.orders)
        self.transport = None
        self.buffer = bytearray()
        self.encoder = msgspec.msgpack.Encoder()
        self.reports = []
        self.stalled = self.write_paused = self.closing = False
        self.stall_pending = server.stall_ms > 0
        self.timer = None
        self.timer_due = 0

    def connection_made(self, transport):
        self.transport = transport
        self.server.connections.add(self)
        self.server.counts["connections"] += 1
        if self.stall_pending and self.server.stall_after == 0:
            self._stall()

    def connection_lost(self, exc):
        self.oms.abandon()  # cancel on disconnect: the orders of a session end with it
        self.server.connections.discard(self)
        self.add_counts(self.server._gone)
        self.server.counts["disconnects"] += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def add_counts(self, totals):
        stats = self.oms.stats
        for key in _CORE_COUNTS:
            totals[key] += getattr(stats, key)

    def data_received(self, data):
        self.buffer += data
        self._take()

    def _take(self):
        if self.stalled or self.write_paused or self.closing:
            return
        server, stats = self.server, self.oms.stats
        budgets = []  # orders to take before a fault fires
        if server.drop_after:
            budgets.append(server.drop_after - stats.orders)
        if self.stall_pending:
            budgets.append(server.stall_after - stats.orders)
        try:
            used = self.oms.on_frames(self.buffer, server.clock(), min(budgets, default=-1))
        except FrameError:
            self.transport.abort()  # no frame boundary to find again
            return
        del self.buffer[:used]
        self.flush()
        if server.drop_after and stats.orders >= server.drop_after:
            self.closing = True
            server.counts["dropped"] += 1
            self.transport.close()
        elif self.stall_pending and stats.orders >= server.stall_after:
            self._stall()

    def _stall(self):
        self.stall_pending, self.stalled = False, True
        self.server.counts["stalls"] += 1
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(self.server.stall_ms / 1000, self._unstall)

    def _unstall(self):
        self.stalled = False
        if not self.transport.is_closing():
            if not self.write_paused:
                self.transport.resume_reading()
            self._take()

    def pause_writing(self):
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self):
        self.write_paused = False
        if not self.stalled and not self.transport.is_closing():
            self.transport.resume_reading()
            self._take()

    def flush(self):
        """Write the reports due now; arm a timer for the next one."""
        if self.transport is None or self.transport.is_closing():
            return
        reports = self.oms.pop_due(self.server.clock(), self.reports)
        if reports:
            out, encoder = bytearray(), self.encoder  # new each time: the transport may keep what it has not sent
            for report in reports:
                append_frame(encoder, report, out)
            self.server.counts["reports"] += len(reports)
            reports.clear()
            self.transport.write(out)
        due = self.oms.next_due_ns()
        if due is None:
            return
        if self.timer is not None:
            if self.timer_due <= due:
                return
            self.timer.cancel()
        delay = max(0, due - self.server.clock()) / 1e9
        self.timer, self.timer_due = asyncio.get_running_loop().call_later(delay, self._on_timer), due

    def _on_timer(self):
        self.timer = None
        self.flush()


class _MarketDataProtocol(asyncio.DatagramProtocol):
    def __init__(self, server):
        self.server = server

    def datagram_received(self, data, addr):
        self.server.on_market_data(data)


# ---------------------------------------------------------------------------------------------- aeron
class _StampedOms(SimulatedOms):
    """A SimulatedOms that also keeps, per order, its arrival time minus its signal's ts_ns (signal -> OMS)."""

    def __init__(self, config, capacity):
        super().__init__(config)
        self.signal_to_oms_ns = np.zeros(capacity, np.int64)
        self.recorded = 0

    def on_order(self, order, now_ns):
        if self.recorded < len(self.signal_to_oms_ns):
            self.signal_to_oms_ns[self.recorded] = now_ns - order.signal_ts_ns
            self.recorded += 1
        super().on_order(order, now_ns)


class AeronSimOms:
    """The simulated OMS over Aeron: orders in on one stream, market data in on another (optional: it fills
    resting orders), reports out on a third. A duty cycle, not asyncio: `work()` does one round (market data,
    orders, the reports now due) and returns how much it did; `run(stop)` repeats it and idles with an Aeron idle
    strategy (which releases the GIL) when a round finds nothing. One SimulatedOms: one engine at a time.

    Reports refused by back-pressure wait for the next round; with no engine subscribed to the reports stream
    they are dropped and counted (`reports_lost`). A chunk whose frame headers cannot be trusted is counted
    (`bad_chunks`) and the rest of it dropped. With `latency_capacity`, `signal_to_oms_ns()` gives each order's
    arrival minus its signal's ts_ns (the engine's whole signal -> order path, on one host's clock)."""

    def __init__(self, node, orders, reports, market_data=None, config=SimOmsConfig(), *, clock=time.time_ns,
                 latency_capacity=0, rx_bytes=1 << 20, rx_chunks=1024):
        self.clock = clock
        self.oms = _StampedOms(config, latency_capacity)
        # the streams are validated AeronStreamConfig already (decoded from a config): no decoding needed
        self.orders_in = AeronReceiver(AeronReceiverConfig(streams=(orders,)), node)
        self.market_in = None if market_data is None else AeronReceiver(AeronReceiverConfig(streams=(market_data,)),
                                                                         node)
        self.reports_out = AeronSender(AeronSenderConfig(stream=reports), node)
        self.counts = dict(reports=0, reports_lost=0, bad_chunks=0)
        self._rx = np.zeros(rx_bytes, np.uint8)
        self._rx_sizes = np.zeros(rx_chunks, np.int32)
        self._encoder = msgspec.msgpack.Encoder()
        self._reports = []
        self._out = bytearray()  # encoded reports not yet taken by the publication
        self._out_count = 0

    def transports(self):
        return [t for t in (self.orders_in, self.market_in, self.reports_out) if t is not None]

    def open(self):
        try:
            for transport in self.transports():
                transport.open()
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        for transport in self.transports():
            transport.close()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def work(self):
        """One round; the number of chunks taken and reports sent (0: nothing to do)."""
        done = 0
        if self.market_in is not None:
            done += self._take(self.market_in)
        done += self._take(self.orders_in)
        self.oms.pop_due(self.clock(), self._reports)
        if self._reports:
            for report in self._reports:
                append_frame(self._encoder, report, self._out)
            self._out_count += len(self._reports)
            self._reports.clear()
        if self._out:
            try:
                sent = self.reports_out.send(self._out)
            except TransportClosed:  # nobody subscribes to the reports: no engine
                self.counts["reports_lost"] += self._out_count
                sent = True
            else:
                self.counts["reports"] += self._out_count if sent else 0
            if sent:
                done += self._out_count
                self._out.clear()
                self._out_count = 0
        return done

    def _take(self, receiver):
        n, end = receiver.poll(self._rx, 0, self._rx_sizes, 0, len(self._rx_sizes))
        if n:
            now, pos = self.clock(), 0
            with memoryview(self._rx) as view:
                for size in self._rx_sizes[:n].tolist():
                    try:
                        self.oms.on_frames(view[pos:pos + size], now)
                    except FrameError:
                        self.counts["bad_chunks"] += 1
                    pos += size
        return n

    def run(self, stop, idle=None):
        """work() until `stop` (a threading.Event) is set; idle (default backoff) between empty rounds."""
        idle = idle or pyaeron.IdleStrategy.backoff()
        while not stop.is_set():
            idle.idle(self.work())

    def signal_to_oms_ns(self):
        return self.oms.signal_to_oms_ns[:self.oms.recorded]

    def totals(self):
        return {**{key: getattr(self.oms.stats, key) for key in _CORE_COUNTS}, **self.counts}

    def summary(self):
        return "sim-oms: " + " ".join(f"{k}={v}" for k, v in self.totals().items())


IDLE_STRATEGIES = {"backoff": lambda: pyaeron.IdleStrategy.backoff(), "yield": lambda: pyaeron.IdleStrategy.yielding(),
         "sleeping": lambda: pyaeron.IdleStrategy.sleeping(100_000), "spin": lambda: pyaeron.IdleStrategy.busy_spin()}


def serve_aeron(config, driver, orders, reports, market_data, idle="backoff"):
    """Run the simulated OMS over Aeron until SIGTERM or SIGINT: orders, reports and market data on the given
    streams (AeronStreamConfig), through the external media driver `driver` (an AeronDriverConfig: the engine's
    embedded one, or a standalone driver), waiting up to its timeout_ms for it to run. Print a ready line, then
    a summary line; return the counts."""
    server = AeronSimOms(AeronNode(driver), orders, reports, market_data, config)
    deadline = time.monotonic() + driver.timeout_ms / 1000
    while True:
        try:
            server.open()
            break
        except AeronUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    print(f"sim-oms listening on aeron {orders}, reports on {reports}, market data on {market_data}", flush=True)
    try:
        server.run(stop, IDLE_STRATEGIES[idle]())
    except TransportClosed as e:  # the driver went (the engine that embeds it exited)
        print(f"sim-oms: {e}", file=sys.stderr, flush=True)
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(server.summary(), flush=True)
    return server.totals()


# ---------------------------------------------------------------------------------------------- process
async def _serve(config, host, port, market_data_port, stop=None, **faults):
    server = await SimOmsServer(config, host, port, market_data_port, **faults).start()
    h, p = server.address
    line = f"sim-oms listening on tcp {h}:{p}"
    if server.market_data_address is not None:
        mh, mp = server.market_data_address
        line += f", market data on udp {mh}:{mp}"
    print(line, flush=True)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
    print(server.summary(), flush=True)
    return server.totals()


def serve(config=SimOmsConfig(), host="127.0.0.1", port=0, market_data_port=None, *, drop_after=0, stall_ms=0,
          stall_after=0):
    """Run the simulated OMS on uvloop until SIGTERM or SIGINT; print a ready line, then a summary line.

    Port 0 lets the OS pick; the ready line `sim-oms listening on tcp HOST:PORT[, market data on udp
    HOST:PORT]` says which. Returns the server's counts.
    """
    return uvloop.run(_serve(config, host, port, market_data_port, drop_after=drop_after, stall_ms=stall_ms,
                             stall_after=stall_after))
