"""Compiled frame codec: inbound frames into the rings and the instrument table, orders out as frames.

Hot path: no allocation, no objects, no exceptions on data. Bad bytes are counted (C_FRAME_*), never raised,
and nothing is read outside the chunk that holds them. The wire format is docs/wire.md; wire/schema.py is
the same schema as msgspec Structs, and the tests hold the two to decoding the same bytes the same way.

Readers take (buf, pos, end) and return (value..., new_pos, ok). A failed read returns new_pos = end, so the
reads after it fail at once without touching the buffer, and a body reader can run all its fields straight
through and check `ok` once.
"""
import numpy as np
from numba import int64

from kernels._jit import helper, inline, kernel
from kernels.arena import ARENA, LAYOUT, RING_REPORTS, RING_SIGNALS, S_TX_LEN, views
from kernels.dtypes import (
    C_FRAMES, C_FRAME_BAD_TYPE, C_FRAME_BAD_VERSION, C_FRAME_MALFORMED, C_FRAME_OVERSIZE, C_FRAME_TRUNCATED,
    C_MARKET_DATA, C_MARKET_DATA_INVALID, C_MARKET_DATA_UNKNOWN_INSTRUMENT, C_REPORTS, C_REPORT_RING_FULL, C_SIGNALS,
    C_SIGNAL_RING_FULL, FRAME_HEADER_SIZE, MAX_FRAME_BODY, MSG_EXECUTION_REPORT, MSG_MARKET_DATA, MSG_ORDER, MSG_SIGNAL,
    SIGNAL_ORDER, WIRE_VERSION,
)
from kernels.rings import NO_ROOM, claim, publish

# Typed constants: numba compares uint64 with int64 as float64, which is inexact above 2**53.
_U8_MAX = np.uint64(0xFF)
_U32_MAX = np.uint64(0xFFFF_FFFF)
_U64_MAX = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_I64_MAX = np.uint64(0x7FFF_FFFF_FFFF_FFFF)
_KIND_MAX = np.uint64(SIGNAL_ORDER)  # kind 0 or 1: no later stage has a reason bit for any other kind
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_EIGHT = np.uint64(8)

# The largest price in ticks we accept from market data: above 2**53 a float no longer holds every integer,
# and beyond 2**63 the tick count would not fit int64.
_MAX_TICKS = 2.0 ** 53

SIGNAL_FIELDS = 9
MARKET_DATA_FIELDS = 5
REPORT_FIELDS = 10
ORDER_FIELDS = 13
# Order frames are fixed width: header, fixarray, then per field a tag and its full-width value.
ORDER_BODY_SIZE = 1 + 9 + 4 * 5 + 2 + 2 + 9 + 9 + 9 + 5 + 9 + 9
ORDER_FRAME_SIZE = FRAME_HEADER_SIZE + ORDER_BODY_SIZE
HEADER_OK = -1


# ---------------------------------------------------------------------------------------------- reading
@helper
def _be(buf, pos, n):
    """n bytes at buf[pos:] as a big-endian unsigned int (the caller checked the bounds)."""
    v = _ZERO
    for k in range(n):
        v = (v << _EIGHT) | np.uint64(buf[pos + k])
    return v


@helper
def _read_int(buf, pos, end):
    """A msgpack int of any width: (magnitude, negative, new_pos, ok). The magnitude of i64 min is 2**63."""
    if pos >= end:
        return _ZERO, False, end, False
    tag = np.int64(buf[pos])
    if tag <= 0x7F:  # positive fixint
        return np.uint64(tag), False, pos + 1, True
    if tag >= 0xE0:  # negative fixint
        return np.uint64(256 - tag), True, pos + 1, True
    if 0xCC <= tag <= 0xCF:
        n, signed = 1 << (tag - 0xCC), False
    elif 0xD0 <= tag <= 0xD3:
        n, signed = 1 << (tag - 0xD0), True
    else:
        return _ZERO, False, end, False
    if pos + 1 + n > end:
        return _ZERO, False, end, False
    v = _be(buf, pos + 1, n)
    bits = np.uint64(8 * n)
    if signed and (v >> (bits - _ONE)) & _ONE:
        if n < 8:  # sign-extend to 64 bits (a shift by 64 is undefined, hence the guard)
            v |= ~((_ONE << bits) - _ONE)
        return ~v + _ONE, True, pos + 1 + n, True
    return v, False, pos + 1 + n, True


