"""The end-to-end harness over Aeron IPC: the media driver, the peer's two sides and the floor, on pyaeron.

    python -m bench.aeron_peer driver --dir D           the media driver every other process uses (external to all)
    python -m bench.aeron_peer floor --dir D [--cpu N]  the floor: the engine's Aeron calls, no engine

The harness (bench/e2e.py, transport "aeron") starts the driver first, in its own process on the peer's core, so
the engine, the floor and the peer are all its clients, as in a deployment with one driver per host (the engine's
[aeron] driver = "external"). Over IPC the driver carries no data: publications and subscriptions share its log
buffers in /dev/shm, and it only runs the conductor (its idle strategy: Aeron's backoff, parking 20-50 us).
The streams are the engine's defaults ([aeron] in engine/config/schema.py): signals 1001, orders 1003, reports
1004, each "aeron:ipc".

In the peer (bench/peer.py --aeron D): `AeronSignals` is loadgen.Sender with a publication for a socket (the due
frames of a pass are one message, at most MESSAGE_BYTES); `AeronOms` is oms_receiver.Receiver with a subscription
for the socket (each poll copies the order messages into the log; the read time is taken when the poll returns)
and a publication for the answers (cut into messages of whole report frames). The peer's loop is then Python: the
compiled loop (bench/peer_loop.py) calls libc, and pyaeron is a Python extension.

The floor (`AeronForwarder`) makes the calls the engine's Aeron path makes: poll the signals subscription into a
buffer, one order frame per signal (the signal's source, seq and ts_ns copied into a prebuilt frame, as
bench/floor.py), offered as one message per poll (cut at MESSAGE_BYTES, as adapters/aeron.py cuts a send), and
the reports polled and dropped. No decode, no risk, no books. Its loop is Python like the engine's driver, so
engine / floor is what the engine adds over pyaeron's own calls on this machine.
"""
import argparse
import gc
import json
import os
import signal
import sys
import time

import msgspec
import numpy as np
import pyaeron

from adapters.aeron import AeronDriverConfig, AeronNode, AeronUnavailable
from bench.floor import SMALL, SOURCE_SEQ, TS
from bench.loadgen import Sender
from bench.oms_receiver import CHUNK, Receiver
from kernels.dtypes import MSG_ORDER
from wire.records import ORDER_FRAME_SIZE, ORDER_FRAME_T, REPORT_FRAME_SIZE, SIGNAL_FRAME_SIZE, SIGNAL_FRAME_T, records

MESSAGE_BYTES = 65536     # the engine's [aeron] max_message_bytes: its subscriptions' room rule
SIGNALS, ORDERS, REPORTS = 1001, 1003, 1004
CHANNEL = "aeron:ipc"
FRAGMENTS = CHUNK // MESSAGE_BYTES  # messages per poll: what fits one read's room in the receiver's log
MAX_SIGNALS = MESSAGE_BYTES // SIGNAL_FRAME_SIZE
ORDERS_CUT = MESSAGE_BYTES // ORDER_FRAME_SIZE * ORDER_FRAME_SIZE
REPORTS_CUT = MESSAGE_BYTES // REPORT_FRAME_SIZE * REPORT_FRAME_SIZE


def node(directory):
    """A client of the driver already running in `directory` (started by `driver`)."""
    return AeronNode(msgspec.convert({"driver": "external", "directory": directory}, AeronDriverConfig))


class Link:
    """One process's Aeron client and the publications and subscriptions it made (closed together)."""

    def __init__(self, directory, timeout_s=10.0):
        self.node = node(directory)
        deadline = time.monotonic() + timeout_s
        while True:  # the driver process may still be starting
            try:
                self.client = self.node.acquire()
                break
            except AeronUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.opened = []

    def publication(self, stream_id):
        pub = self.client.add_publication(CHANNEL, stream_id)
        self.opened.append(pub)
        return pub

    def subscription(self, stream_id):
        sub = self.client.add_subscription(CHANNEL, stream_id)
        self.opened.append(sub)
        return sub

    def close(self):
        for x in self.opened:
            if not x.is_closed:
                x.close()
        self.node.close()


