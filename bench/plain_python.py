"""The same work in plain Python: what a user would write without this project. The reference every report
measures our speed-up against.

The engine is reference/stream.py: the engine's rules over Python objects (slots rows, dicts, lists), msgspec to
decode the documented wire format (wire/schema.py's Structs), one event at a time in arrival order, the simulated
venue in process when the config says `[oms] kind = "sim"`. This file is its I/O shell: asyncio for the sockets,
order frames out to the OMS (msgspec-encoded), the command line and the JSON report. bench/test_plain_python.py
holds it to the kernels' orders and reject reasons on the bench workloads.

In process: `PlainEngine(config).on_bytes(frames, now_ns) -> order frames` (config: a directory or a loaded
Config). As a process (the end-to-end harness runs it like the engine): `python -m bench.plain_python CONFIG --udp
H:P --tcp H:P --oms H:P`, stops on SIGINT/SIGTERM and prints a JSON report on stdout.
"""
import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from pathlib import Path

import msgspec

from engine.config import load_config
from kernels.arena import FIRST_LISTENER, SOURCE_OMS
from kernels.dtypes import COUNTER_NAMES, MSG_ORDER, REASON_NAMES, STATE_NAMES, WIRE_VERSION
from reference.stream import Stream
from wire.frames import FRAME_OK, HEADER, scan_frames
from wire.schema import Order


class PlainEngine:
    """reference/stream.py behind bytes in, order frames out. Not thread-safe."""

    def __init__(self, config, clock=time.time_ns):
        self.config = load_config(config) if isinstance(config, (str, Path)) else config
        self.stream = Stream.from_config(self.config)
        self.clock = clock
        self.encoder = msgspec.msgpack.Encoder()

    def on_bytes(self, data, now_ns=None, source=FIRST_LISTENER):
        """One chunk of frames arrived now from `source` (signals and market data on a listener, reports on the OMS
        link, SOURCE_OMS): the order frames it made (bytes-like; empty when it made none, or when the venue runs in
        process)."""
        stream = self.stream
        stream.feed(self.clock() if now_ns is None else now_ns, data, source)
        out = b""
        orders = stream.orders
        if orders:
            if stream.venue is None:
                out = bytearray()
                encode = self.encoder.encode
                for o in orders:  # header + body (for a 90-byte frame, faster than wire.frames.append_frame)
                    body = encode(Order(o.order_id, o.strategy, o.deploy, o.account, o.instrument, o.side, o.order_type,
                                        o.qty, o.price, o.ts_ns, o.signal_source, o.signal_seq, o.signal_ts_ns))
                    out += HEADER.pack(len(body), WIRE_VERSION, MSG_ORDER, 0)
                    out += body
            orders.clear()  # gone to the OMS
        if stream.rejects:  # rejects and fills are only counted here
            stream.rejects.clear()
        if stream.fills:
            stream.fills.clear()
        return out

    def report(self):
        rules = self.stream.rules
        return {"engine": "plain_python", "counters": dict(zip(COUNTER_NAMES, rules.counters)),
                "strategies": {
                    spec.name: {"state": STATE_NAMES[st.state], "orders": st.orders, "fills": st.fills,
                                "rejects": {"total": st.rejects,
                                            "by_reason": {REASON_NAMES[b]: c for b, c in enumerate(counts) if c}}}
                    for spec, st, counts in zip(self.config.strategies, rules.strategies, rules.reason_counts)}}


# ---------------------------------------------------------------------------------------------- the process
def _whole_frames(buffer):
    """Take the whole frames at the start of a stream's buffer (all of it after an untrusted header: the engine
    counts it, and nothing after it can be framed); the rest waits for more bytes."""
    end, verdict = scan_frames(buffer, 0, len(buffer))
    end = len(buffer) if verdict != FRAME_OK else end
    data = bytes(buffer[:end])
    del buffer[:end]
    return data


class _Oms(asyncio.Protocol):
    def __init__(self, engine):
        self.engine, self.transport, self.buffer = engine, None, bytearray()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        reports = _whole_frames(self.buffer)
        if reports:
            self.engine.on_bytes(reports, source=SOURCE_OMS)


class _Signals(asyncio.Protocol):
    """TCP signals in: frames back to back; whole frames are processed at once, the rest waits."""

    def __init__(self, engine, oms):
        self.engine, self.oms, self.buffer = engine, oms, bytearray()

    def data_received(self, data):
        self.buffer += data
        frames = _whole_frames(self.buffer)
        if frames:
            out = self.engine.on_bytes(frames)
            if out:
                self.oms.transport.write(out)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, engine, oms):
        self.engine, self.oms = engine, oms

    def datagram_received(self, data, addr):
        out = self.engine.on_bytes(data)
        if out:
            self.oms.transport.write(out)


def _address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(args):
    engine = PlainEngine(args.config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    oms = _Oms(engine)
    await loop.create_connection(lambda: oms, *_address(args.oms))
    closers = []
    if args.udp:
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(engine, oms),
                                                           local_addr=_address(args.udp))
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        closers.append(transport)
    if args.tcp:
        server = await loop.create_server(lambda: _Signals(engine, oms), *_address(args.tcp))
        closers.append(server)
    print(f"plain-python engine listening udp {args.udp} tcp {args.tcp}", file=sys.stderr, flush=True)
    started = time.time_ns()
    await stop.wait()
    for c in closers:
        c.close()
    oms.transport.close()
    report = engine.report()
    report["seconds"] = (time.time_ns() - started) / 1e9
    print(json.dumps(report), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.plain_python", description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--udp", default=None, help="host:port to receive signal datagrams on")
    p.add_argument("--tcp", default=None, help="host:port to accept signal streams on")
    p.add_argument("--oms", required=True, help="host:port of the OMS (TCP)")
    asyncio.run(serve(args=p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
