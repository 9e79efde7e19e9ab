"""The floor: the engine's path with no engine. What the end-to-end harness divides every engine figure by.

    python -m bench.floor --transport udp|tcp --port P --oms-port Q [--cpu N]

A minimal process in the engine's place that does only the syscalls the engine's path does, on the same
transports, the way the engine's adapters do them: it listens for signals (UDP datagrams on P: poll(0), then
`recv_into` until the socket is empty, as adapters/udp.py; or TCP streams accepted on P: one epoll over the
listener and every stream, as adapters/tcp.TcpServer), connects to the OMS (the harness's receiver on Q, TCP), and
spins: one fixed-width order frame per signal (wire/records ORDER_FRAME_T: a prebuilt frame with the signal's
source, seq and ts_ns copied in, 14 + 9 bytes) written to the OMS socket in one `send` per read, and the OMS's
answers read and dropped (poll(0), then one read, as adapters/tcp.TcpClient). No decode, no risk, no books.
The loop is compiled (numba over libc, bench/libc.py: the syscalls and a 23-byte copy per signal, nothing else;
back to Python every 50 ms to see signals, and to accept a stream); `--loop python` keeps the same steps in Python
(`Forwarder.step`, ~1-2 us of interpreter per read besides the syscalls; it forwarded only ~330 k datagrams/s here,
less than the engine, so it is no floor at high rates).
The harness runs it exactly like the engine (same peer, same placement, same rates), so

    engine latency / floor latency

is what the engine adds over the machine's own cost of moving a signal in and an order out through the kernel,
and the floor's saturation throughput is the most any engine could show through this harness on this machine.
It prints `ready PORT` once listening and connected, and a JSON line of counts when stopped (SIGINT/SIGTERM).
"""
import argparse
import gc
import json
import os
import select
import signal
import socket
import sys
import time

import numpy as np
from numba import njit

from bench import libc
from kernels.dtypes import MSG_ORDER, MSG_SIGNAL
from wire.records import ORDER_FRAME_SIZE, ORDER_FRAME_T, SIGNAL_FRAME_SIZE, SIGNAL_FRAME_T, records

_S, _O = SIGNAL_FRAME_T.fields, ORDER_FRAME_T.fields
# signal bytes -> order bytes (tags included: source u32 + seq u64 are contiguous in both; ts_ns i64)
SOURCE_SEQ = (_S["source_tag"][1], _O["signal_source_tag"][1], _S["seq"][1] + 8 - _S["source_tag"][1])
TS = (_S["ts_ns_tag"][1], _O["signal_ts_ns_tag"][1], 9)
MAX_DATAGRAMS = 64     # datagrams read per pass at most (then the orders go in one send)
SMALL = 16             # frames per TCP read copied one by one; more: numpy
BATCH = 16384


