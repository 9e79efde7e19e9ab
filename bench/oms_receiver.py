"""The bench's OMS end: accepts the engine's OMS connection, stamps every order frame, answers from byte templates.

`Receiver` is polled from a busy loop (bench/peer.py runs it beside the load generator on one core; `python -m
bench.oms_receiver --port P` runs one alone). Per poll: one non-blocking `recv_into` straight into a preallocated
log; the wall clock (time.time_ns, the load generator's clock) is read the moment it returns and kept with the
read's end offset, so every order frame gets the time of the read that completed it. Nothing is decoded while the
clock runs: `collect()` reads the log with numpy afterwards (source, seq, signal ts_ns from each order; recv_ns
from its read).

Answers, so the engine's books keep turning: per order an ACK and a FILL of the whole quantity at the order's
price. The engine's order frames are fixed width (wire/records.ORDER_FRAME_T) and a report frame shares their field
tags, so the reports are prebuilt byte runs and only the bytes that differ are copied from the order (order_id,
strategy, deploy: 19 bytes; qty and price: 18; the ACK's leaves) plus the read's time: a bytes join, well under a
microsecond per order, no numpy call. A read of more than SMALL_READ orders is answered with numpy instead
(bench/frames.fills_for: tens of ns per order). Answers are owed, not sent at once: `flush_if` sends them when
FLUSH_ORDERS are owed, the oldest has waited FLUSH_AGE_NS, or the caller's loop has FLUSH_GAP_NS before its next
duty, so one send carries many at high rates and none delays a signal that is due. Sends are non-blocking; what
does not fit waits in `pending` and goes first. bench/peer_loop.py runs the same reading and answering compiled,
on this object's buffers.

An engine that does not write fixed-width frames (the plain-Python reference encodes with msgspec) is read frame
by frame (wire/frames.py) and decoded with msgspec: slow, counted (`slow_frames`), and meant for low rates.
"""
import argparse
import json
import select
import signal
import socket
import sys
import time
from array import array

import numpy as np

from bench.frames import fills_for, report_frames
from kernels.dtypes import EXEC_ACK, EXEC_FILL, FRAME_HEADER_SIZE, MSG_ORDER
from wire.frames import iter_frames, scan_frames
from wire.records import ORDER_FRAME_SIZE, ORDER_FRAME_T, REPORT_FRAME_SIZE, REPORT_FRAME_T

SMALL_READ = 16               # orders per read answered byte by byte; more: with numpy
CHUNK = 1 << 20               # bytes per recv_into at most
BIG_OUT = 8192                # report frames preallocated for the numpy answers
FLUSH_ORDERS = 64             # answers owed: sent at once when this many are waiting ...
FLUSH_AGE_NS = 200_000        # ... or the oldest has waited this long ...
FLUSH_GAP_NS = 20_000         # ... or the loop has this long before its next signal is due (idle)
_BODY = ORDER_FRAME_SIZE - FRAME_HEADER_SIZE
_O, _R = ORDER_FRAME_T.fields, REPORT_FRAME_T.fields
# Bytes copied from an order frame into its reports; the tags are the same on both sides (tests/bench checks it).
IDS_AT, IDS_LEN = _O["order_id_tag"][1], _O["deploy"][1] + 4 - _O["order_id_tag"][1]   # order_id, strategy, deploy
QP_AT, QP_LEN = _O["qty_tag"][1], _O["price"][1] + 8 - _O["qty_tag"][1]              # qty, price (with tags)
SOURCE_AT = _O["signal_source"][1]                                                    # u32, big-endian
assert _O["price_tag"][1] == QP_AT + 9 and _R["order_id_tag"][1] == IDS_AT


def answer_template(acks=True):
    """The report frames answering one order, everything but the copied bytes filled in: ACK (qty 0) and FILL
    (leaves 0), or the FILL alone."""
    out = report_frames(2 if acks else 1)
    out["exec_type"] = (EXEC_ACK, EXEC_FILL) if acks else (EXEC_FILL,)
    return out.tobytes()


