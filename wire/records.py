"""Whole frames as numpy records: one fixed-width frame per record, so a batch of frames is one array.

A record is the 8-byte header (`frame_length`, `frame_version`, `frame_type`, `frame_reserved`), a msgpack fixarray
header (`array`) and each field with its full-width tag (`<name>_tag`, then the big-endian value): a valid msgpack
encoding that wire/schema.py and kernels/codec.py decode like any other. The feed and the benches write signals,
market data and reports this way with a few numpy calls whatever the batch size; the engine writes its Order
frames in this very layout (kernels/codec.py `_put_order`), so `order_view` reads them without a decoder.
"""
import numpy as np

from kernels.dtypes import FRAME_HEADER_SIZE, MSG_EXECUTION_REPORT, MSG_MARKET_DATA, MSG_ORDER, MSG_SIGNAL, WIRE_VERSION

_U8, _U32, _U64, _I8, _I64, _F64 = 0xCC, 0xCE, 0xCF, 0xD0, 0xD3, 0xCB

SIGNAL_FIELDS = (("source", ">u4", _U32), ("seq", ">u8", _U64), ("signal_id", ">u4", _U32),
                 ("instrument", ">u4", _U32), ("kind", "u1", None),  # 0 or 1: a positive fixint is its own tag
                 ("value", ">f8", _F64), ("price", ">f8", _F64), ("ts_ns", ">i8", _I64), ("ttl_ns", ">i8", _I64))
MARKET_DATA_FIELDS = (("instrument", ">u4", _U32), ("bid", ">f8", _F64), ("ask", ">f8", _F64),
                      ("last", ">f8", _F64), ("ts_ns", ">i8", _I64))
ORDER_FIELDS = (("order_id", ">u8", _U64), ("strategy", ">u4", _U32), ("deploy", ">u4", _U32),
                ("account", ">u4", _U32), ("instrument", ">u4", _U32), ("side", "i1", _I8),
                ("order_type", "u1", _U8), ("qty", ">i8", _I64), ("price", ">f8", _F64), ("ts_ns", ">i8", _I64),
                ("signal_source", ">u4", _U32), ("signal_seq", ">u8", _U64), ("signal_ts_ns", ">i8", _I64))
REPORT_FIELDS = (("order_id", ">u8", _U64), ("strategy", ">u4", _U32), ("deploy", ">u4", _U32),
                 ("exec_type", "u1", _U8), ("qty", ">i8", _I64), ("price", ">f8", _F64), ("leaves", ">i8", _I64),
                 ("fee", ">f8", _F64), ("ts_ns", ">i8", _I64), ("reason", ">u4", _U32))
_FIELDS = {MSG_SIGNAL: SIGNAL_FIELDS, MSG_MARKET_DATA: MARKET_DATA_FIELDS, MSG_ORDER: ORDER_FIELDS,
           MSG_EXECUTION_REPORT: REPORT_FIELDS}


def _frame_dtype(fields):
    spec = [("frame_length", "<u4"), ("frame_version", "u1"), ("frame_type", "u1"), ("frame_reserved", "<u2"),
            ("array", "u1")]
    for name, fmt, tag in fields:
        if tag is not None:
            spec.append((name + "_tag", "u1"))
        spec.append((name, fmt))
    return np.dtype(spec)


SIGNAL_FRAME_T = _frame_dtype(SIGNAL_FIELDS)
MARKET_DATA_FRAME_T = _frame_dtype(MARKET_DATA_FIELDS)
ORDER_FRAME_T = _frame_dtype(ORDER_FIELDS)
REPORT_FRAME_T = _frame_dtype(REPORT_FIELDS)
_DTYPES = {MSG_SIGNAL: SIGNAL_FRAME_T, MSG_MARKET_DATA: MARKET_DATA_FRAME_T, MSG_ORDER: ORDER_FRAME_T,
           MSG_EXECUTION_REPORT: REPORT_FRAME_T}
SIGNAL_FRAME_SIZE = SIGNAL_FRAME_T.itemsize
MARKET_DATA_FRAME_SIZE = MARKET_DATA_FRAME_T.itemsize
ORDER_FRAME_SIZE = ORDER_FRAME_T.itemsize
REPORT_FRAME_SIZE = REPORT_FRAME_T.itemsize


def records(msg_type, n):
    """n zeroed frames of msg_type (MSG_*) with header, array header and tags filled in."""
    dtype, fields = _DTYPES[msg_type], _FIELDS[msg_type]
    out = np.zeros(n, dtype)
    out["frame_length"] = dtype.itemsize - FRAME_HEADER_SIZE
    out["frame_version"] = WIRE_VERSION
    out["frame_type"] = msg_type
    out["array"] = 0x90 + len(fields)
    for name, _, tag in fields:
        if tag is not None:
            out[name + "_tag"] = tag
    return out


def order_view(buf, n_bytes):
    """The order frames in buf[:n_bytes] as ORDER_FRAME_T records, or None if any frame is not a fixed-width
    Order (the caller then decodes with wire.frames.iter_frames)."""
    if n_bytes % ORDER_FRAME_SIZE:
        return None
    recs = np.frombuffer(buf, ORDER_FRAME_T, n_bytes // ORDER_FRAME_SIZE)
    body = ORDER_FRAME_SIZE - FRAME_HEADER_SIZE
    if not (np.all(recs["frame_length"] == body) and np.all(recs["frame_type"] == MSG_ORDER)
            and np.all(recs["array"] == 0x90 + len(ORDER_FIELDS)) and np.all(recs["signal_ts_ns_tag"] == _I64)):
        return None
    return recs