class Forwarder:
    """The floor's state: the listening socket(s), the OMS link, the prebuilt order frames."""

    def __init__(self, transport, host, port, oms_host, oms_port):
        self.transport = transport
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.sock.bind((host, port))
            self.ready = select.poll()  # as adapters/udp.py: poll(0), then read until the socket is empty
            self.ready.register(self.sock.fileno(), select.POLLIN)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(16)
            self.ready = select.epoll()  # as adapters/tcp.TcpServer: one epoll over the listener and every stream
            self.ready.register(self.sock.fileno(), select.EPOLLIN)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.conns = {}  # TCP: fd -> [socket, its receive buffer, bytes held of an unfinished frame]
        self.oms = socket.create_connection((oms_host, oms_port), timeout=10)
        self.oms.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.oms.setblocking(False)
        self.oms_ready = select.poll()  # as adapters/tcp.TcpClient: poll(0), then one read
        self.oms_ready.register(self.oms.fileno(), select.POLLIN)
        self.rx = bytearray(1 << 20)
        self.rxv = memoryview(self.rx)
        order = records(MSG_ORDER, 1)
        order["order_id"], order["strategy"], order["deploy"], order["qty"], order["price"] = 1, 0, 1, 1, 1.0
        self.out = bytearray(order.tobytes() * BATCH)
        self.outv = memoryview(self.out)
        self.out_np = np.frombuffer(self.out, ORDER_FRAME_T)
        self.junk = bytearray(1 << 20)
        self.pending = bytearray()
        self.stats = {"signals": 0, "reads": 0, "sends": 0, "send_blocked": 0, "report_bytes": 0, "connections": 0}

    def step(self):
        """One pass: signals in, orders out, reports drained. Returns signals forwarded."""
        n = self._udp() if self.transport == "udp" else self._tcp()
        if self.oms_ready.poll(0):
            try:
                got = self.oms.recv_into(self.junk)
            except BlockingIOError:
                got = -1
            if got == 0:
                raise ConnectionResetError("OMS closed the link")
            if got > 0:
                self.stats["report_bytes"] += got
        return n

    def _udp(self):
        if not self.ready.poll(0):
            return 0
        rxv, k, recv_into = self.rxv, 0, self.sock.recv_into
        while k < MAX_DATAGRAMS:
            try:
                size = recv_into(rxv[k * SIGNAL_FRAME_SIZE:(k + 1) * SIGNAL_FRAME_SIZE], SIGNAL_FRAME_SIZE)
            except BlockingIOError:
                break
            if size == SIGNAL_FRAME_SIZE and self.rx[k * SIGNAL_FRAME_SIZE + 5] == MSG_SIGNAL:
                k += 1
        if k:
            self.stats["reads"] += 1
            self._forward(self.rx, 0, k)
        return k

    def _tcp(self):
        n = 0
        for fd, _ in self.ready.poll(0):
            if fd == self.sock.fileno():
                self._accept()
                continue
            conn = self.conns[fd]
            sock, buf, held = conn
            try:
                got = sock.recv_into(memoryview(buf)[held:])
            except BlockingIOError:
                continue
            except ConnectionResetError:
                got = 0
            if got == 0:
                self.ready.unregister(fd)
                sock.close()
                del self.conns[fd]
                continue
            self.stats["reads"] += 1
            end = held + got
            k = end // SIGNAL_FRAME_SIZE
            if k:
                self._forward(buf, 0, k)
            whole = k * SIGNAL_FRAME_SIZE
            conn[2] = end - whole
            if conn[2]:
                buf[:conn[2]] = buf[whole:end]
            n += k
        return n

    def _accept(self):
        while True:
            try:
                sock, _ = self.sock.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns[sock.fileno()] = [sock, bytearray(1 << 20), 0]
            self.ready.register(sock.fileno(), select.EPOLLIN)
            self.stats["connections"] += 1

    def _forward(self, buf, first, k):
        """Order frames for the signal frames first..first+k-1 of buf, in one send."""
        done = 0
        bufv = memoryview(buf)
        while done < k:
            n = min(k - done, BATCH)
            lo = (first + done) * SIGNAL_FRAME_SIZE
            if n > SMALL:
                sig = np.frombuffer(buf, SIGNAL_FRAME_T, count=n, offset=lo)
                o = self.out_np[:n]
                o["signal_source"], o["signal_seq"], o["signal_ts_ns"] = sig["source"], sig["seq"], sig["ts_ns"]
            else:
                out = self.outv
                (ss_s, ss_o, ss_n), (ts_s, ts_o, ts_n) = SOURCE_SEQ, TS
                s, q = lo, 0
                for _ in range(n):
                    out[q + ss_o:q + ss_o + ss_n] = bufv[s + ss_s:s + ss_s + ss_n]
                    out[q + ts_o:q + ts_o + ts_n] = bufv[s + ts_s:s + ts_s + ts_n]
                    s += SIGNAL_FRAME_SIZE
                    q += ORDER_FRAME_SIZE
            self._send(self.outv[:n * ORDER_FRAME_SIZE])
            done += n
        self.stats["signals"] += k

    def _send(self, data):
        if self.pending:
            self.pending += data
            data = self.pending
        try:
            got = self.oms.send(data)
        except BlockingIOError:
            got = 0
        self.stats["sends"] += 1
        if got < len(data):
            self.stats["send_blocked"] += 1
            rest = bytes(data[got:])
            self.pending = bytearray(rest)
        else:
            self.pending = bytearray()

    def close(self):
        for sock, _, _ in self.conns.values():
            sock.close()
        self.conns = {}
        if self.transport == "tcp":
            self.ready.close()
        self.sock.close()
        self.oms.close()


# ---------------------------------------------------------------------------------------------- compiled
MAX_CONNS = 8
RX_REGION = 1 << 20     # receive bytes per TCP stream (UDP: the first region, one datagram after another)
OUT_BYTES = 8 << 20
TIMEOUT, ACCEPT, CLOSED, OMS_CLOSED = 0, 1, 2, 3
(F_UDP, F_OMS_FD, F_NCONN, F_UNTIL, F_SIGNALS, F_READS, F_SENDS, F_BLOCKED, F_REPORT_BYTES, F_OUT_SENT, F_OUT_LEN,
 F_CLOSED, N_SLOTS) = range(13)


