"""Open-loop signal load for the end-to-end harness: every frame built before the clock starts, stamped in place.

`Sender` is the load generator; the harness runs it inside its peer process (bench/peer.py, beside the OMS receiver
of bench/oms_receiver.py, one busy loop on one core). `python -m bench.loadgen --transport udp --port P --rate R`
runs one alone.

Before the clock starts: a ring of RING signal frames (bench/frames.py's workload, this run's source id) is built
with numpy once, and for UDP a `sendmmsg` vector with one datagram per ring slot. Per signal only two fields are
written in place, seq and ts_ns (two `struct.pack_into`), then the bytes go: one `send` per datagram when one
signal is due, one `sendmmsg` for several; TCP, one `send` of every due frame. No numpy call per signal, nothing
allocated per signal; the sockets are non-blocking, so a full socket is counted (`blocked`, `partial`) and retried
on the next poll instead of stalling the receiver that shares the loop.

Open loop: signal i is *intended* at t0 + i / rate, whatever the engine does; its ts_ns is that intended time on the
wall clock (time.time_ns, the clock the receiver stamps with), so receive time - ts_ns charges every stall
(sender, kernel, engine, OMS side) to the signals it delayed: coordinated-omission free (as wrk2 does). The actual
send time of each pass is kept too, so the report also gives the latency from the actual send and the sender's lag
(actual - intended). `rate 0` saturates: passes of `max_batch` signals back to back, each intended at its pass's
start; the offered rate achieved is in the summary.
"""
import argparse
import ctypes
import errno
import json
import math
import os
import socket
import struct
import sys
import time
from array import array

import numpy as np

from bench import CONFIG_DIR
from bench.frames import Instruments, fill_signals, signal_frames
from wire.records import SIGNAL_FRAME_SIZE, SIGNAL_FRAME_T

RING = 1 << 14            # prebuilt frames; a multiple of the workload's period (4 instruments x 2 sides)
PERIOD = 8
SMALL_PASS = 16           # passes up to this many frames are stamped one by one; longer ones with numpy
SEQ_AT = SIGNAL_FRAME_T.fields["seq"][1]
TS_AT = SIGNAL_FRAME_T.fields["ts_ns"][1]
_PUT_SEQ = struct.Struct(">Q").pack_into
_PUT_TS = struct.Struct(">q").pack_into
NS = 1_000_000_000


