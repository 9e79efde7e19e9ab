"""The peer's busy loop compiled (numba, libc through ctypes): sending, reading and answering with nothing but
syscalls and byte copies, so the harness costs the machine what the syscalls cost and no more.

bench/peer.py's Python loop over loadgen.Sender and oms_receiver.Receiver spends ~2 us of interpreter per signal
sent and ~2.5 us per order read (besides the syscalls): at 100 k signals/s that is most of a core, and the queue it
builds is the sender's lag, which the latency from the intended send time rightly counts, against the engine.
Compiled, one pass of the loop is a clock read (clock_gettime, vDSO) and one non-blocking recv when nothing is due
(~0.3 us), a signal is two 8-byte stamps and its send or its share of a sendmmsg, an order is 160 bytes copied and
patched. The same objects hold the state between calls: `run(sender, receiver, ...)` copies their counters into one
int64 array, runs until the run and its drain are over (or a buffer needs Python: the receiver's log or the read
records full, the sender's pass records full, a frame that is not a fixed-width Order), and copies everything back,
so the Python loop and this one can take turns on the same run (bench/peer.py does, for the rare cases).

Not cached on disk: the libc entry points (bench/libc.py) are constants of the compiled code (~1 s to compile per
peer process).
"""
import numpy as np
from numba import njit

from bench.libc import DONTWAIT, EAGAIN, ECONNREFUSED, NS
from bench.libc import errno as _errno
from bench.libc import now as _now
from bench.libc import put_be64 as _put_be
from bench.libc import recv as _recv
from bench.libc import send as _send
from bench.libc import sendmmsg as _sendmmsg
from bench.oms_receiver import (
    CHUNK,
    FLUSH_AGE_NS,
    FLUSH_GAP_NS,
    FLUSH_ORDERS,
    IDS_AT,
    IDS_LEN,
    QP_AT,
    QP_LEN,
    SOURCE_AT,
    answer_template,
)
from kernels.dtypes import MSG_ORDER
from wire.records import ORDER_FRAME_SIZE, REPORT_FRAME_SIZE, REPORT_FRAME_T, SIGNAL_FRAME_SIZE, SIGNAL_FRAME_T

FAR = 1 << 62
SEQ_AT, TS_AT = SIGNAL_FRAME_T.fields["seq"][1], SIGNAL_FRAME_T.fields["ts_ns"][1]
R_PRICE_AT, R_LEAVES_AT, R_QTY_AT = (REPORT_FRAME_T.fields["price_tag"][1], REPORT_FRAME_T.fields["leaves"][1],
                                     REPORT_FRAME_T.fields["qty_tag"][1])
R_TS_AT = REPORT_FRAME_T.fields["ts_ns"][1]
BODY = ORDER_FRAME_SIZE - 8

# return codes
DONE, LOG_FULL, READS_FULL, PASSES_FULL, SLOW, ERROR, EOF = 0, 1, 2, 3, 4, 5, 6

# the state array: one int64 per slot
(S_FD, S_TCP, S_RATE, S_T0, S_TOTAL, S_DEADLINE, S_MAXB, S_RING, S_SENT, S_NPASS, S_PASS_CAP, S_BLOCKED, S_PARTIAL,
 S_ERRORS, S_PEND_OFF, S_PEND_LEN, S_VEC, S_VEC_STEP, S_NEXT_DUE, S_BUSY,
 R_FD, R_POS, R_DONE, R_LOG_CAP, R_NREADS, R_READS_CAP, R_WINDOW, R_LAST_DATA, R_OWED, R_OWED_SINCE, R_OUT_LEN,
 R_OUT_SENT, R_ACKS, R_BUSY, R_READS, R_BYTES, R_ORDERS, R_SEND_BLOCKED, R_EOF,
 C_EXPECTED, C_QUIET, C_LIMIT, C_SENT_END, C_ERRNO, S_SEQ_BASE, R_SOURCE, N_SLOTS) = range(47)