@helper
def _read_uint(buf, pos, end, top):
    """An int field of an unsigned dtype: ok only if 0 <= value <= top (uint64)."""
    mag, negative, pos, ok = _read_int(buf, pos, end)
    ok = ok and not negative and mag <= top
    return mag, (pos if ok else end), ok


@helper
def _read_i64(buf, pos, end):
    mag, negative, pos, ok = _read_int(buf, pos, end)
    if negative:  # -(mag - 1) - 1 reaches i64 min without overflowing
        return -np.uint64(mag - _ONE).view(np.int64) - 1, pos, ok
    ok = ok and mag <= _I64_MAX
    return np.uint64(mag).view(np.int64), (pos if ok else end), ok


@helper
def _read_float(buf, pos, end):
    """A float field: float64, float32, or an int of any width (msgspec and others send 3.0 as 3)."""
    if pos >= end:
        return 0.0, end, False
    tag = buf[pos]
    if tag == 0xCB:
        if pos + 9 > end:
            return 0.0, end, False
        return np.uint64(_be(buf, pos + 1, 8)).view(np.float64), pos + 9, True
    if tag == 0xCA:
        if pos + 5 > end:
            return 0.0, end, False
        return np.float64(np.uint32(_be(buf, pos + 1, 4)).view(np.float32)), pos + 5, True
    mag, negative, pos, ok = _read_int(buf, pos, end)
    x = np.float64(mag)
    return (-x if negative else x), pos, ok


@helper
def _read_array(buf, pos, end, count):
    """An array header with exactly `count` elements: (new_pos, ok)."""
    if pos >= end:
        return end, False
    tag = np.int64(buf[pos])
    if 0x90 <= tag <= 0x9F:
        n, pos = tag - 0x90, pos + 1
    elif tag == 0xDC and pos + 3 <= end:
        n, pos = np.int64(_be(buf, pos + 1, 2)), pos + 3
    elif tag == 0xDD and pos + 5 <= end:
        n, pos = np.int64(_be(buf, pos + 1, 4)), pos + 5
    else:
        return end, False
    return (pos, True) if n == count else (end, False)


@helper
def read_header(buf, pos, end):
    """(status, msg_type, body_end): status is HEADER_OK or the counter of what is wrong.

    Checks run in order of trust: the version says how to read the rest (reserved != 0 would be an extension we
    do not know, so it counts as a bad version); an oversize length cannot be trusted to skip by; a body past
    the chunk end is truncated. Every failure here ends the walk of the chunk.
    """
    if end - pos < FRAME_HEADER_SIZE:
        return C_FRAME_TRUNCATED, 0, end
    length = (np.int64(buf[pos]) | np.int64(buf[pos + 1]) << 8 | np.int64(buf[pos + 2]) << 16
              | np.int64(buf[pos + 3]) << 24)
    if buf[pos + 4] != WIRE_VERSION or buf[pos + 6] != 0 or buf[pos + 7] != 0:
        return C_FRAME_BAD_VERSION, 0, end
    if length > MAX_FRAME_BODY:
        return C_FRAME_OVERSIZE, 0, end
    body_end = pos + FRAME_HEADER_SIZE + length
    if body_end > end:
        return C_FRAME_TRUNCATED, 0, end
    return HEADER_OK, np.int64(buf[pos + 5]), body_end


# ---------------------------------------------------------------------------------------------- messages
MALFORMED, RING_FULL, NO_INSTRUMENT = -1, -2, -3  # what a reader returns instead of a ring slot or an id


