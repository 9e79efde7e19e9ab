"""The bench's OMS end: `python -m bench.oms_receiver --port P --out recv.npz`.

Accepts the engine's OMS connection (orders out, execution reports back, docs/wire.md), stamps every order frame
with the wall clock (time.time_ns, the loadgen's clock) the moment the read that holds it returns, and answers so
the engine's books keep turning:
- `fast` (default): vectorised with numpy; per order an ACK and a FILL of the whole quantity at the order's price,
  at once. Costs tens of ns per order, so the receiver is never the bottleneck, even at saturation.
- `sim`: sim.venue.SimulatedOms, the simulated OMS's own rules and latencies (ACK after 50 us, fills after
  150 us, ...), one order at a time in Python: faithful, but a few us per order, so use it at low rates.
Order frames are read by numpy when they are the engine's fixed-width frames (wire/records.py), else decoded one
by one with msgspec (wire/frames.py).

It prints `ready PORT` once listening and `orders N` (at most every 100 ms) while orders arrive; on EOF (the engine
stopped) or SIGTERM it saves source, seq, ts_ns (the signal's, from the order) and recv_ns per order, and exits.
`--spin` reads with a busy poll instead of blocking (lower wake-up latency, one core less for everyone else).
"""
import argparse
import json
import signal
import socket
import sys
import time

import numpy as np

from bench.frames import fills_for, report_frames
from bench.loadgen import set_timer_slack
from kernels.dtypes import MSG_ORDER
from wire.frames import iter_frames, scan_frames
from wire.records import ORDER_FRAME_SIZE, order_view


class Recorder:
    def __init__(self):
        self.parts = []  # (source, seq, ts_ns, recv_ns) arrays per read
        self.count = 0

    def add(self, source, seq, ts_ns, recv_ns):
        n = len(seq)
        self.parts.append((np.asarray(source, np.uint32), np.asarray(seq, np.uint64), np.asarray(ts_ns, np.int64),
                           np.full(n, recv_ns, np.int64)))
        self.count += n

    def save(self, path, summary):
        cols = [np.concatenate([p[k] for p in self.parts]) if self.parts else np.zeros(0) for k in range(4)]
        np.savez(path, source=cols[0], seq=cols[1], ts_ns=cols[2], recv_ns=cols[3], summary=json.dumps(summary))


class _Stop(Exception):
    pass


def serve(args):
    set_timer_slack()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(1)
    print(f"ready {listener.getsockname()[1]}", flush=True)

    def stop(*_):
        raise _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    rec = Recorder()
    summary = {"mode": args.mode, "reads": 0, "bytes": 0, "reports": 0, "slow_frames": 0, "connections": 0}
    conn = None
    try:
        conn, _ = listener.accept()
        summary["connections"] += 1
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        if args.spin:
            conn.setblocking(False)
        _loop(conn, args, rec, summary)
    except _Stop:
        pass
    finally:
        if conn is not None:
            conn.close()
        listener.close()
        summary["orders"] = rec.count
        if args.out:
            rec.save(args.out, summary)
        print(json.dumps(summary), flush=True)
    return 0


def _loop(conn, args, rec, summary):
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    out = report_frames(1 << 16)
    keep = 0
    wall = time.time_ns
    recv_into = conn.recv_into
    last_print, printed = 0, 0
    sim = None
    if args.mode == "sim":
        import msgspec

        from sim.venue import SimOmsConfig, SimulatedOms
        from wire.frames import append_frame
        sim, encoder, due = SimulatedOms(SimOmsConfig()), msgspec.msgpack.Encoder(), []
    while True:
        if sim is not None and not args.spin:
            nxt = sim.next_due_ns()
            conn.settimeout(None if nxt is None else max(0.0, (nxt - wall()) / 1e9))
        try:
            n = recv_into(view[keep:])
        except BlockingIOError:
            continue
        except TimeoutError:
            n = -1
        now = wall()
        if n == 0:
            return
        if n > 0:
            summary["reads"] += 1
            summary["bytes"] += n
            end = keep + n
            whole = end - end % ORDER_FRAME_SIZE
            orders = order_view(buf, whole) if whole else None
            if orders is None:  # not (only) the engine's fixed-width orders: frame and decode one by one
                whole, _ = scan_frames(buf, 0, end)
                orders = _decode(buf, whole, summary)
            if len(orders):
                rec.add(orders["signal_source"], orders["signal_seq"], orders["signal_ts_ns"], now)
                if sim is None:
                    if 2 * len(orders) > len(out):
                        out = report_frames(2 * len(orders))
                    reports = fills_for(orders, now, out, acks=not args.no_acks)
                    conn.sendall(reports.view(np.uint8))
                    summary["reports"] += len(reports)
            if sim is not None:
                sim.on_frames(view[:whole], now)
            keep = end - whole
            if keep:
                buf[:keep] = buf[whole:end]
        if sim is not None:
            due = sim.pop_due(wall(), due)
            if due:
                data = bytearray()
                for report in due:
                    append_frame(encoder, report, data)
                summary["reports"] += len(due)
                due.clear()
                conn.sendall(data)
        if rec.count != printed and now - last_print > 100_000_000:
            print(f"orders {rec.count}", flush=True)
            last_print, printed = now, rec.count


_ORDER_FIELDS_T = np.dtype([("order_id", "u8"), ("strategy", "u4"), ("deploy", "u4"), ("qty", "i8"),
                            ("price", "f8"), ("signal_source", "u4"), ("signal_seq", "u8"), ("signal_ts_ns", "i8")])


def _decode(buf, end, summary):
    """Frames that are not all fixed-width orders: decode each with msgspec; the orders as a record array."""
    rows = []
    for msg_type, msg in iter_frames(bytes(buf[:end])):
        summary["slow_frames"] += 1
        if msg_type == MSG_ORDER:
            rows.append(tuple(getattr(msg, name) for name in _ORDER_FIELDS_T.names))
    return np.array(rows, _ORDER_FIELDS_T)


def parser():
    p = argparse.ArgumentParser(prog="python -m bench.oms_receiver", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", choices=("fast", "sim"), default="fast")
    p.add_argument("--no-acks", action="store_true", help="fast mode: send only the FILL of each order")
    p.add_argument("--spin", action="store_true", help="busy-poll the socket instead of blocking")
    p.add_argument("--out", default=None)
    return p


if __name__ == "__main__":
    sys.exit(serve(parser().parse_args()))
