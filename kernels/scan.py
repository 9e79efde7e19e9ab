"""The frame scanner of a byte stream: where the whole frames of a run of bytes end, and why the walk stopped.

A TCP read is cut at frame boundaries before it reaches rx (adapters/tcp.py): the whole frames go to the batch,
the unfinished one at the tail waits for the next read. The scanner judges each header with the decoder's own
`read_header` (kernels/codec.py), so a stream is judged in the one order of checks every transport shares
(wire/frames.py): version and reserved bits, then length, then a whole body. Its verdict is the decoder's counter
for what it found, so the same bytes get the same verdict over TCP, UDP and Aeron. `wire/frames.scan_frames` is
the same walk in Python; a property test holds the two together.
"""
from numba import types

from kernels._jit import kernel
from kernels.codec import HEADER_OK, read_header
from kernels.dtypes import C_FRAME_TRUNCATED


@kernel(types.UniTuple(types.int64, 2)(types.uint8[::1], types.int64, types.int64))
def scan_frames(buf, start, end):
    """Walk the headers of buf[start:end] -> (end of the last whole frame, verdict).

    Verdict HEADER_OK: every header was good; the bytes after the returned position (if any) begin an unfinished
    frame (a stream waits for the rest). C_FRAME_BAD_VERSION or C_FRAME_OVERSIZE: the returned position is that
    untrusted header, the bytes before it are whole frames, and nothing after it can be framed. The range is
    clipped to the buffer: nothing outside it is read."""
    if end > len(buf):
        end = len(buf)
    pos = max(start, 0)
    while pos < end:
        status, _, frame_end = read_header(buf, pos, end)
        if status == HEADER_OK:
            pos = frame_end
        elif status == C_FRAME_TRUNCATED:
            break
        else:
            return pos, status
    return pos, HEADER_OK