@njit(nogil=True)
def _forward_c(st, rx, base, k, out, tmpl):
    """Order frames for the k signal frames at rx[base:], queued behind what the OMS socket has not taken, and one
    send."""
    q = st[F_OUT_LEN]
    for i in range(k):
        s = base + i * SIGNAL_FRAME_SIZE
        for b in range(ORDER_FRAME_SIZE):
            out[q + b] = tmpl[b]
        for b in range(SOURCE_SEQ[2]):
            out[q + SOURCE_SEQ[1] + b] = rx[s + SOURCE_SEQ[0] + b]
        for b in range(TS[2]):
            out[q + TS[1] + b] = rx[s + TS[0] + b]
        q += ORDER_FRAME_SIZE
    st[F_OUT_LEN] = q
    st[F_SIGNALS] += k
    _flush_c(st, out)


@njit(nogil=True)
def _flush_c(st, out):
    left = st[F_OUT_LEN] - st[F_OUT_SENT]
    if left <= 0:
        return
    r = libc.send(st[F_OMS_FD], out.ctypes.data + st[F_OUT_SENT], left, libc.DONTWAIT)
    st[F_SENDS] += 1
    if r > 0:
        st[F_OUT_SENT] += r
    if r < left:
        st[F_BLOCKED] += 1
    if st[F_OUT_SENT] == st[F_OUT_LEN]:
        st[F_OUT_SENT] = st[F_OUT_LEN] = 0


