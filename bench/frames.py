"""Wire frames for the benches, built and read by numpy: signal frames in, order frames out, reports back.

Every record is one whole frame (docs/wire.md): the 8-byte header, a msgpack fixarray, then each field with its
full-width tag, so a batch of frames is one numpy array and costs a few numpy calls whatever its size. Order
frames are fixed width because the engine writes them that way (kernels/codec.py `_put_order`); `ORDER_FRAME_T`
reads them without a decoder, and `read_orders` falls back to msgspec (engine.wire) for anything else.

The bench workload (`fill_signals`) is the same everywhere, micro and end to end: signal k goes to signal id and
instrument g = k % 4 (one strategy each, bench/config), as an ORDER signal of one lot, buying and selling in
turn per instrument, priced one tick inside the reference (a buy one tick below, a sell one tick above), so no
order crosses a working order of its account (no self-match) and positions swing around zero.
"""
import numpy as np

from kernels.dtypes import (
    EXEC_ACK, EXEC_FILL, FRAME_HEADER_SIZE, MSG_EXECUTION_REPORT, MSG_ORDER, MSG_SIGNAL, SIGNAL_ORDER,
    WIRE_VERSION,
)

_U8, _U32, _U64, _I8, _I64, _F64 = 0xCC, 0xCE, 0xCF, 0xD0, 0xD3, 0xCB


def _frame_dtype(fields):
    spec = [("frame_length", "<u4"), ("frame_version", "u1"), ("frame_type", "u1"), ("frame_reserved", "<u2"),
            ("array", "u1")]
    for name, fmt, tag in fields:
        if tag is not None:
            spec.append((name + "_tag", "u1"))
        spec.append((name, fmt))
    return np.dtype(spec)


SIGNAL_FIELDS = (("source", ">u4", _U32), ("seq", ">u8", _U64), ("signal_id", ">u4", _U32),
                 ("instrument", ">u4", _U32), ("kind", "u1", None),  # 0 or 1: a positive fixint is its own tag
                 ("value", ">f8", _F64), ("price", ">f8", _F64), ("ts_ns", ">i8", _I64), ("ttl_ns", ">i8", _I64))
ORDER_FIELDS = (("order_id", ">u8", _U64), ("strategy", ">u4", _U32), ("version", ">u4", _U32),
                ("account", ">u4", _U32), ("instrument", ">u4", _U32), ("side", "i1", _I8),
                ("order_type", "u1", _U8), ("qty", ">i8", _I64), ("price", ">f8", _F64), ("ts_ns", ">i8", _I64),
                ("signal_source", ">u4", _U32), ("signal_seq", ">u8", _U64), ("signal_ts_ns", ">i8", _I64))
REPORT_FIELDS = (("order_id", ">u8", _U64), ("strategy", ">u4", _U32), ("version", ">u4", _U32),
                 ("exec_type", "u1", _U8), ("qty", ">i8", _I64), ("price", ">f8", _F64), ("leaves", ">i8", _I64),
                 ("fee", ">f8", _F64), ("ts_ns", ">i8", _I64), ("reason", ">u4", _U32))
SIGNAL_FRAME_T = _frame_dtype(SIGNAL_FIELDS)
ORDER_FRAME_T = _frame_dtype(ORDER_FIELDS)
REPORT_FRAME_T = _frame_dtype(REPORT_FIELDS)
SIGNAL_FRAME_SIZE = SIGNAL_FRAME_T.itemsize
ORDER_FRAME_SIZE = ORDER_FRAME_T.itemsize
REPORT_FRAME_SIZE = REPORT_FRAME_T.itemsize


def records(dtype, fields, msg_type, n):
    """n zeroed frames of `dtype` with header, array header and tags filled in."""
    out = np.zeros(n, dtype)
    out["frame_length"] = dtype.itemsize - FRAME_HEADER_SIZE
    out["frame_version"] = WIRE_VERSION
    out["frame_type"] = msg_type
    out["array"] = 0x90 + len(fields)
    for name, _, tag in fields:
        if tag is not None:
            out[name + "_tag"] = tag
    return out


def signal_frames(n):
    return records(SIGNAL_FRAME_T, SIGNAL_FIELDS, MSG_SIGNAL, n)


def report_frames(n):
    return records(REPORT_FRAME_T, REPORT_FIELDS, MSG_EXECUTION_REPORT, n)


class Instruments:
    """What the workload needs to know of the bench config's instruments: lot, tick and reference price."""

    def __init__(self, config):
        self.lot = np.array([i.lot_size for i in config.instruments], np.float64)
        self.tick = np.array([i.tick_size for i in config.instruments], np.float64)
        self.ref = np.array([i.reference_price for i in config.instruments], np.float64)
        self.n = len(self.lot)


def fill_signals(out, instruments, first_index, seq0, source, ts_ns, ttl_ns=10_000_000_000):
    """Write the bench workload's signals first_index .. first_index + len(out) - 1 into `out` (signal frames).

    seq runs from seq0; ts_ns is a scalar or one value per signal (the intended send times)."""
    n = len(out)
    k = np.arange(first_index, first_index + n)
    g = k % instruments.n
    side = np.where((k // instruments.n) % 2 == 0, 1.0, -1.0)
    out["source"] = source
    out["seq"] = np.arange(seq0, seq0 + n, dtype=np.uint64)
    out["signal_id"] = g
    out["instrument"] = g
    out["kind"] = SIGNAL_ORDER
    out["value"] = side * instruments.lot[g]
    out["price"] = np.round(instruments.ref[g] / instruments.tick[g] - side) * instruments.tick[g]
    out["ts_ns"] = ts_ns
    out["ttl_ns"] = ttl_ns
    return out


def order_view(buf, n_bytes):
    """The order frames in buf[:n_bytes] as ORDER_FRAME_T records, or None if any frame is not a fixed-width
    Order (the caller then decodes with msgspec)."""
    if n_bytes % ORDER_FRAME_SIZE:
        return None
    recs = np.frombuffer(buf, ORDER_FRAME_T, n_bytes // ORDER_FRAME_SIZE)
    body = ORDER_FRAME_SIZE - FRAME_HEADER_SIZE
    if not (np.all(recs["frame_length"] == body) and np.all(recs["frame_type"] == MSG_ORDER)
            and np.all(recs["array"] == 0x90 + len(ORDER_FIELDS)) and np.all(recs["signal_ts_ns_tag"] == _I64)):
        return None
    return recs


def fills_for(orders, now_ns, out, acks=True):
    """Report frames answering each order: an ACK (if `acks`) then a FILL of the whole quantity at its price.
    Writes into `out` (REPORT_FRAME_T, at least 2 x len(orders) long); returns the filled slice."""
    n = len(orders)
    per = 2 if acks else 1
    rec = out[:per * n]
    for k, exec_type in enumerate((EXEC_ACK, EXEC_FILL) if acks else (EXEC_FILL,)):
        r = rec[k::per]
        r["order_id"] = orders["order_id"]
        r["strategy"] = orders["strategy"]
        r["version"] = orders["version"]
        r["exec_type"] = exec_type
        r["qty"] = orders["qty"] if exec_type == EXEC_FILL else 0
        r["price"] = orders["price"]
        r["leaves"] = 0 if exec_type == EXEC_FILL else orders["qty"]
        r["fee"] = 0.0
        r["ts_ns"] = now_ns
        r["reason"] = 0
    return rec