@helper
def take_signal(buf, pos, end, recv_ns, signals_out, cursors, counters):
    """Decode one Signal body into the signals ring; return its slot there, MALFORMED or RING_FULL."""
    pos, ok = _read_array(buf, pos, end, SIGNAL_FIELDS)
    source, pos, ok1 = _read_uint(buf, pos, end, _U32_MAX)
    seq, pos, ok2 = _read_uint(buf, pos, end, _U64_MAX)
    signal_id, pos, ok3 = _read_uint(buf, pos, end, _U32_MAX)
    instrument, pos, ok4 = _read_uint(buf, pos, end, _U32_MAX)
    kind, pos, ok5 = _read_uint(buf, pos, end, _KIND_MAX)
    value, pos, ok6 = _read_float(buf, pos, end)
    price, pos, ok7 = _read_float(buf, pos, end)
    ts_ns, pos, ok8 = _read_i64(buf, pos, end)
    ttl_ns, pos, ok9 = _read_i64(buf, pos, end)
    if not (ok and ok1 and ok2 and ok3 and ok4 and ok5 and ok6 and ok7 and ok8 and ok9 and pos == end):
        counters[C_FRAME_MALFORMED] += 1
        return MALFORMED
    slot = claim(cursors, RING_SIGNALS, len(signals_out))
    if slot == NO_ROOM:
        counters[C_SIGNAL_RING_FULL] += 1
        return RING_FULL
    s = signals_out[slot]
    s["source"] = source
    s["seq"] = seq
    s["signal_id"] = signal_id
    s["instrument"] = instrument
    s["kind"] = kind
    s["value"] = value
    s["price"] = price
    s["ts_ns"] = ts_ns
    s["ttl_ns"] = ttl_ns
    s["recv_ns"] = recv_ns
    publish(cursors, RING_SIGNALS)
    counters[C_SIGNALS] += 1
    return slot


@helper
def _ticks(price, tick_size):
    """(ticks, ok): a price in ticks; ok is False for NaN, inf, negative or absurdly large prices."""
    t = float(price) / float(tick_size)  # Python floats when run as Python: no numpy overflow warning
    if not (0.0 <= t <= _MAX_TICKS):  # also False for NaN
        return 0, False
    return np.int64(round(t)), True


@helper
def take_market_data(buf, pos, end, instruments, counters):
    """Apply one MarketData body to the instrument table; return the instrument it moved, or MALFORMED, or
    NO_INSTRUMENT (well formed but refused: an unknown instrument or invalid prices, counted)."""
    pos, ok = _read_array(buf, pos, end, MARKET_DATA_FIELDS)
    instrument, pos, ok1 = _read_uint(buf, pos, end, _U32_MAX)
    bid, pos, ok2 = _read_float(buf, pos, end)
    ask, pos, ok3 = _read_float(buf, pos, end)
    last, pos, ok4 = _read_float(buf, pos, end)
    ts_ns, pos, ok5 = _read_i64(buf, pos, end)
    if not (ok and ok1 and ok2 and ok3 and ok4 and ok5 and pos == end):
        counters[C_FRAME_MALFORMED] += 1
        return MALFORMED
    if instrument >= np.uint64(len(instruments)):
        counters[C_MARKET_DATA_UNKNOWN_INSTRUMENT] += 1
        return NO_INSTRUMENT
    ins = instruments[np.int64(instrument)]
    tick = ins["tick_size"]
    bid_ticks, ok1 = _ticks(bid, tick)
    ask_ticks, ok2 = _ticks(ask, tick)
    last_ticks, ok3 = _ticks(last, tick)
    if not (ok1 and ok2 and ok3):
        counters[C_MARKET_DATA_INVALID] += 1
        return NO_INSTRUMENT
    ins["bid_ticks"] = bid_ticks
    ins["ask_ticks"] = ask_ticks
    ins["last_ticks"] = last_ticks
    ins["md_ts_ns"] = ts_ns
    if bid_ticks > 0 and ask_ticks > 0:
        ins["mark_ticks"] = (bid_ticks + ask_ticks) // 2
    elif last_ticks > 0:
        ins["mark_ticks"] = last_ticks
    else:
        ins["mark_ticks"] = ins["ref_px_ticks"]
    counters[C_MARKET_DATA] += 1
    return np.int64(instrument)