@njit(nogil=True)
def _send_due(st, now, ring, pass_first, pass_ns, pass_int, ts):
    """The sender's share of one pass of the loop; returns signals handed to the socket (-1: an error)."""
    if st[S_PEND_LEN] > 0:  # TCP: the tail of the last pass first
        r = _send(st[S_FD], ring.ctypes.data + st[S_PEND_OFF], st[S_PEND_LEN], DONTWAIT)
        if r > 0:
            st[S_PEND_OFF] += r
            st[S_PEND_LEN] -= r
        else:
            st[S_BLOCKED] += 1
        st[S_NEXT_DUE] = now
        return 0
    sent, rate = st[S_SENT], st[S_RATE]
    if sent >= st[S_TOTAL]:
        st[S_NEXT_DUE] = FAR
        return 0
    if rate > 0:
        due = (now - st[S_T0]) * rate // NS + 1 if now >= st[S_T0] else 0
        if due > st[S_TOTAL]:
            due = st[S_TOTAL]
        if due <= sent:
            st[S_NEXT_DUE] = st[S_T0] + sent * NS // rate
            return 0
        n = due - sent
    else:
        if now > st[S_DEADLINE]:
            st[S_TOTAL] = sent  # saturation is over
            st[S_NEXT_DUE] = FAR
            return 0
        n = st[S_TOTAL] - sent
    if st[S_NPASS] >= st[S_PASS_CAP]:
        return -2
    slot = sent % st[S_RING]
    n = min(n, st[S_MAXB], st[S_RING] - slot)
    base = slot * SIGNAL_FRAME_SIZE
    for k in range(n):
        at = base + k * SIGNAL_FRAME_SIZE
        _put_be(ring, at + SEQ_AT, st[S_SEQ_BASE] + sent + k + 1)
        _put_be(ring, at + TS_AT, st[S_T0] + (sent + k) * NS // rate if rate > 0 else now)
    t = _now(ts)
    went = n
    if st[S_TCP]:
        size = n * SIGNAL_FRAME_SIZE
        r = _send(st[S_FD], ring.ctypes.data + base, size, DONTWAIT)
        if r < 0:
            e = _errno()
            if e != EAGAIN:
                st[C_ERRNO] = e
                return -1
            st[S_BLOCKED] += 1
            went = 0
        elif r < size:
            st[S_PARTIAL] += 1
            st[S_PEND_OFF] = base + r
            st[S_PEND_LEN] = size - r
    else:
        if n == 1 or st[S_VEC] == 0:
            went = 0
            for k in range(n):
                r = _send(st[S_FD], ring.ctypes.data + base + k * SIGNAL_FRAME_SIZE, SIGNAL_FRAME_SIZE, DONTWAIT)
                if r < 0:
                    e = _errno()
                    if e == EAGAIN:
                        st[S_BLOCKED] += 1
                        break
                    if e != ECONNREFUSED:
                        st[C_ERRNO] = e
                        return -1
                    st[S_ERRORS] += 1  # nobody listening: the datagram is lost, as on a network
                went += 1
        else:
            r = _sendmmsg(st[S_FD], st[S_VEC] + slot * st[S_VEC_STEP], n, DONTWAIT)
            if r < 0:
                e = _errno()
                if e == EAGAIN:
                    st[S_BLOCKED] += 1
                    r = 0
                elif e == ECONNREFUSED:
                    st[S_ERRORS] += 1
                    r = 1
                else:
                    st[C_ERRNO] = e
                    return -1
            elif r < n:
                st[S_BLOCKED] += 1
            went = r
    if went:
        p = st[S_NPASS]
        pass_first[p], pass_ns[p], pass_int[p] = sent, t, now
        st[S_NPASS] = p + 1
        st[S_SENT] = sent + went
    if rate > 0:
        s = st[S_SENT]
        st[S_NEXT_DUE] = st[S_T0] + s * NS // rate if s < st[S_TOTAL] else FAR
    else:
        st[S_NEXT_DUE] = now
    return went


@njit(nogil=True)
def _flush(st, out):
    """Send the answers owed (what does not go stays, for the next flush)."""
    left = st[R_OUT_LEN] - st[R_OUT_SENT]
    if left <= 0:
        return
    r = _send(st[R_FD], out.ctypes.data + st[R_OUT_SENT], left, DONTWAIT)
    if r > 0:
        st[R_OUT_SENT] += r
    if r < left:
        st[R_SEND_BLOCKED] += 1
    if st[R_OUT_SENT] == st[R_OUT_LEN]:
        st[R_OUT_SENT] = st[R_OUT_LEN] = st[R_OWED] = 0


@njit(nogil=True)
def _receive(st, log, read_end, read_ns, out, tmpl, ts):
    """One non-blocking read and the answers to the orders it completed; returns orders (0: none; <0: a code)."""
    pos = st[R_POS]
    if pos + CHUNK > st[R_LOG_CAP]:
        return -LOG_FULL
    if st[R_NREADS] >= st[R_READS_CAP]:
        return -READS_FULL
    per = tmpl.shape[0]
    if st[R_OUT_LEN] + per * (CHUNK // ORDER_FRAME_SIZE + 1) > out.shape[0]:  # no room for a read's answers
        _flush(st, out)
        if st[R_OUT_LEN] + per * (CHUNK // ORDER_FRAME_SIZE + 1) > out.shape[0]:
            return 0  # the engine is not reading its reports: stop reading its orders until it does
    r = _recv(st[R_FD], log.ctypes.data + pos, CHUNK, DONTWAIT)
    if r < 0:
        return 0
    now = _now(ts)
    if r == 0:
        st[R_EOF] = 1
        return -EOF
    pos += r
    i = st[R_NREADS]
    read_end[i], read_ns[i] = pos, now
    st[R_NREADS] = i + 1
    st[R_POS] = pos
    st[R_LAST_DATA] = now
    st[R_READS] += 1
    st[R_BYTES] += r
    o = st[R_DONE]
    k = mine = 0
    q = st[R_OUT_LEN]
    acks = st[R_ACKS]
    source = st[R_SOURCE]
    slow = False
    while o + 6 <= pos:  # a header's length and type are there: judge the frame before it is whole
        if log[o] != BODY or log[o + 1] != 0 or log[o + 5] != MSG_ORDER:
            slow = True
            break
        if o + ORDER_FRAME_SIZE > pos:
            break
        for b in range(per):
            out[q + b] = tmpl[b]
        f = q + REPORT_FRAME_SIZE if acks else q
        for b in range(IDS_LEN):
            out[q + IDS_AT + b] = log[o + IDS_AT + b]
            if acks:
                out[f + IDS_AT + b] = log[o + IDS_AT + b]
        for b in range(QP_LEN):
            out[f + R_QTY_AT + b] = log[o + QP_AT + b]
        if acks:
            for b in range(9):
                out[q + R_PRICE_AT + b] = log[o + QP_AT + 9 + b]
            for b in range(8):
                out[q + R_LEAVES_AT + b] = log[o + QP_AT + 1 + b]
            _put_be(out, q + R_TS_AT, now)
        _put_be(out, f + R_TS_AT, now)
        if source < 0 or (log[o + SOURCE_AT] << 24 | log[o + SOURCE_AT + 1] << 16 | log[o + SOURCE_AT + 2] << 8
                          | log[o + SOURCE_AT + 3]) == source:
            mine += 1
        q += per
        o += ORDER_FRAME_SIZE
        k += 1
    st[R_DONE] = o
    st[R_OUT_LEN] = q
    if k:
        if st[R_OWED] == 0:
            st[R_OWED_SINCE] = now
        st[R_OWED] += k
        st[R_WINDOW] += mine
        st[R_ORDERS] += k
        if st[R_OWED] >= FLUSH_ORDERS:
            _flush(st, out)
    return -SLOW if slow else k


@njit(nogil=True)
def _loop(st, ring, pass_first, pass_ns, pass_int, log, read_end, read_ns, out, tmpl, ts):
    sending = st[S_FD] >= 0
    receiving = st[R_FD] >= 0
    while True:
        now = _now(ts)
        if sending:
            if now >= st[S_NEXT_DUE]:
                went = _send_due(st, now, ring, pass_first, pass_ns, pass_int, ts)
                if went == -1:
                    return ERROR
                if went == -2:
                    return PASSES_FULL
                if went:
                    t = _now(ts)
                    st[S_BUSY] += t - now
                    now = t
            if st[S_SENT] >= st[S_TOTAL] and st[S_PEND_LEN] == 0:
                sending = False
                st[C_SENT_END] = now
                if st[C_EXPECTED] < 0:
                    st[C_EXPECTED] = st[S_SENT]
        if not receiving:
            if not sending:
                return DONE
            continue
        k = _receive(st, log, read_end, read_ns, out, tmpl, ts)
        if k > 0:
            if sending:  # busy shares are of the send window; the drain after it is not counted
                st[R_BUSY] += _now(ts) - now
            continue
        if k < 0:
            _flush(st, out)
            return -k
        if st[R_OUT_LEN] > st[R_OUT_SENT] and (st[S_NEXT_DUE] - now >= FLUSH_GAP_NS or not sending
                                               or now - st[R_OWED_SINCE] >= FLUSH_AGE_NS):
            _flush(st, out)
            if sending:
                st[R_BUSY] += _now(ts) - now
        if not sending:  # draining: until every order came back, or none came for a while
            if st[R_WINDOW] >= st[C_EXPECTED] or now > st[C_LIMIT] \
                    or now - max(st[R_LAST_DATA], st[C_SENT_END]) > st[C_QUIET]:
                _flush(st, out)
                return DONE


class Loop:
    """The compiled loop's buffers (allocated once per peer process) and the state copies in and out."""

    PASSES = 1 << 16
    READS = 1 << 18

    def __init__(self, acks=True, passes=PASSES, reads=READS):
        self.PASSES, self.READS = passes, reads  # records per call: past them, back to Python and in again
        self.st = np.zeros(N_SLOTS, np.int64)
        self.pass_first = np.zeros(self.PASSES, np.int64)
        self.pass_ns = np.zeros(self.PASSES, np.int64)
        self.pass_int = np.zeros(self.PASSES, np.int64)
        self.read_end = np.zeros(self.READS, np.int64)
        self.read_ns = np.zeros(self.READS, np.int64)
        self.tmpl = np.frombuffer(answer_template(acks), np.uint8).copy()
        self.out = np.zeros(8 << 20, np.uint8)
        self.ts = np.zeros(2, np.int64)
        self.empty_u8 = np.zeros(1, np.uint8)
        self.acks = acks
        self.send_busy_ns = self.recv_busy_ns = self.sent_end = 0
        self.warm()

    def warm(self):
        """Compile (about a second), on a state that returns at once."""
        st = np.zeros(N_SLOTS, np.int64)
        st[S_FD] = st[R_FD] = -1
        _loop(st, self.empty_u8, self.pass_first, self.pass_ns, self.pass_int, self.empty_u8, self.read_end,
              self.read_ns, self.out, self.tmpl, self.ts)

    def run(self, sender, rx, expected=-1, quiet_ns=1_000_000_000, limit_ns=FAR):
        """Run `sender` (None: drain only) against `rx` until the run and its drain are over, or Python is needed;
        returns the code (DONE, or SLOW: the receiver must go on frame by frame)."""
        st = self.st
        st[:] = 0
        st[S_FD] = st[R_FD] = -1
        st[C_EXPECTED], st[C_QUIET], st[C_LIMIT] = expected, quiet_ns, limit_ns
        ring = self.empty_u8
        if sender is not None:
            ring = np.frombuffer(sender.buf, np.uint8)
            st[S_FD], st[S_TCP], st[S_RATE], st[S_T0] = sender.fd, sender.transport == "tcp", sender.rate, sender.t0
            st[S_TOTAL], st[S_DEADLINE], st[S_MAXB], st[S_RING] = (sender.total, sender.deadline, sender.max_batch,
                                                                   sender.ring)
            st[S_SENT], st[S_NEXT_DUE], st[S_SEQ_BASE] = sender.sent, sender.next_due, sender.seq_base
            if sender.vector is not None:
                st[S_VEC], st[S_VEC_STEP] = sender.vector._addr, sender.vector._step
        else:
            st[C_SENT_END] = np.int64(_now(self.ts))
        log = self.empty_u8
        if rx is not None and rx.conn is None:
            rx.poll()  # accept a connection waiting (the engine reconnecting)
        if rx is not None and rx.conn is not None:
            rx.flush()
            log = np.frombuffer(rx.log, np.uint8)
            if rx.pending:  # answers the Python side could not send yet: ahead of every new one
                self.out[:len(rx.pending)] = np.frombuffer(rx.pending, np.uint8)
                st[R_OUT_LEN] = len(rx.pending)
                rx.pending = bytearray()
            st[R_FD], st[R_POS], st[R_DONE], st[R_LOG_CAP] = rx.conn.fileno(), rx.pos, rx.done, len(rx.log)
            st[R_READS_CAP], st[R_ACKS], st[R_LAST_DATA] = self.READS, self.acks, rx.last_data_ns
            st[R_WINDOW], st[R_SOURCE] = rx.window_orders, rx.source
        while True:
            st[S_NPASS], st[S_PASS_CAP], st[R_NREADS] = 0, self.PASSES, 0
            if sender is not None:  # a TCP tail left by the Python loop goes first
                st[S_PEND_OFF], st[S_PEND_LEN] = sender.pend_off, sender.pend_len
            code = _loop(st, ring, self.pass_first, self.pass_ns, self.pass_int, log, self.read_end, self.read_ns,
                         self.out, self.tmpl, self.ts)
            self._back(sender, rx, final=code not in (LOG_FULL, READS_FULL, PASSES_FULL) and not (
                code == EOF and sender is not None and not sender.done))
            if code == ERROR:
                raise OSError(int(st[C_ERRNO]), "peer loop: send failed")
            if code in (LOG_FULL, READS_FULL):
                rx._flush_log()
                st[R_POS], st[R_DONE] = rx.pos, rx.done
                continue
            if code == PASSES_FULL:
                continue
            if code == EOF:  # the engine closed the OMS link: the run goes on without answers
                if sender is not None and not sender.done:
                    continue
                return DONE
            return code

    def _back(self, sender, rx, final):
        """Copy the loop's state and records back into the Sender and the Receiver. Answers not sent yet stay in
        the loop's buffer while it is entered again (`final` False), else go to the receiver's `pending`: either way
        ahead of any answer built later, so the report stream stays whole."""
        st = self.st
        if sender is not None:
            n = int(st[S_NPASS])
            sender.pass_first.frombytes(self.pass_first[:n].tobytes())
            sender.pass_ns.frombytes(self.pass_ns[:n].tobytes())
            if sender.rate == 0:
                sender.pass_intended.frombytes(self.pass_int[:n].tobytes())
            sender.sent, sender.total, sender.next_due = int(st[S_SENT]), int(st[S_TOTAL]), int(st[S_NEXT_DUE])
            sender.blocked, sender.partial = int(st[S_BLOCKED]), int(st[S_PARTIAL])
            sender.errors = int(st[S_ERRORS])
            sender.pend_off, sender.pend_len = int(st[S_PEND_OFF]), int(st[S_PEND_LEN])
            self.send_busy_ns = int(st[S_BUSY])
            self.sent_end = int(st[C_SENT_END]) or int(_now(self.ts))
        if rx is not None and st[R_FD] >= 0:
            n = int(st[R_NREADS])
            rx.read_end.frombytes(self.read_end[:n].tobytes())
            rx.read_ns.frombytes(self.read_ns[:n].tobytes())
            rx.pos, rx.done, rx.window_orders = int(st[R_POS]), int(st[R_DONE]), int(st[R_WINDOW])
            rx.last_data_ns = int(st[R_LAST_DATA])
            for key, slot in (("reads", R_READS), ("bytes", R_BYTES), ("orders", R_ORDERS),
                              ("send_blocked", R_SEND_BLOCKED)):
                rx.stats[key] += int(st[slot])
                st[slot] = 0
            rx.stats["reports"] = rx.stats["orders"] * (2 if self.acks else 1)
            if st[R_EOF]:  # answers for a link that is gone are dropped, never sent on the next one
                st[R_OUT_LEN] = st[R_OUT_SENT] = st[R_OWED] = 0
            if final:
                if st[R_OUT_LEN] > st[R_OUT_SENT]:  # answers that did not go: the receiver sends them first
                    rx.pending += self.out[st[R_OUT_SENT]:st[R_OUT_LEN]].tobytes()
                st[R_OUT_LEN] = st[R_OUT_SENT] = st[R_OWED] = 0
            if st[R_EOF]:
                rx.conn.close()
                rx.conn = None
                st[R_FD] = -1
            self.recv_busy_ns = int(st[R_BUSY])
