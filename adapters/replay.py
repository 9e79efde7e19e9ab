"""Replay files: inbound chunks recorded with their receive time, played back in the same order and batches.

File: records of `<Iq` (chunk length u32, recv_ns i64) followed by the chunk's bytes; nothing else.
A chunk is replayed exactly as recorded (never merged or split), so the decoder sees the same byte runs.

The clock: the live engine reads its clock once per batch and records every chunk of that batch with it
(`write_polled(..., recv_ns=now_ns)`). A reader's poll returns only chunks that share one recv_ns and sets
`recv_ns`; the engine uses it as the batch clock. So replay rebuilds the live batches with the live clocks,
and every time-dependent decision (TTL, token buckets, breaker windows) comes out the same. `next_recv_ns`
lets a driver pace playback at recorded speed; a spin driver simply polls until `at_end`.
"""
import os
import struct
import time

import msgspec

from adapters.base import Transport

RECORD = struct.Struct("<Iq")


class ReplayWriterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str = "var/rx.replay"  # appended to; its folder is created


class ReplayWriter(Transport):
    """Appends chunks. `send(frames)` records them as one chunk stamped now; the engine uses write_polled."""

    def __init__(self, config=ReplayWriterConfig()):
        super().__init__()
        self.config = config
        self._file = None
        self._header = bytearray(RECORD.size)

    def open(self):
        os.makedirs(os.path.dirname(self.config.path) or ".", exist_ok=True)
        self._file, self.closed = open(self.config.path, "ab"), False

    def fileno(self):
        return -1  # a file is always writable: nothing to wait on

    def write(self, chunk, recv_ns):
        self._check_open()
        RECORD.pack_into(self._header, 0, len(chunk), recv_ns)
        self._file.write(self._header)
        self._file.write(chunk)
        self.stats.sent += 1
        self.stats.bytes_out += len(chunk)

    def write_polled(self, rx, offset, rx_sizes, chunk_index, n_chunks, recv_ns):
        """Record the chunks a poll just wrote: the same arguments, the poll's result and the batch clock."""
        view = self._view(rx)
        for i in range(chunk_index, chunk_index + n_chunks):
            size = int(rx_sizes[i])
            self.write(view[offset:offset + size], recv_ns)
            offset += size

    def send(self, frames):
        self.write(frames, time.time_ns())
        return True  # a file has no back-pressure; a full disk raises OSError

    def flush(self):
        self._check_open()
        self._file.flush()
        return True

    def close(self):
        if self._close_common():
            self._file.close()


class ReplayReaderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str = "var/rx.replay"


class ReplayReader(Transport):
    """poll() returns the next recorded chunks that share one recv_ns; `recv_ns` is their recorded clock."""

    def __init__(self, config=ReplayReaderConfig()):
        super().__init__()
        self.config = config
        self._file = None
        self._header = bytearray(RECORD.size)
        self._next = None  # (size, recv_ns) of a record whose header is read but whose chunk is not
        self.recv_ns = -1  # recorded clock of the chunks of the last poll that returned any
        self.at_end = False

    def open(self):
        self._file, self.closed = open(self.config.path, "rb"), False

    def fileno(self):
        return -1  # always ready until at_end: poll it from a spin loop

    def attach(self, loop, on_readable):
        raise TypeError("a replay has no fd to wait on: drive it with the spin driver")

    @property
    def next_recv_ns(self):
        """Recorded clock of the next chunk, -1 at the end."""
        self._check_open()
        head = self._peek()
        return -1 if head is None else head[1]

    def _peek(self):
        if self._next is None and not self.at_end:
            got = self._file.readinto(self._header)
            if got == RECORD.size:
                self._next = RECORD.unpack(self._header)
            else:
                self._end(got)
        return self._next

    def _end(self, got):
        """End of file: a record cut short (a recorder that died mid-write) is counted, not raised."""
        self.at_end = True
        if got:
            self.stats.truncated += 1

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        self._check_open()
        view, stats = self._view(rx), self.stats
        room, n = min(max_chunks, len(rx_sizes) - chunk_index), 0  # chunk slots
        while n < room and (head := self._peek()) is not None:
            size, recv_ns = head
            if n and recv_ns != self.recv_ns:
                break  # the next recorded batch: it gets its own poll and its own clock
            if size > len(view):  # could never fit: skip it rather than stall the replay
                stats.oversize += 1
                self._next = None
                if self._file.seek(size, os.SEEK_CUR) > os.fstat(self._file.fileno()).st_size:
                    self._end(1)  # the skipped record was itself cut short
                continue
            if size > len(view) - offset:
                break
            got = self._file.readinto(view[offset:offset + size])
            self._next = None
            if got < size:
                self._end(RECORD.size + got)
                break
            rx_sizes[chunk_index + n] = size
            n += 1
            offset += size
            stats.bytes_in += size
            self.recv_ns = recv_ns
        stats.chunks += n
        return n, offset

    def close(self):
        if self._close_common():
            self._file.close()