@helper
def take_report(buf, pos, end, reports_out, cursors, counters):
    """Decode one ExecutionReport body into the reports ring; return its slot there, MALFORMED or RING_FULL."""
    pos, ok = _read_array(buf, pos, end, REPORT_FIELDS)
    order_id, pos, ok1 = _read_uint(buf, pos, end, _U64_MAX)
    strategy, pos, ok2 = _read_uint(buf, pos, end, _U32_MAX)
    deploy, pos, ok3 = _read_uint(buf, pos, end, _U32_MAX)
    exec_type, pos, ok4 = _read_uint(buf, pos, end, _U8_MAX)  # unknown types: C_REPORT_INVALID downstream
    qty, pos, ok5 = _read_i64(buf, pos, end)
    price, pos, ok6 = _read_float(buf, pos, end)
    leaves, pos, ok7 = _read_i64(buf, pos, end)
    fee, pos, ok8 = _read_float(buf, pos, end)
    ts_ns, pos, ok9 = _read_i64(buf, pos, end)
    reason, pos, ok10 = _read_uint(buf, pos, end, _U32_MAX)
    if not (ok and ok1 and ok2 and ok3 and ok4 and ok5 and ok6 and ok7 and ok8 and ok9 and ok10 and pos == end):
        counters[C_FRAME_MALFORMED] += 1
        return MALFORMED
    slot = claim(cursors, RING_REPORTS, len(reports_out))
    if slot == NO_ROOM:
        counters[C_REPORT_RING_FULL] += 1
        return RING_FULL
    r = reports_out[slot]
    r["order_id"] = order_id
    r["strategy"] = strategy
    r["deploy"] = deploy
    r["exec_type"] = exec_type
    r["qty"] = qty
    r["price"] = price
    r["leaves"] = leaves
    r["fee"] = fee
    r["ts_ns"] = ts_ns
    r["reason"] = reason
    publish(cursors, RING_REPORTS)
    counters[C_REPORTS] += 1
    return slot


@inline
def decode_chunks(state, n_chunks, recv_ns):
    """The decoder alone (its tests and benches): the frames of rx's first n_chunks chunks into the rings and
    the instrument table, nothing decided; return how many were well formed. The batch (kernels/batch.py) walks
    frames the same way and decides each event as it is read.

    Chunk k is rx_sizes[k] bytes after chunk k-1 and is walked on its own: a bad header ends its walk, a bad
    body skips one frame. A well-formed frame counts even if its ring was full or its market data was refused
    (the counters say which): C_FRAMES == returned + C_FRAME_BAD_TYPE + C_FRAME_MALFORMED, per call.
    """
    rx, rx_sizes, counters, cursors = state.rx, state.rx_sizes, state.counters, state.cursors
    signals_out, reports_out, instruments = state.signals, state.reports, state.instruments
    decoded = 0
    start = 0
    for k in range(min(n_chunks, len(rx_sizes))):
        size = max(np.int64(rx_sizes[k]), 0)
        end = min(start + size, len(rx))
        pos = start
        while pos < end:
            status, msg_type, frame_end = read_header(rx, pos, end)
            if status != HEADER_OK:
                counters[status] += 1
                break
            counters[C_FRAMES] += 1
            body = pos + FRAME_HEADER_SIZE
            if msg_type == MSG_SIGNAL:
                decoded += take_signal(rx, body, frame_end, recv_ns, signals_out, cursors, counters) != MALFORMED
            elif msg_type == MSG_MARKET_DATA:
                decoded += take_market_data(rx, body, frame_end, instruments, counters) != MALFORMED
            elif msg_type == MSG_EXECUTION_REPORT:
                decoded += take_report(rx, body, frame_end, reports_out, cursors, counters) != MALFORMED
            else:  # MSG_ORDER goes out, never in
                counters[C_FRAME_BAD_TYPE] += 1
            pos = frame_end
        start += size
    return decoded


