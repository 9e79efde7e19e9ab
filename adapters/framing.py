"""Where whole frames end in a byte run. The header is `<IBBH`: body length, version, message type, reserved.

Transports need only the boundaries (TCP to cut a stream into whole frames, replay and tests to check them);
decoding the bodies is the engine's job.
"""
import struct

from kernels.dtypes import FRAME_HEADER_SIZE, MAX_FRAME_BODY, WIRE_VERSION

HEADER = struct.Struct("<IBBH")
MAX_FRAME_SIZE = FRAME_HEADER_SIZE + MAX_FRAME_BODY
_LENGTH_VERSION = struct.Struct("<IB")  # the two header fields a boundary depends on

# scan_frames status: OK, or why the header at the returned position cannot be trusted.
FRAMES_OK, FRAMES_OVERSIZE, FRAMES_BAD_VERSION = 0, 1, 2


def scan_frames(buf, start, end):
    """Walk the headers in buf[start:end] -> (end of the last whole frame, status).

    With a status other than FRAMES_OK the returned position is the untrusted header: the bytes before it are
    whole frames, nothing after it can be framed. A header is judged as soon as its 8 bytes are in, so a
    header claiming a 4 GB body is caught before any of the body is awaited.
    """
    pos = start
    while end - pos >= FRAME_HEADER_SIZE:
        body, version = _LENGTH_VERSION.unpack_from(buf, pos)
        if body > MAX_FRAME_BODY:
            return pos, FRAMES_OVERSIZE
        if version != WIRE_VERSION:
            return pos, FRAMES_BAD_VERSION
        if pos + FRAME_HEADER_SIZE + body > end:
            break
        pos += FRAME_HEADER_SIZE + body
    return pos, FRAMES_OK


def whole_frames_end(buf, start, end):
    """Where the last whole frame in buf[start:end] ends (start if none); stops at an untrusted header."""
    return scan_frames(buf, start, end)[0]


def encode_frame(msg_type, body, version=WIRE_VERSION):
    """One frame as bytes: for senders of test traffic and feeds; the engine encodes its own in a kernel."""
    return HEADER.pack(len(body), version, msg_type, 0) + bytes(body)
