"""Helpers for the transport tests: frames with readable content and a sink that polls like the engine."""
import select
import socket
import struct
import time

import numpy as np

from kernels.dtypes import FRAME_HEADER_SIZE, MAX_FRAME_BODY, MSG_SIGNAL
from wire import frames as wire_frames
from wire.frames import FRAME_OK, HEADER, scan_frames

_TAG = struct.Struct("<IQ")  # (source, seq) at the start of every test frame body


def frame(seq, source=0, body_len=None):
    """A frame whose body starts with (source, seq); its length varies with seq unless given."""
    body_len = _TAG.size + seq % 61 if body_len is None else body_len
    body = _TAG.pack(source, seq) + bytes((seq + i) & 0xFF for i in range(body_len - _TAG.size))
    return wire_frames.frame(MSG_SIGNAL, body)


def max_frame(seq, source=0):
    return frame(seq, source, MAX_FRAME_BODY)


def split_frames(chunk):
    """The frames of one chunk; fails unless the chunk is whole frames."""
    end, status = scan_frames(chunk, 0, len(chunk))
    assert (end, status) == (len(chunk), FRAME_OK), f"chunk of {len(chunk)} bytes is not whole frames"
    out, pos = [], 0
    while pos < len(chunk):
        size = FRAME_HEADER_SIZE + HEADER.unpack_from(chunk, pos)[0]
        out.append(chunk[pos:pos + size])
        pos += size
    return out


def tag(frame_bytes):
    """(source, seq) of a test frame."""
    return _TAG.unpack_from(frame_bytes, FRAME_HEADER_SIZE)


class Sink:
    """The engine's side of poll(): an rx buffer and rx_sizes; checks the contract on every call."""

    def __init__(self, rx_bytes=1 << 17, slots=256, check_frames=True):
        self.check_frames = check_frames  # False where chunks may be garbage (UDP faults)
        self.rx = np.zeros(rx_bytes, np.uint8)
        self.rx_sizes = np.full(slots, -1, np.int32)
        self.chunks = []
        self.n_frames = 0
        self.polls = 0

    def poll(self, transport, offset=0, chunk_index=0, max_chunks=None, ready=False):
        """One poll (`ready`: poll_ready, as after a readiness wait) with the contract checked."""
        if max_chunks is None:
            max_chunks = len(self.rx_sizes) - chunk_index
        before_rx, before_sizes = self.rx[:offset].copy(), self.rx_sizes.copy()
        n, end = (transport.poll_ready if ready else transport.poll)(self.rx, offset, self.rx_sizes, chunk_index,
                                                                     max_chunks)
        self.polls += 1
        sizes = self.rx_sizes[chunk_index:chunk_index + n]
        assert 0 <= n <= max_chunks and offset <= end <= len(self.rx)
        assert int(sizes.sum()) == end - offset, "chunk sizes must add up to the bytes written"
        assert (sizes > 0).all() or n == 0
        assert np.array_equal(self.rx[:offset], before_rx), "poll wrote before offset"
        untouched = np.r_[0:chunk_index, chunk_index + n:len(self.rx_sizes)]
        assert np.array_equal(self.rx_sizes[untouched], before_sizes[untouched]), "poll wrote a size it did not return"
        pos = offset
        for size in sizes:
            self.chunks.append(self.rx[pos:pos + size].tobytes())
            self.n_frames += len(split_frames(self.chunks[-1])) if self.check_frames else 0
            pos += size
        return n

    def frames(self):
        return [f for chunk in self.chunks for f in split_frames(chunk)]

    def drain(self, transport, until, timeout=5.0, **poll_args):
        """Poll until `until(self)` holds, waiting on the transport's fd (or a short sleep) between empty polls."""
        deadline = time.monotonic() + timeout
        while not until(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out with {len(self.chunks)} chunks after {self.polls} polls")
            if self.poll(transport, **poll_args) == 0:
                fd = transport.fileno()
                if fd >= 0:
                    select.select([fd], [], [], 0.01)
                else:
                    time.sleep(0.001)
        return self

    def drain_frames(self, transport, count, **kw):
        return self.drain(transport, lambda s: s.n_frames >= count, **kw)


def free_port():
    """A loopback port that nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
