"""The simulated OMS as its own process: `orchestrator sim-oms`.

TCP: the engine's OMS client connects and writes Order frames (the 8-byte header carries each body's length,
so the stream is frames back to back); the reports go back on the same connection. Each connection gets its
own SimulatedOms (seeded from the config, so a connection's reports depend only on what it sent and on the
market), and all of them share one MarketState.
UDP (optional, `--market-data-port`): MarketData frames, several to a datagram if you like; they update the
shared market and fill resting orders on every connection. Frames of other types are counted and ignored.

Reports are written on the first loop iteration at or after they are due (timers are as fine as the event
loop's: about 1 ms on uvloop), so on a busy server the socket sees them later than their ts_ns.

Fault injection, per connection: `drop_after` closes the connection after its N-th order (reports already
due are written first; later ones are lost with it); `stall_ms` stops reading for that long, once, after the
connection's first `stall_after` orders (0: as soon as it connects), so the client's writes back up. While
the client does not read its reports and our send buffer is full, we stop reading orders too.

Ends on SIGTERM or SIGINT with one summary line on stdout.
"""
import argparse
import asyncio
import signal
import sys
import threading
import time
import tomllib

import msgspec
import uvloop

from adapters.oms_sim import MarketState, SimOmsConfig, SimulatedOms, append_frame
from engine.wire import FrameError, iter_frames
from kernels.dtypes import MSG_MARKET_DATA

# the counts of each connection's SimulatedOms that the server's totals add up
_CORE_COUNTS = ("orders", "acks", "rejects", "partial_fills", "fills", "canceled", "malformed", "bad_type",
                "bad_header")

class SimOmsServer:
    """The asyncio side: a TCP server for orders and an optional UDP endpoint for market data."""

    def __init__(self, config=SimOmsConfig(), host="127.0.0.1", port=0, market_data_port=None, *,
                 drop_after=0, stall_ms=0, stall_after=0, clock=time.time_ns):
        self.config, self.host, self.port, self.market_data_port = config, host, port, market_data_port
        self.drop_after, self.stall_ms, self.stall_after = drop_after, stall_ms, stall_after
        self.clock = clock
        self.market = MarketState()
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
        self.oms = SimulatedOms(server.config, server.market)
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


def add_arguments(parser):
    """The `orchestrator sim-oms` options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=47200, help="TCP port for the engine's OMS link (0: any)")
    parser.add_argument("--market-data-port", type=int, default=None,
                        help="UDP port for MarketData frames to fill against (default: none)")
    parser.add_argument("--config", default=None,
                        help="TOML file whose [sim_oms] table (or top level) sets the options below")
    for name, kind, text in (
            ("ack-latency-us", int, "order -> ACK latency"),
            ("fill-latency-us", int, "order fillable -> fill latency"),
            ("reject-ratio", float, "share of valid orders rejected at random"),
            ("partial-fill-ratio", float, "share of fills split into 2-3 partial fills"),
            ("fee-per-unit", float, "fee in currency per unit filled"),
            ("resting-ttl-us", int, "cancel resting limit orders after this long (0: never)"),
            ("seed", int, "random seed")):
        default = getattr(SimOmsConfig(), name.replace("-", "_"))
        parser.add_argument(f"--{name}", type=kind, default=None, help=f"{text} (default {default})")
    parser.add_argument("--drop-after", type=int, default=0, metavar="N",
                        help="fault: close each connection after its N-th order (0: never)")
    parser.add_argument("--stall-ms", type=int, default=0,
                        help="fault: stop reading a connection for this long, once (0: never)")
    parser.add_argument("--stall-after", type=int, default=0, metavar="N",
                        help="fault: stall after the connection's N-th order (default 0: on connect)")
    return parser


def config_from_args(args):
    """SimOmsConfig from --config and the flags given (flags win); errors name the key at fault."""
    fields = {}
    if args.config:
        with open(args.config, "rb") as f:
            doc = tomllib.load(f)
        fields.update(doc.get("sim_oms", doc))
    for key in SimOmsConfig.__struct_fields__:
        value = getattr(args, key, None)
        if value is not None:
            fields[key] = value
    try:
        return msgspec.convert(fields, SimOmsConfig)
    except msgspec.ValidationError as e:
        where = f" in {args.config}" if args.config else ""
        raise SystemExit(f"sim-oms: bad config{where}: {e}") from None


def main(args):
    """Run `orchestrator sim-oms` with parsed args; return the exit code."""
    config = config_from_args(args)
    for key in ("drop_after", "stall_ms", "stall_after"):
        if getattr(args, key) < 0:
            raise SystemExit(f"sim-oms: --{key.replace('_', '-')} must be >= 0")
    serve(config, args.host, args.port, args.market_data_port, drop_after=args.drop_after,
          stall_ms=args.stall_ms, stall_after=args.stall_after)
    return 0


def run(argv=None):
    """`python -m engine.sim_oms ...`: the same as `orchestrator sim-oms ...`."""
    parser = add_arguments(argparse.ArgumentParser(prog="sim-oms", description=__doc__.splitlines()[0]))
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(run())
