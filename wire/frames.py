"""Frames in Python: the header, its verdicts, whole frames in a byte run, iterating and writing frames.

A frame is an 8-byte header and a body (docs/wire.md): `<IBBH` = body length (u32 LE), WIRE_VERSION (u8),
message type (u8, MSG_*), reserved (u16, 0); the body is the msgpack array of a wire/schema.py Struct.

A header is judged as soon as its 8 bytes are in, in this order, the same everywhere (TCP, UDP, Aeron, the
compiled decoder kernels/codec.py `_read_header`), so the same bytes get the same verdict and counter:
  1. version: WIRE_VERSION and reserved 0, else FRAME_BAD_VERSION (it says how to read the rest);
  2. length: at most MAX_FRAME_BODY, else FRAME_OVERSIZE (a length that cannot be trusted to skip by);
  3. body: all of it in the bytes at hand, else FRAME_TRUNCATED (a stream waits for the rest).
A bad version or an oversize length ends the run: nothing after it can be framed.
"""
import struct
from typing import NamedTuple

import msgspec

from kernels.dtypes import FRAME_HEADER_SIZE, MAX_FRAME_BODY, MSG_NAMES, WIRE_VERSION
from wire.schema import MESSAGE_TYPES

HEADER = struct.Struct("<IBBH")
assert HEADER.size == FRAME_HEADER_SIZE
MAX_FRAME_SIZE = FRAME_HEADER_SIZE + MAX_FRAME_BODY

# Header verdicts, in the order they are checked.
FRAME_OK, FRAME_BAD_VERSION, FRAME_OVERSIZE, FRAME_TRUNCATED = range(4)
VERDICT_NAMES = ("ok", "bad_version", "oversize", "truncated")

_encoder = msgspec.msgpack.Encoder()
_decoders = {msg_type: msgspec.msgpack.Decoder(cls) for msg_type, cls in MESSAGE_TYPES.items()}
_PLACEHOLDER = bytes(FRAME_HEADER_SIZE)


class FrameHeader(NamedTuple):
    length: int    # body bytes after the header
    version: int
    msg_type: int
    reserved: int


class FrameError(ValueError):
    """Bytes that are not a frame: `offset` is where the frame starts in the buffer, `what` says what is wrong,
    `verdict` which check failed (FRAME_*; FRAME_OK for a well-framed body that does not decode)."""

    def __init__(self, offset, what, verdict=FRAME_OK):
        super().__init__(f"bad frame at byte {offset}: {what}")
        self.offset, self.what, self.verdict = offset, what, verdict


def read_header(buf, offset=0):
    """The FrameHeader at buf[offset:] (the caller checks that 8 bytes are there)."""
    return FrameHeader(*HEADER.unpack_from(buf, offset))


def next_frame(buf, pos, end):
    """(verdict, msg_type, frame_end) of the frame starting at buf[pos:end] (see the module's order of checks)."""
    if end - pos < FRAME_HEADER_SIZE:
        return FRAME_TRUNCATED, 0, end
    length, version, msg_type, reserved = HEADER.unpack_from(buf, pos)
    if version != WIRE_VERSION or reserved != 0:
        return FRAME_BAD_VERSION, msg_type, end
    if length > MAX_FRAME_BODY:
        return FRAME_OVERSIZE, msg_type, end
    frame_end = pos + FRAME_HEADER_SIZE + length
    if frame_end > end:
        return FRAME_TRUNCATED, msg_type, end
    return FRAME_OK, msg_type, frame_end


def scan_frames(buf, start, end):
    """Walk the headers in buf[start:end] -> (end of the last whole frame, verdict).

    FRAME_OK: the bytes after the returned position (if any) are the start of an unfinished frame. FRAME_BAD_VERSION
    or FRAME_OVERSIZE: the returned position is that untrusted header; the bytes before it are whole frames."""
    pos = start
    while pos < end:
        verdict, _, frame_end = next_frame(buf, pos, end)
        if verdict == FRAME_TRUNCATED:
            break
        if verdict != FRAME_OK:
            return pos, verdict
        pos = frame_end
    return pos, FRAME_OK


def whole_frames_end(buf, start, end):
    """Where the last whole frame in buf[start:end] ends (start if none); stops at an untrusted header."""
    return scan_frames(buf, start, end)[0]


def iter_frames(buf):
    """(msg_type, Struct) for each frame of a buffer of whole frames; FrameError at the first bad one."""
    view = memoryview(buf)
    pos, end = 0, len(view)
    while pos < end:
        verdict, msg_type, frame_end = next_frame(view, pos, end)
        if verdict != FRAME_OK:
            raise FrameError(pos, _fault(view, pos, end, verdict), verdict)
        if msg_type not in _decoders:
            raise FrameError(pos, f"unknown message type {msg_type}")
        try:
            msg = _decoders[msg_type].decode(view[pos + FRAME_HEADER_SIZE:frame_end])
        except msgspec.DecodeError as e:  # ValidationError is a DecodeError
            raise FrameError(pos, f"{MSG_NAMES[msg_type]}: {e}") from None
        yield msg_type, msg
        pos = frame_end


def _fault(view, pos, end, verdict):
    if end - pos < FRAME_HEADER_SIZE:
        return f"truncated: {end - pos} bytes left, a header is {FRAME_HEADER_SIZE}"
    length, version, _, reserved = HEADER.unpack_from(view, pos)
    if verdict == FRAME_BAD_VERSION:
        return f"version {version} reserved {reserved}, expected {WIRE_VERSION} and 0"
    if verdict == FRAME_OVERSIZE:
        return f"body length {length} > MAX_FRAME_BODY {MAX_FRAME_BODY}"
    return f"truncated: body of {length} bytes, {end - pos - FRAME_HEADER_SIZE} left"


def decode_body(msg_type, body):
    """The Struct in a frame body; raises msgspec.DecodeError (or ValidationError) naming the field at fault."""
    return _decoders[msg_type].decode(body)


# ---------------------------------------------------------------------------------------------- writing
def encode_frame(msg):
    """One frame: header and msgspec's msgpack body of `msg` (any Struct of wire/schema.py)."""
    body = _encoder.encode(msg)
    return HEADER.pack(len(body), WIRE_VERSION, msg.msg_type, 0) + body


def append_frame(encoder, msg, out):
    """Append msg as one frame to the bytearray `out` without a copy of the body; return the frame's length."""
    start = len(out)
    out += _PLACEHOLDER
    encoder.encode_into(msg, out, -1)
    body = len(out) - start - FRAME_HEADER_SIZE
    HEADER.pack_into(out, start, body, WIRE_VERSION, msg.msg_type, 0)
    return FRAME_HEADER_SIZE + body


def frame(msg_type, body, version=WIRE_VERSION, reserved=0):
    """A frame around raw body bytes, header fields as given: for test traffic and deliberately bad frames."""
    return HEADER.pack(len(body), version, msg_type, reserved) + bytes(body)