@kernel(int64(ARENA, LAYOUT, int64, int64))
def decode_inbound(arena, layout, n_chunks, recv_ns):
    """`decode_chunks` on the arena; return how many frames were well formed."""
    return decode_chunks(views(arena, layout), n_chunks, recv_ns)


# ---------------------------------------------------------------------------------------------- writing
@helper
def _put(tx, pos, tag, bits, n):
    """Write a tag and the low n bytes of bits (uint64) big-endian; return the position after them."""
    tx[pos] = tag
    for k in range(n):
        tx[pos + n - k] = np.uint8((bits >> np.uint64(8 * k)) & _U8_MAX)
    return pos + 1 + n


@helper
def _put_order(tx, pos, o, tick_size):
    """One fixed-width Order frame at tx[pos:pos + ORDER_FRAME_SIZE]; return the position after it."""
    tx[pos] = ORDER_BODY_SIZE  # u32 little-endian body length, version, type, reserved
    tx[pos + 1] = 0
    tx[pos + 2] = 0
    tx[pos + 3] = 0
    tx[pos + 4] = WIRE_VERSION
    tx[pos + 5] = MSG_ORDER
    tx[pos + 6] = 0
    tx[pos + 7] = 0
    tx[pos + 8] = 0x90 + ORDER_FIELDS
    pos += 9
    pos = _put(tx, pos, 0xCF, np.uint64(o["order_id"]), 8)
    pos = _put(tx, pos, 0xCE, np.uint64(o["strategy"]), 4)
    pos = _put(tx, pos, 0xCE, np.uint64(o["deploy"]), 4)
    pos = _put(tx, pos, 0xCE, np.uint64(o["account"]), 4)
    pos = _put(tx, pos, 0xCE, np.uint64(o["instrument"]), 4)
    pos = _put(tx, pos, 0xD0, np.int64(o["side"]).view(np.uint64), 1)
    pos = _put(tx, pos, 0xCC, np.uint64(o["order_type"]), 1)
    pos = _put(tx, pos, 0xD3, np.int64(o["qty"]).view(np.uint64), 8)
    pos = _put(tx, pos, 0xCB, np.float64(o["px_ticks"] * tick_size).view(np.uint64), 8)
    pos = _put(tx, pos, 0xD3, np.int64(o["ts_ns"]).view(np.uint64), 8)
    pos = _put(tx, pos, 0xCE, np.uint64(o["signal_source"]), 4)
    pos = _put(tx, pos, 0xCF, np.uint64(o["signal_seq"]), 8)
    pos = _put(tx, pos, 0xD3, np.int64(o["signal_ts_ns"]).view(np.uint64), 8)
    return pos


@inline
def encode_to_tx(state, start, stop):
    """Append Order frames for order ring sequences [start, stop) to tx after the S_TX_LEN bytes waiting there;
    return how many frames were encoded.

    Sequences are the ring's cursor values as int64 (they never reach 2**63). Encoding stops at the first frame
    that does not fit: run_batch asks for no more orders than tx has room for, so that never happens there.
    """
    orders, instruments, tx_out = state.orders, state.instruments, state.tx
    tx_len = state.scalars[S_TX_LEN]
    mask = len(orders) - 1
    i = start
    while i < stop and tx_len + ORDER_FRAME_SIZE <= len(tx_out) and mask >= 0:
        o = orders[i & mask]
        instrument = np.int64(o["instrument"])
        # Risk only emits orders for configured instruments; an unknown one gets a NaN price the OMS rejects.
        tick = instruments[instrument]["tick_size"] if instrument < len(instruments) else np.nan
        tx_len = _put_order(tx_out, tx_len, o, tick)
        i += 1
    state.scalars[S_TX_LEN] = tx_len
    return i - start


@kernel(int64(ARENA, LAYOUT, int64, int64))
def encode_orders(arena, layout, start, stop):
    """`encode_to_tx` on the arena; return how many order frames were appended to tx."""
    return encode_to_tx(views(arena, layout), start, stop)