def _pieces(report, copied):
    """The fixed byte runs of one report frame between the `copied` (offset, length) fields, in order."""
    out, pos = [], 0
    for at, n in copied:
        out.append(report[pos:at])
        pos = at + n
    out.append(report[pos:])
    return out


_T = answer_template(True)
_TS = _R["ts_ns"][1]
# ACK: ids | price (tag + value) | leaves = the order's qty | ts;  FILL: ids | qty, price (tags + values) | ts
ACK_PIECES = _pieces(_T[:REPORT_FRAME_SIZE], [(IDS_AT, IDS_LEN), (_R["price_tag"][1], 9), (_R["leaves"][1], 8),
                                              (_TS, 8)])
FILL_PIECES = _pieces(_T[REPORT_FRAME_SIZE:], [(IDS_AT, IDS_LEN), (_R["qty_tag"][1], QP_LEN), (_TS, 8)])


class Receiver:
    """The OMS end of one engine: listen on host:port, accept, read, stamp, answer (`poll`); `collect()` the orders
    of the window since the last collect."""

    def __init__(self, host="127.0.0.1", port=0, acks=True, log_bytes=96 << 20):
        self._listen(host, port)
        self.acks = acks
        self.conn = None
        self.log = bytearray(log_bytes)
        self.logv = memoryview(self.log)
        self.pos = 0                  # bytes in the log
        self.done = 0                 # bytes of whole frames in the log (answered)
        self.read_end, self.read_ns = array("q"), array("q")
        self.parts = []               # (source, seq, ts_ns, recv_ns) arrays of flushed logs and slow frames
        self.slow_rows = []           # (source, seq, ts_ns, recv_ns) of frames decoded one by one
        self.slow = False
        self.window_orders = 0        # orders of `source` since the last collect (what a drain waits for)
        self.source = -1              # the signal source of the run under way (-1: count every order)
        self.last_data_ns = 0
        self.big_out = report_frames(BIG_OUT)
        self.owed, self.owed_parts, self.owed_since = 0, [], 0   # answers built, not sent yet
        self.pending = bytearray()
        self.stats = {"connections": 0, "reads": 0, "bytes": 0, "orders": 0, "reports": 0, "numpy_reads": 0,
                      "slow_frames": 0, "send_blocked": 0, "log_flushes": 0}

    def _listen(self, host, port):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(4)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]

    @property
    def linked(self):
        """An engine is connected: answers have somewhere to go."""
        return self.conn is not None

    def fileno(self):
        return self.conn.fileno() if self.conn is not None else self.listener.fileno()

    def _accept(self):
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return False
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        conn.setblocking(False)
        self.conn = conn
        self.stats["connections"] += 1
        return True

    def poll(self):
        """One non-blocking read; returns the orders it completed (0: nothing read)."""
        conn = self.conn
        if conn is None:
            self._accept()
            return 0
        pos = self.pos
        if pos + CHUNK > len(self.log):
            self._flush_log()
            pos = self.pos
        try:
            n = conn.recv_into(self.logv[pos:pos + CHUNK])
        except BlockingIOError:
            return 0
        except (ConnectionResetError, ConnectionAbortedError):
            n = 0
        now = time.time_ns()
        if n == 0:  # the engine went away (stopped, or dropped the link): serve the next connection
            conn.close()
            self.conn, self.pending, self.owed, self.owed_parts = None, bytearray(), 0, []
            return 0
        return self._read(pos, n, now)

    def _read(self, pos, n, now):
        """n bytes arrived in the log at pos at wall time `now`: note the read, answer the orders it completed."""
        end = pos + n
        self.pos = end
        self.read_end.append(end)
        self.read_ns.append(now)
        self.last_data_ns = now
        st = self.stats
        st["reads"] += 1
        st["bytes"] += n
        if self.slow:
            return self._slow(now)
        k = (end - self.done) // ORDER_FRAME_SIZE
        if k:
            return self._answer(k, now)
        return 0

    def _answer(self, k, now):
        """Build the answers to the k whole fixed-width order frames from self.done (sent by `flush`); returns k."""
        log, o, parts = self.log, self.done, self.owed_parts
        mine = k
        if k > SMALL_READ:
            orders = np.frombuffer(self.log, ORDER_FRAME_T, count=k, offset=o)
            if not (np.all(orders["frame_length"] == _BODY) and np.all(orders["frame_type"] == MSG_ORDER)):
                return self._go_slow(now)
            self.stats["numpy_reads"] += 1
            if self.source >= 0:
                mine = int(np.count_nonzero(orders["signal_source"] == self.source))
            out = self.big_out if 2 * k <= len(self.big_out) else report_frames(2 * k)
            parts.append(fills_for(orders, now, out, acks=self.acks).tobytes())
        else:
            a0, a1, a2, a3, a4 = ACK_PIECES
            f0, f1, f2, f3 = FILL_PIECES
            ts = now.to_bytes(8, "big")
            for _ in range(k):
                if log[o] != _BODY or log[o + 5] != MSG_ORDER:
                    return self._go_slow(now)
                ids, qp = log[o + IDS_AT:o + IDS_AT + IDS_LEN], log[o + QP_AT:o + QP_AT + QP_LEN]
                if self.source >= 0 and int.from_bytes(log[o + SOURCE_AT:o + SOURCE_AT + 4]) != self.source:
                    mine -= 1
                if self.acks:
                    parts += (a0, ids, a1, qp[9:], a2, qp[1:9], a3, ts, a4)
                parts += (f0, ids, f1, qp, f2, ts, f3)
                o += ORDER_FRAME_SIZE
        if not self.owed:
            self.owed_since = now
        self.owed += k
        self.done += k * ORDER_FRAME_SIZE
        self.window_orders += mine
        self.stats["orders"] += k
        self.stats["reports"] += k * (2 if self.acks else 1)
        if self.owed >= FLUSH_ORDERS:
            self.flush()
        return k

    def flush_if(self, now, idle_ns):
        """Send the answers owed if the caller has idle_ns before its next duty, or they are many or old.
        Returns True if it sent (or tried to)."""
        if (self.owed or self.pending) and (idle_ns >= FLUSH_GAP_NS or now - self.owed_since >= FLUSH_AGE_NS):
            self.flush()
            return True
        return False

    def flush(self):
        """Send every answer owed (non-blocking: what does not fit waits in `pending`)."""
        if not self.linked:
            self.owed, self.owed_parts = 0, []
            return
        if self.owed_parts:
            data = b"".join(self.owed_parts)
            self.owed_parts.clear()
            self.owed = 0
            self._send(data)
        elif self.pending:
            self._flush()

    def _send(self, data):
        if self.pending:
            self.pending += data
            self._flush()
            return
        try:
            got = self.conn.send(data)
        except BlockingIOError:
            got = 0
        except (BrokenPipeError, ConnectionResetError):
            return
        if got < len(data):
            self.stats["send_blocked"] += 1
            self.pending += data[got:]

    def _flush(self):
        try:
            got = self.conn.send(self.pending)
        except BlockingIOError:
            self.stats["send_blocked"] += 1
            return
        except (BrokenPipeError, ConnectionResetError):
            self.pending = bytearray()
            return
        del self.pending[:got]

    # -------------------------------------------------------------------------------- frames of another width
    def _go_slow(self, now):
        """A frame that is not a fixed-width Order: from here on, frame by frame with msgspec."""
        self._flush_log()
        self.slow = True
        return self._slow(now)

    def _slow(self, now):
        log = self.log
        whole, _ = scan_frames(log, self.done, self.pos)
        if whole <= self.done:
            return 0
        rows, n, mine = [], 0, 0
        for msg_type, msg in iter_frames(bytes(log[self.done:whole])):
            self.stats["slow_frames"] += 1
            if msg_type == MSG_ORDER:
                rows.append((msg.order_id, msg.strategy, msg.deploy, msg.qty, msg.price))
                self.slow_rows.append((msg.signal_source, msg.signal_seq, msg.signal_ts_ns, now))
                n += 1
                mine += self.source < 0 or msg.signal_source == self.source
        if rows:
            orders = np.array(rows, [("order_id", "u8"), ("strategy", "u4"), ("deploy", "u4"), ("qty", "i8"),
                                     ("price", "f8")])
            out = self.big_out if 2 * n <= len(self.big_out) else report_frames(2 * n)
            self.owed_parts.append(fills_for(orders, now, out, acks=self.acks).tobytes())
            if not self.owed:
                self.owed_since = now
            self.owed += n
        self.done = whole
        self._compact()
        self.window_orders += mine
        self.stats["orders"] += n
        self.stats["reports"] += n * (2 if self.acks else 1)
        return n

    # -------------------------------------------------------------------------------- after the clock
    def _flush_log(self):
        """Decode the whole fixed-width frames of the log into arrays (numpy, once) and keep only the partial tail."""
        k = self.done // ORDER_FRAME_SIZE
        if k and not self.slow:
            orders = np.frombuffer(self.log, ORDER_FRAME_T, count=k)
            ends = np.arange(1, k + 1, dtype=np.int64) * ORDER_FRAME_SIZE
            read_end = np.frombuffer(self.read_end, np.int64)
            idx = np.minimum(np.searchsorted(read_end, ends, side="left"), len(read_end) - 1)
            self.parts.append((orders["signal_source"].astype(np.uint32), orders["signal_seq"].astype(np.uint64),
                               orders["signal_ts_ns"].astype(np.int64), np.frombuffer(self.read_ns, np.int64)[idx]))
            self.stats["log_flushes"] += 1
        self._compact()

    def _compact(self):
        tail = self.pos - self.done
        if tail:
            self.log[:tail] = self.log[self.done:self.pos]
        self.pos, self.done = tail, 0  # the partial frame's time is that of the read that completes it (later)
        self.read_end, self.read_ns = array("q"), array("q")

    def collect(self):
        """The orders of this window (since the last collect) as arrays source, seq, ts_ns, recv_ns; resets."""
        self._flush_log()
        if self.slow_rows:
            rows = np.array(self.slow_rows, np.int64).reshape(-1, 4)
            self.parts.append((rows[:, 0].astype(np.uint32), rows[:, 1].astype(np.uint64), rows[:, 2], rows[:, 3]))
            self.slow_rows = []
        if self.parts:
            cols = [np.concatenate([p[c] for p in self.parts]) for c in range(4)]
        else:
            cols = [np.zeros(0, np.uint32), np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64)]
        self.parts, self.window_orders = [], 0
        return {"source": cols[0], "seq": cols[1], "ts_ns": cols[2], "recv_ns": cols[3]}

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.listener.close()
        self.logv.release()


# ---------------------------------------------------------------------------------------------- alone
class _Stop(Exception):
    pass


def serve(args):
    """One Receiver alone: spin (default) or block in select; on EOF or SIGTERM save the orders and exit."""
    rx = Receiver(args.host, args.port, acks=not args.no_acks)
    print(f"ready {rx.port}", flush=True)

    def stop(*_):
        raise _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    seen = False
    try:
        while True:
            if args.block:
                select.select([rx.fileno()], [], [], 0.1)
            if not rx.poll():
                rx.flush_if(time.time_ns(), FLUSH_GAP_NS)
            if rx.conn is not None:
                seen = True
            elif seen:
                break
    except _Stop:
        pass
    finally:
        got = rx.collect()
        rx.close()
        if args.out:
            np.savez(args.out, **got, summary=json.dumps(rx.stats))
        print(json.dumps(rx.stats), flush=True)
    return 0


def parser():
    p = argparse.ArgumentParser(prog="python -m bench.oms_receiver", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--no-acks", action="store_true", help="send only the FILL of each order")
    p.add_argument("--block", action="store_true", help="block in select between reads (default: spin)")
    p.add_argument("--out", default=None)
    return p


if __name__ == "__main__":
    sys.exit(serve(parser().parse_args()))