@njit(nogil=True)
def _floor_loop(st, fds, oms_fd, rx, held, out, tmpl, junk, ts):
    """Until st[F_UNTIL] (wall ns), or something Python must do (accept, a stream closed, the OMS gone)."""
    room = OUT_BYTES - (RX_REGION // SIGNAL_FRAME_SIZE + 1) * ORDER_FRAME_SIZE
    while True:
        if libc.now(ts) >= st[F_UNTIL]:
            return TIMEOUT
        if st[F_OUT_LEN] > st[F_OUT_SENT]:
            _flush_c(st, out)
        if st[F_OUT_LEN] <= room:  # else the OMS is not reading: neither do we, until it does
            if st[F_UDP]:
                if libc.poll(fds.ctypes.data, 1, 0) > 0:  # adapters/udp.py: poll(0), then read until empty
                    k = 0
                    while k < RX_REGION // SIGNAL_FRAME_SIZE:
                        r = libc.recv(fds[0], rx.ctypes.data + k * SIGNAL_FRAME_SIZE, SIGNAL_FRAME_SIZE,
                                      libc.DONTWAIT)
                        if r < 0:
                            break
                        if r == SIGNAL_FRAME_SIZE and rx[k * SIGNAL_FRAME_SIZE + 5] == MSG_SIGNAL:
                            k += 1
                    if k:
                        st[F_READS] += 1
                        _forward_c(st, rx, 0, k, out, tmpl)
            elif libc.poll(fds.ctypes.data, 1 + st[F_NCONN], 0) > 0:  # one poll: the listener and every stream
                if (fds[1] >> 16) & libc.POLLIN:
                    return ACCEPT
                for c in range(st[F_NCONN]):
                    if (fds[2 * c + 3] >> 16) & (libc.POLLIN | libc.POLLHUP | libc.POLLERR):
                        base, h = c * RX_REGION, held[c]
                        r = libc.recv(fds[2 * c + 2], rx.ctypes.data + base + h, RX_REGION - h, libc.DONTWAIT)
                        if r == 0:
                            st[F_CLOSED] = c
                            return CLOSED
                        if r < 0:
                            continue
                        st[F_READS] += 1
                        end = h + r
                        k = end // SIGNAL_FRAME_SIZE
                        if k:
                            _forward_c(st, rx, base, k, out, tmpl)
                        whole = k * SIGNAL_FRAME_SIZE
                        for b in range(end - whole):
                            rx[base + b] = rx[base + whole + b]
                        held[c] = end - whole
        if libc.poll(oms_fd.ctypes.data, 1, 0) > 0:  # adapters/tcp.TcpClient: poll(0), then one read
            r = libc.recv(oms_fd[0], junk.ctypes.data, junk.shape[0], libc.DONTWAIT)
            if r == 0:
                return OMS_CLOSED
            if r > 0:
                st[F_REPORT_BYTES] += r


def warm_compiled():
    """Compile the loop (about a second) on a state that returns at once, before the clock starts."""
    z8, z32, z64 = np.zeros(RX_REGION, np.uint8), np.zeros(2, np.int32), np.zeros(MAX_CONNS, np.int64)
    _floor_loop(np.zeros(N_SLOTS, np.int64), z32, z32, z8, z64, z8, z8, z8, np.zeros(2, np.int64))


def run_compiled(fwd, stop, slice_s=0.05):
    """Forward with the compiled loop until `stop` (a list, non-empty once a signal asked to stop)."""
    st = np.zeros(N_SLOTS, np.int64)
    st[F_UDP], st[F_OMS_FD] = fwd.transport == "udp", fwd.oms.fileno()
    fds = np.zeros(2 * (MAX_CONNS + 1), np.int32)  # struct pollfd as pairs: fd, events | revents << 16
    fds[0], fds[1] = fwd.sock.fileno(), libc.POLLIN
    oms_fd = np.array([fwd.oms.fileno(), libc.POLLIN], np.int32)
    rx = np.zeros(RX_REGION * (MAX_CONNS if fwd.transport == "tcp" else 1), np.uint8)
    held = np.zeros(MAX_CONNS, np.int64)
    out = np.zeros(OUT_BYTES, np.uint8)
    tmpl = np.frombuffer(bytes(fwd.out[:ORDER_FRAME_SIZE]), np.uint8).copy()
    junk, ts = np.zeros(1 << 20, np.uint8), np.zeros(2, np.int64)
    conns = []
    while not stop:
        st[F_UNTIL] = time.time_ns() + int(slice_s * 1e9)  # back to Python now and then: signals are seen there
        code = _floor_loop(st, fds, oms_fd, rx, held, out, tmpl, junk, ts)
        if code == ACCEPT:
            while True:
                try:
                    sock, _ = fwd.sock.accept()
                except BlockingIOError:
                    break
                if len(conns) == MAX_CONNS:
                    sock.close()
                    continue
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                c = len(conns)
                conns.append(sock)
                fds[2 * c + 2], fds[2 * c + 3], held[c] = sock.fileno(), libc.POLLIN, 0
                st[F_NCONN] = len(conns)
                fwd.stats["connections"] += 1
        elif code == CLOSED:  # the last stream takes the closed one's place
            c, last = int(st[F_CLOSED]), len(conns) - 1
            conns[c].close()
            conns[c] = conns[last]
            fds[2 * c + 2], fds[2 * c + 3], held[c] = fds[2 * last + 2], fds[2 * last + 3], held[last]
            rx[c * RX_REGION:c * RX_REGION + held[c]] = rx[last * RX_REGION:last * RX_REGION + held[c]]
            conns.pop()
            st[F_NCONN] = len(conns)
        elif code == OMS_CLOSED:
            break
    for sock in conns:
        sock.close()
    for key, slot in (("signals", F_SIGNALS), ("reads", F_READS), ("sends", F_SENDS), ("send_blocked", F_BLOCKED),
                      ("report_bytes", F_REPORT_BYTES)):
        fwd.stats[key] += int(st[slot])
    fwd.stats["loop"] = "compiled"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="where signals arrive (0: any free port)")
    p.add_argument("--oms-host", default="127.0.0.1")
    p.add_argument("--oms-port", type=int, required=True)
    p.add_argument("--cpu", type=int, default=None, help="pin to this core")
    p.add_argument("--loop", choices=("compiled", "python"), default="compiled",
                   help="the loop compiled (numba over libc, default: syscalls and byte copies only) or in Python")
    args = p.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.loop == "compiled":
        warm_compiled()
    fwd = Forwarder(args.transport, args.host, args.port, args.oms_host, args.oms_port)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print(f"ready {fwd.port}", file=sys.stderr, flush=True)
    started = time.time_ns()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        if args.loop == "compiled":
            run_compiled(fwd, stop)
        else:
            step = fwd.step
            while not stop:
                step()
    except ConnectionResetError:
        pass
    finally:
        fwd.close()
    print(json.dumps({"engine": "floor", "seconds": (time.time_ns() - started) / 1e9, "floor": fwd.stats}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