def set_timer_slack(ns=1):
    """Linux: let sleeps wake `ns` late at most (the default slack is 50 us)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(29, ns, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def instruments_of(config_dir):
    from engine.config import load_config
    return Instruments(load_config(config_dir))


# ---------------------------------------------------------------------------------------------- sendmmsg
class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_MSG_DONTWAIT = 0x40


def _libc_sendmmsg():
    try:
        fn = ctypes.CDLL(None, use_errno=True).sendmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


class DatagramVector:
    """One `struct mmsghdr` per frame of a buffer, built once: `send(fd, first, n)` sends frames first..first+n-1 as
    n datagrams in one syscall (non-blocking) and returns how many went."""

    def __init__(self, buf, frame_size, n):
        self.fn = _libc_sendmmsg()
        if self.fn is None:
            return
        self._anchor = (ctypes.c_char * len(buf)).from_buffer(buf)  # keeps buf's address fixed while we live
        base = ctypes.addressof(self._anchor)
        self._iov = (_IoVec * n)()
        self._msgs = (_MMsgHdr * n)()
        for i in range(n):
            self._iov[i].base = base + i * frame_size
            self._iov[i].len = frame_size
            self._msgs[i].hdr.iov = ctypes.addressof(self._iov[i])
            self._msgs[i].hdr.iovlen = 1
        self._addr, self._step = ctypes.addressof(self._msgs), ctypes.sizeof(_MMsgHdr)

    def send(self, fd, first, n):
        got = self.fn(fd, self._addr + first * self._step, n, _MSG_DONTWAIT)
        if got < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                return 0
            raise OSError(err, os.strerror(err))
        return got

    def release(self):
        self._anchor = None


# ---------------------------------------------------------------------------------------------- the sender
class Sender:
    """One open-loop run: `rate` signals/s (0: saturation) for `duration` s over `transport` to host:port.

    Build it (frames, sockets, vectors: before the clock), `start()`, then call `poll(now)` from a busy loop while
    `now >= next_due` (wall ns); `done` once every signal went; `result()` for the arrays and summary."""

    def __init__(self, transport, host, port, rate, duration, source, instruments, max_batch=None,
                 frames_per_datagram=1, max_count=50_000_000, ring=RING, seq_base=0):
        if ring % PERIOD:
            raise ValueError(f"ring {ring} is not a multiple of the workload's period {PERIOD}")
        self.transport, self.rate, self.duration, self.source = transport, int(rate), float(duration), int(source)
        self.fpd = max(1, int(frames_per_datagram))
        self.seq_base = int(seq_base)  # signal i carries seq seq_base + i + 1 (a source's seqs must keep rising)
        # a saturating UDP pass is one sendmmsg: keep it short so the receiver in the same loop gets its turns
        self.max_batch = int(max_batch or (4096 if transport == "tcp" or self.rate else 256))
        self.max_batch = min(self.max_batch, ring)
        self.total = math.ceil(self.rate * self.duration) if self.rate > 0 else int(max_count)
        self.ring = ring
        frames = fill_signals(signal_frames(ring), instruments, 0, 1, self.source, 0)
        self.buf = bytearray(frames.tobytes())
        self.view = memoryview(self.buf)
        self.frames = np.frombuffer(self.buf, SIGNAL_FRAME_T)  # the same bytes, for stamping long passes
        self._open(host, port)
        self.pass_first, self.pass_ns, self.pass_intended = array("q"), array("q"), array("q")
        self.sent = 0                 # signals handed to the socket
        self.pend_off = self.pend_len = 0  # TCP: the unsent tail of the last pass, as ring bytes
        self.blocked = self.partial = self.errors = 0
        self.t0 = self.deadline = 0
        self.next_due = 1 << 62       # wall ns at which poll() has something to do
        self.mask = ring - 1
        self.single = self.rate > 0 and self.fpd == 1 and ring & (ring - 1) == 0

    def _open(self, host, port):
        """The socket (non-blocking) and, for UDP, the sendmmsg vector over the ring."""
        if self.transport == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.connect((host, port))
            self.vector = DatagramVector(self.buf, SIGNAL_FRAME_SIZE, self.ring) if self.fpd == 1 else None
            if self.vector is not None and self.vector.fn is None:
                self.vector = None
        else:
            sock = socket.create_connection((host, port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            self.vector = None
        sock.setblocking(False)
        self.sock, self.fd = sock, sock.fileno()

    def start(self, t0=None, lead_ns=2_000_000):
        """The clock starts: signal 0 is intended at t0 (default: now + lead_ns)."""
        self.t0 = t0 if t0 is not None else time.time_ns() + lead_ns
        self.deadline = self.t0 + int(self.duration * NS)
        self.next_due = self.t0
        return self

    @property
    def done(self):
        return not self.pend_len and (self.sent >= self.total or self.rate == 0 and self.next_due > self.deadline)

    def intended(self, i):
        return self.t0 + i * NS // self.rate

    def poll(self, now):
        """Send what is due at wall time `now`; returns signals handed to the socket (0: none, or blocked)."""
        first = self.sent
        if self.single and not self.pend_len and first < self.total \
                and (now - self.t0) * self.rate // NS == first:
            # the common case at a fixed rate: exactly one signal due (next_due is its intended time)
            base = (first & self.mask) * SIGNAL_FRAME_SIZE
            buf = self.buf
            _PUT_SEQ(buf, base + SEQ_AT, self.seq_base + first + 1)
            _PUT_TS(buf, base + TS_AT, self.next_due)
            t = time.time_ns()
            try:
                got = self.sock.send(self.view[base:base + SIGNAL_FRAME_SIZE])
            except BlockingIOError:
                self.blocked += 1
                return 0
            except ConnectionRefusedError:
                self.errors += 1
                got = SIGNAL_FRAME_SIZE
            if got < SIGNAL_FRAME_SIZE:  # TCP took part of the frame
                self.partial += 1
                self.pend_off, self.pend_len = base + got, SIGNAL_FRAME_SIZE - got
            self.pass_first.append(first)
            self.pass_ns.append(t)
            self.sent = first = first + 1
            self.next_due = self.t0 + first * NS // self.rate if first < self.total else 1 << 62
            return 1
        return self._poll(now)

    def _poll(self, now):
        if self.pend_len and not self._flush():
            self.next_due = now  # blocked: retry on the next poll
            return 0
        if self.sent >= self.total:
            self.next_due = 1 << 62
            return 0
        rate, first = self.rate, self.sent
        if rate > 0:
            due = min(self.total, (now - self.t0) * rate // NS + 1)
            if due <= first:
                self.next_due = self.intended(first)
                return 0
            hi, stamp = min(due, first + self.max_batch), None
        else:
            if now > self.deadline:
                self.next_due = 1 << 62
                return 0
            hi, stamp = min(self.total, first + self.max_batch), now
        slot = first % self.ring
        hi = min(hi, first + self.ring - slot)          # a pass never wraps the ring
        if self.fpd > 1:
            hi = first + max(self.fpd, (hi - first) // self.fpd * self.fpd)
            hi = min(hi, first + self.ring - slot)
        n = hi - first
        self._stamp(first, slot, n, stamp)
        t = time.time_ns()
        went = self._send(slot, n)
        if went:
            self.pass_first.append(first)
            self.pass_ns.append(t)
            if stamp is not None:
                self.pass_intended.append(stamp)
            self.sent += went
        if rate > 0:
            self.next_due = self.intended(self.sent) if self.sent < self.total else 1 << 62
        else:
            self.next_due = now
        return went

    def _stamp(self, first, slot, n, stamp):
        buf, base = self.buf, slot * SIGNAL_FRAME_SIZE
        if n <= SMALL_PASS:
            for k in range(n):
                _PUT_SEQ(buf, base + SEQ_AT, self.seq_base + first + k + 1)
                _PUT_TS(buf, base + TS_AT, stamp if stamp is not None else self.intended(first + k))
                base += SIGNAL_FRAME_SIZE
            return
        f = self.frames[slot:slot + n]
        idx = np.arange(first, first + n, dtype=np.int64)
        f["seq"] = self.seq_base + idx + 1
        f["ts_ns"] = stamp if stamp is not None else self.t0 + idx * NS // self.rate

    def _send(self, slot, n):
        """Hand frames slot..slot+n-1 to the socket; returns how many signals went (TCP: all, the rest pending)."""
        lo, size = slot * SIGNAL_FRAME_SIZE, SIGNAL_FRAME_SIZE
        try:
            if self.transport == "tcp":
                data = self.view[lo:lo + n * size]
                got = self.sock.send(data)
                if got < len(data):
                    self.partial += 1
                    self.pend_off, self.pend_len = lo + got, len(data) - got
                return n
            if self.vector is not None and n > 1:
                got = self.vector.send(self.fd, slot, n)
                if got < n:
                    self.blocked += 1
                return got
            step, went = size * self.fpd, 0
            for pos in range(lo, lo + n * size, step):
                try:
                    self.sock.send(self.view[pos:pos + step])
                except BlockingIOError:
                    self.blocked += 1
                    break
                went += self.fpd
            return went
        except BlockingIOError:
            self.blocked += 1
            return 0
        except ConnectionRefusedError:  # UDP: nobody listens (ICMP); the signal is lost, as on a real network
            self.errors += 1
            return n

    def _flush(self):
        try:
            got = self.sock.send(self.view[self.pend_off:self.pend_off + self.pend_len])
        except BlockingIOError:
            self.blocked += 1
            return False
        self.pend_off += got
        self.pend_len -= got
        if self.pend_len:
            self.blocked += 1
            return False
        return True

    def close(self):
        self.pend_len = 0
        if self.vector is not None:
            self.vector.release()
        self.view.release()
        self.frames = None
        self.sock.close()

    def result(self):
        """(seq, intended_ns, sent_ns, summary) of the signals sent."""
        n = self.sent
        first = np.frombuffer(self.pass_first, np.int64)
        counts = np.diff(np.append(first, n)).astype(np.int64)
        sent_ns = np.repeat(np.frombuffer(self.pass_ns, np.int64), counts)
        idx = np.arange(n, dtype=np.int64)
        if self.rate > 0:
            intended = self.t0 + idx * NS // self.rate
        else:
            intended = np.repeat(np.frombuffer(self.pass_intended, np.int64), counts)
        lag = sent_ns - intended
        elapsed = (self.pass_ns[-1] - self.pass_ns[0]) / 1e9 if n > 1 else 0.0
        window = max(elapsed, (self.deadline - self.t0) / 1e9 if self.rate == 0 else elapsed)
        summary = {"transport": self.transport, "rate": self.rate, "source": self.source, "sent": int(n),
                   "passes": len(self.pass_first), "blocked": self.blocked, "partial": self.partial,
                   "send_errors": self.errors, "elapsed_s": elapsed,
                   "achieved_rate": n / window if window > 0 else 0.0,
                   "sendmmsg": self.vector is not None,
                   "lag_us": {"p50": float(np.percentile(lag, 50) / 1e3) if n else 0.0,
                              "p99": float(np.percentile(lag, 99) / 1e3) if n else 0.0,
                              "max": float(lag.max() / 1e3) if n else 0.0}}
        return (idx + self.seq_base + 1).astype(np.uint64), intended, sent_ns, summary


# ---------------------------------------------------------------------------------------------- alone
def run(args):
    """One Sender alone in this process: spin (default) or sleep until the next signal is due."""
    set_timer_slack()
    sender = Sender(args.transport, args.host, args.port, args.rate, args.duration, args.source,
                    instruments_of(args.config), args.max_batch or None, args.frames_per_datagram, args.max_count)
    wall = time.time_ns
    sender.start()
    try:
        while not sender.done:
            now = wall()
            if now >= sender.next_due:
                sender.poll(now)
            elif args.sleep and sender.next_due - now > 20_000:
                time.sleep((sender.next_due - now - 10_000) / 1e9)
    finally:
        sender.close()
    seq, intended, sent_ns, summary = sender.result()
    if args.out:
        np.savez(args.out, seq=seq, intended_ns=intended, sent_ns=sent_ns, summary=json.dumps(summary))
    print(json.dumps(summary), flush=True)
    return 0


def parser():
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG_DIR), help="engine config (instruments)")
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=10_000, help="signals per second; 0 saturates")
    p.add_argument("--duration", type=float, default=3.0, help="seconds")
    p.add_argument("--source", type=int, default=1, help="signal source id (one per run: the receiver splits on it)")
    p.add_argument("--max-batch", type=int, default=0, help="signals per pass at most (default 4096; UDP "
                                                             "saturation 256)")
    p.add_argument("--max-count", type=int, default=50_000_000, help="saturation: stop after this many signals")
    p.add_argument("--frames-per-datagram", type=int, default=1)
    p.add_argument("--sleep", action="store_true", help="sleep until shortly before a signal is due (default: spin)")
    p.add_argument("--out", default=None, help="npz file for seq, intended_ns, sent_ns")
    return p


if __name__ == "__main__":
    sys.exit(run(parser().parse_args()))