def offer_cut(pub, data, cut):
    """Offer `data` as messages of at most `cut` bytes (whole frames); returns the bytes taken (the rest was
    refused: back-pressure), or all of them when nobody subscribes (lost, as a datagram with no listener)."""
    size, pos = len(data), 0
    with memoryview(data) as view:
        while pos < size:
            piece = view[pos:pos + cut]
            r = pub.offer(piece)
            if r is not True:
                return size if r is pyaeron.NOT_CONNECTED else pos
            pos += len(piece)
    return pos


# ---------------------------------------------------------------------------------------------- the peer
class AeronSignals(Sender):
    """loadgen.Sender over the signals publication: a pass (the due frames back to back) is one message."""

    def __init__(self, publication, rate, duration, source, instruments, max_batch=None, seq_base=0):
        self.pub = publication
        max_batch = min(int(max_batch or MAX_SIGNALS), MAX_SIGNALS)
        super().__init__("aeron", None, None, rate, duration, source, instruments, max_batch, seq_base=seq_base)
        self.single = False  # the socket fast path of poll(); _poll stamps and offers one frame just as well

    def _open(self, host, port):
        self.sock, self.fd, self.vector = None, -1, None

    def _send(self, slot, n):
        lo = slot * SIGNAL_FRAME_SIZE
        r = self.pub.offer(self.view[lo:lo + n * SIGNAL_FRAME_SIZE])
        if r is True:
            return n
        if r is pyaeron.NOT_CONNECTED:  # the engine has not subscribed (yet): lost, counted
            self.errors += 1
            return n
        self.blocked += 1  # back-pressured: the same frames go on the next poll
        return 0

    def close(self):
        self.pend_len = 0
        self.view.release()
        self.frames = None


class AeronOms(Receiver):
    """oms_receiver.Receiver over Aeron: orders from a subscription into the log, answers on a publication."""

    def __init__(self, link, acks=True):
        self.link = link
        super().__init__(acks=acks)
        self.sub = link.subscription(ORDERS)
        self.pub = link.publication(REPORTS)
        self._at = 0
        self._handler = self._on_message  # bound once, not per poll

    def _listen(self, host, port):
        self.listener, self.port = None, 0

    @property
    def linked(self):
        return True  # offers to no subscriber are dropped in offer_cut

    def fileno(self):
        raise ValueError("an Aeron receiver has no descriptor to block on: --wait spin")

    def _on_message(self, buffer, header):
        size = len(buffer)
        self.logv[self._at:self._at + size] = buffer
        self._at += size

    def poll(self):
        pos = self.pos
        if pos + CHUNK > len(self.log):
            self._flush_log()
            pos = self.pos
        self._at = pos
        self.sub.poll(self._handler, FRAGMENTS)
        if self._at == pos:
            return 0
        return self._read(pos, self._at - pos, time.time_ns())

    def _send(self, data):
        if self.pending:
            self.pending += data
            self._flush()
            return
        took = offer_cut(self.pub, data, REPORTS_CUT)
        if took < len(data):
            self.stats["send_blocked"] += 1
            self.pending += data[took:]

    def _flush(self):
        took = offer_cut(self.pub, self.pending, REPORTS_CUT)
        del self.pending[:took]
        if self.pending:
            self.stats["send_blocked"] += 1

    def close(self):
        self.logv.release()


