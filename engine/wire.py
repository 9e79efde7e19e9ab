"""The wire schema as msgspec Structs, and frames in Python: for the feed, the simulated OMS, tests and clients.

A frame is an 8-byte header (`<IBBH`: body length, WIRE_VERSION, MSG_* type, reserved 0) and a body, the
msgpack array of one Struct's fields in order. docs/wire.md is the reference; kernels/codec.py is the compiled
reader the engine uses, and it accepts exactly what these Structs decode (tests hold them to it).

Struct constructors do not validate: `encode_frame` sends what it is given (tests use that to make bad frames).
Decoding validates every int range, as the engine does.
"""
import struct
from typing import Annotated, ClassVar, Literal, NamedTuple

import msgspec

from kernels.dtypes import (
    FRAME_HEADER_SIZE, MAX_FRAME_BODY, MSG_EXECUTION_REPORT, MSG_MARKET_DATA, MSG_NAMES, MSG_ORDER, MSG_SIGNAL,
    WIRE_VERSION,
)

U8 = Annotated[int, msgspec.Meta(ge=0, le=2**8 - 1)]
U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgpack ints stop at 2**64 - 1 (and msgspec bounds at int64)
I64 = Annotated[int, msgspec.Meta(ge=-2**63, le=2**63 - 1)]


class _Message(msgspec.Struct, array_like=True, gc=False, frozen=True, forbid_unknown_fields=True):
    msg_type: ClassVar[int]


class Signal(_Message):
    """Signal Engine -> engine."""
    msg_type: ClassVar[int] = MSG_SIGNAL
    source: U32
    seq: U64             # per source, starts at 1; the engine rejects duplicates and older sequences
    signal_id: U32
    instrument: U32
    kind: Literal[0, 1]  # SIGNAL_TARGET: value in [-1, 1] of max position; SIGNAL_ORDER: value = signed units
    value: float
    price: float         # limit price, currency
    ts_ns: I64           # when the signal was made, epoch ns
    ttl_ns: I64          # 0: no expiry


class MarketData(_Message):
    """Feed -> engine. A price of 0 means that side is unknown; NaN, inf or negative prices void the update."""
    msg_type: ClassVar[int] = MSG_MARKET_DATA
    instrument: U32
    bid: float
    ask: float
    last: float
    ts_ns: I64


class Order(_Message):
    """Engine -> OMS."""
    msg_type: ClassVar[int] = MSG_ORDER
    order_id: U64
    strategy: U32
    version: U32
    account: U32
    instrument: U32
    side: Literal[1, -1]          # SIDE_BUY, SIDE_SELL
    order_type: Literal[0, 1, 2]  # ORDER_LIMIT, ORDER_MARKET, ORDER_IOC
    qty: I64                      # units, > 0
    price: float                  # currency: px_ticks * tick_size
    ts_ns: I64
    signal_source: U32
    signal_seq: U64
    signal_ts_ns: I64


class ExecutionReport(_Message):
    """OMS -> engine. The engine checks exec_type and values downstream (C_REPORT_INVALID), not here."""
    msg_type: ClassVar[int] = MSG_EXECUTION_REPORT
    order_id: U64
    strategy: U32
    version: U32
    exec_type: U8  # EXEC_ACK, EXEC_REJECT, EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_CANCELED
    qty: I64       # this fill's units; 0 for non-fills
    price: float   # this fill's price, currency
    leaves: I64
    fee: float     # this fill's fee, currency
    ts_ns: I64
    reason: U32    # the OMS's reject code; 0 otherwise


MESSAGE_TYPES = {MSG_SIGNAL: Signal, MSG_MARKET_DATA: MarketData, MSG_ORDER: Order,
                 MSG_EXECUTION_REPORT: ExecutionReport}

_HEADER = struct.Struct("<IBBH")
assert _HEADER.size == FRAME_HEADER_SIZE
_encoder = msgspec.msgpack.Encoder()
_decoders = {msg_type: msgspec.msgpack.Decoder(cls) for msg_type, cls in MESSAGE_TYPES.items()}


class FrameHeader(NamedTuple):
    length: int    # body bytes after the header
    version: int
    msg_type: int
    reserved: int


class FrameError(ValueError):
    """Bytes that are not a frame: `offset` is where the frame starts in the buffer, `what` says what is wrong."""

    def __init__(self, offset, what):
        super().__init__(f"bad frame at byte {offset}: {what}")
        self.offset = offset
        self.what = what


def read_header(buf, offset=0):
    """The FrameHeader at buf[offset:] (the caller checks that 8 bytes are there)."""
    return FrameHeader(*_HEADER.unpack_from(buf, offset))


def encode_frame(msg):
    """One frame: header and msgspec's msgpack body of `msg` (any Struct of MESSAGE_TYPES)."""
    body = _encoder.encode(msg)
    return _HEADER.pack(len(body), WIRE_VERSION, msg.msg_type, 0) + body


def decode_body(msg_type, body):
    """The Struct in a frame body; raises msgspec.DecodeError (or ValidationError) naming the field at fault."""
    return _decoders[msg_type].decode(body)


def iter_frames(buf):
    """(msg_type, Struct) for each frame of a buffer of whole frames; FrameError at the first bad one."""
    view = memoryview(buf)
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < FRAME_HEADER_SIZE:
            raise FrameError(pos, f"truncated: {end - pos} bytes left, a header is {FRAME_HEADER_SIZE}")
        length, version, msg_type, reserved = _HEADER.unpack_from(view, pos)
        if version != WIRE_VERSION or reserved != 0:
            raise FrameError(pos, f"version {version} reserved {reserved}, expected {WIRE_VERSION} and 0")
        if length > MAX_FRAME_BODY:
            raise FrameError(pos, f"body length {length} > MAX_FRAME_BODY {MAX_FRAME_BODY}")
        body_end = pos + FRAME_HEADER_SIZE + length
        if body_end > end:
            raise FrameError(pos, f"truncated: body of {length} bytes, {end - pos - FRAME_HEADER_SIZE} left")
        if msg_type not in _decoders:
            raise FrameError(pos, f"unknown message type {msg_type}")
        try:
            msg = _decoders[msg_type].decode(view[pos + FRAME_HEADER_SIZE:body_end])
        except msgspec.DecodeError as e:  # ValidationError is a DecodeError
            raise FrameError(pos, f"{MSG_NAMES[msg_type]}: {e}") from None
        yield msg_type, msg
        pos = body_end