# ---------------------------------------------------------------------------------------------- the floor
class AeronForwarder:
    """The floor over Aeron: signals subscription -> one order frame per signal -> orders publication."""

    def __init__(self, link):
        self.signals = link.subscription(SIGNALS)
        self.orders = link.publication(ORDERS)
        self.reports = link.subscription(REPORTS)
        self.rx = bytearray(CHUNK)
        self.rxv = memoryview(self.rx)
        order = records(MSG_ORDER, 1)
        order["order_id"], order["strategy"], order["deploy"], order["qty"], order["price"] = 1, 0, 1, 1, 1.0
        self.out = bytearray(order.tobytes() * (CHUNK // SIGNAL_FRAME_SIZE))
        self.outv = memoryview(self.out)
        self.out_np = np.frombuffer(self.out, ORDER_FRAME_T)
        self.pending = bytearray()
        self._at = 0
        self._on_signals, self._on_reports = self._signal_message, self._report_message
        self.stats = {"signals": 0, "reads": 0, "sends": 0, "send_blocked": 0, "report_bytes": 0}

    def _signal_message(self, buffer, header):
        size = len(buffer)
        self.rxv[self._at:self._at + size] = buffer
        self._at += size

    def _report_message(self, buffer, header):
        self.stats["report_bytes"] += len(buffer)

    def step(self):
        """One pass: what the orders publication refused goes first; then signals in, orders out; reports."""
        if self.pending:
            self._offer(self.pending)
        else:
            self._at = 0
            self.signals.poll(self._on_signals, FRAGMENTS)
            if self._at:
                self.stats["reads"] += 1
                self._forward(self._at // SIGNAL_FRAME_SIZE)
        self.reports.poll(self._on_reports, FRAGMENTS)

    def _forward(self, k):
        if k > SMALL:
            sig = np.frombuffer(self.rx, SIGNAL_FRAME_T, count=k)
            o = self.out_np[:k]
            o["signal_source"], o["signal_seq"], o["signal_ts_ns"] = sig["source"], sig["seq"], sig["ts_ns"]
        else:
            out, rxv = self.outv, self.rxv
            (ss_s, ss_o, ss_n), (ts_s, ts_o, ts_n) = SOURCE_SEQ, TS
            s = q = 0
            for _ in range(k):
                out[q + ss_o:q + ss_o + ss_n] = rxv[s + ss_s:s + ss_s + ss_n]
                out[q + ts_o:q + ts_o + ts_n] = rxv[s + ts_s:s + ts_s + ts_n]
                s += SIGNAL_FRAME_SIZE
                q += ORDER_FRAME_SIZE
        self.stats["signals"] += k
        self._offer(self.outv[:k * ORDER_FRAME_SIZE])

    def _offer(self, data):
        took = offer_cut(self.orders, data, ORDERS_CUT)
        self.stats["sends"] += 1
        if took < len(data):
            self.stats["send_blocked"] += 1
            self.pending = bytearray(data[took:])
        else:
            self.pending = bytearray()


# ---------------------------------------------------------------------------------------------- processes
def _stop_flag():
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    return stop


def run_driver(args):
    """The media driver, embedded in this process (the project's AeronNode: its settings and clean-up), until a
    signal; prints `ready DIR`."""
    config = msgspec.convert({"directory": args.dir}, AeronDriverConfig)
    stop = _stop_flag()
    with AeronNode(config):
        print(f"ready {args.dir}", flush=True)
        while not stop:
            time.sleep(0.05)
    return 0


def run_floor(args):
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    link = Link(args.dir)
    fwd = AeronForwarder(link)
    deadline = time.monotonic() + 10
    while not fwd.orders.is_connected:  # the OMS (the harness's peer) subscribes first
        if time.monotonic() > deadline:
            raise SystemExit("floor: no OMS subscribed to the orders stream in 10 s")
        time.sleep(0.001)
    stop = _stop_flag()
    print("ready aeron", file=sys.stderr, flush=True)
    started = time.time_ns()
    gc.collect()
    gc.freeze()
    gc.disable()
    step = fwd.step
    try:
        while not stop:
            step()
    finally:
        link.close()
    fwd.stats["loop"] = "python"
    print(json.dumps({"engine": "floor", "seconds": (time.time_ns() - started) / 1e9, "floor": fwd.stats}),
          flush=True)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.aeron_peer", description=__doc__.splitlines()[0])
    p.add_argument("role", choices=("driver", "floor"))
    p.add_argument("--dir", required=True, help="the media driver's directory")
    p.add_argument("--cpu", type=int, default=None, help="floor: pin to this core")
    args = p.parse_args(argv)
    return {"driver": run_driver, "floor": run_floor}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
