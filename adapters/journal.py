"""The journal on disk: numbered, checked records in preallocated, memory-mapped segment files, read back in order.

The record format (8-byte aligned records: a `<IIQ` header of body length, check and seq, then the body,
zero-padded; a zero length ends the data) and the compiled code that frames and scans records are in
kernels/journal.py; what a body means is the engine's (engine/journal.py). This module owns the files: it maps,
syncs, rotates, spills and truncates. Seqs start at 1 and rise by one, across segments.

Segments: `<dir>/<first seq, 20 digits>.journal`, each preallocated (`posix_fallocate`, so a full disk is an
error when a segment is made, never a SIGBUS on a store) to `segment_bytes` and mapped shared: a record is
written by one compiled call straight into the mapping, and it is in the OS's page cache, so it survives a
SIGKILL, as soon as the call returns. No write(2) per batch. A segment is truncated to its data when it is
left (rotation, close); one left at its preallocated size by a process that died ends in zeros, which readers
take as the end of its data and the writer continues after. A record that does not fit the segment waits in an
in-memory spill (framed the same way) until the next `commit()` starts a new segment: a full disk then leaves
it there (JournalError; the next commit retries), never a silent gap.

Durability, by `fsync`:
- "batch": every `commit()` (the engine commits once per batch, before its orders leave) ends in fdatasync;
- "interval": a background thread fdatasyncs at most `fsync_interval_ms` after a commit (the batch pays nothing);
- "never": the OS writes the pages back when it likes.
Under every policy the same thread prefaults the segment's pages ahead of the records (madvise
MADV_POPULATE_WRITE, without the GIL), so the engine's stores do not take the page faults (a first write to a
page of a shared file mapping costs ~2 us: 0.1 ms a batch of 256 signals at p99 here). The policy decides only
what a power cut may take.

Reading: a record whose header or body is cut short, or whose check or seq is wrong, or a zero header with data
after it, at the end of the LAST segment is a torn tail (a process killed mid-write): `JournalReader` stops
there and `truncate_torn_tail()` cuts it off, so it is never replayed and new records follow the last good
one. A bad record anywhere else is corruption: `JournalCorrupt`, naming the file and offset (nothing is
guessed). Journals of the earlier msgpack-framed format (crc32 checks, no alignment) are not read: there were
no deployed users.
"""
import ctypes
import mmap
import os
import threading
import weakref
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import numpy as np
from msgspec import Meta

from kernels._jit import entry_point
from kernels.journal import (
    CLEAN, CURSOR_CAP, CURSOR_POS, CURSOR_SEQ, FULL, HEADER_BYTES, SCAN_END, SCAN_SEQ, SCAN_STATUS, STATUS_NAMES,
    frame_arrival, frame_body, padded, scan_records,
)

SUFFIX = ".journal"
PAGE = mmap.PAGESIZE
PREFAULT_BYTES = 1 << 20  # kept faulted in past the records, or 4x what was framed since the last round if more
MADV_POPULATE_WRITE = 23  # Linux 5.14 (not in Python's mmap module): fault pages in writable, contents unchanged
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
SCAN_BLOCK = 1 << 16   # record offsets a scan call returns at most


class JournalConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    dir: Annotated[str, Meta(min_length=1)] = "var/journal"  # a relative path is the config directory's
    fsync: Literal["batch", "interval", "never"] = "interval"
    fsync_interval_ms: Annotated[int, Meta(ge=1, le=60_000)] = 10
    segment_bytes: Annotated[int, Meta(ge=1 << 16, le=1 << 40)] = 64 << 20


class JournalError(OSError):
    """The journal cannot be written (a full disk, a directory that went read-only): the engine's policy decides."""


class JournalCorrupt(ValueError):
    """A bad record that is not a torn tail: `path` and `offset` say where."""

    def __init__(self, path, offset, what):
        super().__init__(f"journal corrupt at {path} byte {offset}: {what}")
        self.path, self.offset, self.what = path, offset, what


def segments(directory):
    """The segment files of a journal directory, oldest first, as (first seq, path)."""
    found = []
    for path in Path(directory).glob(f"*{SUFFIX}"):
        stem = path.name[:-len(SUFFIX)]
        if stem.isdigit():
            found.append((int(stem), path))
    return sorted(found)


def segment_path(directory, first_seq):
    return Path(directory) / f"{first_seq:020d}{SUFFIX}"


def _read_segment(path):
    """A segment file's bytes in a zero-padded array whose length is a multiple of 8 (what scan_records takes),
    and the file's size."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = np.zeros(padded(size), np.uint8)
        f.readinto(memoryview(data)[:size])
    return data, size


class Scanned(msgspec.Struct):
    """The good records of one segment: `data[offsets[i]:]` is the record of seq `first_seq + i`."""
    path: str
    data: np.ndarray
    offsets: np.ndarray
    first_seq: int

    def body(self, i):
        """The body of the i-th record, a memoryview into `data`."""
        offset = int(self.offsets[i])
        length = int(self.data[offset:offset + 4].view(np.uint32)[0])
        return memoryview(self.data)[offset + HEADER_BYTES:offset + HEADER_BYTES + length]


def scan_segment(path, first_seq):
    """(Scanned, where its data ends, why it ends: CLEAN or a kernels/journal.py status, the file's size)."""
    data, size = _read_segment(path)
    result = np.zeros(3, np.int64)
    parts, pos, seq = [], 0, first_seq
    while True:
        offsets = np.empty(min(SCAN_BLOCK, size // (HEADER_BYTES + 8) + 1), np.int64)
        n = scan_records(data, pos, size, seq, offsets, result)
        parts.append(offsets[:n])
        pos, seq, status = int(result[SCAN_END]), int(result[SCAN_SEQ]), int(result[SCAN_STATUS])
        if status != FULL:
            break
    offsets = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return Scanned(str(path), data, offsets, first_seq), pos, status, size


# ---------------------------------------------------------------------------------------------- reading
class TornTail(msgspec.Struct, frozen=True):
    path: str
    offset: int      # where the last good record ends: the file is cut here
    dropped: int     # bytes after it
    what: str


class JournalReader:
    """Records of a journal directory in seq order: `for seq, body in reader.records(after=seq)`, or a segment's
    checked records at a time: `for scanned in reader.scanned(after=seq)` (what recovery feeds from).

    After the iteration, `last_seq` is the last good record's seq (0 for an empty journal) and `torn` says
    what was found after it in the last segment (None when the journal ends cleanly, in zeros or not)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.last_seq = 0
        self.torn = None
        self.segments = segments(self.directory)

    def scanned(self, after=0):
        expected = None
        for index, (first, path) in enumerate(self.segments):
            last_segment = index == len(self.segments) - 1
            if index + 1 < len(self.segments) and self.segments[index + 1][0] <= after + 1:
                expected = self.segments[index + 1][0]  # wholly before `after`: skip unread
                continue
            if expected is not None and first != expected:
                raise JournalCorrupt(path, 0, f"segment starts at seq {first}, expected {expected}")
            block, end, status, size = scan_segment(path, first)
            if status != CLEAN:
                what = STATUS_NAMES[status]
                if not last_segment:
                    raise JournalCorrupt(path, end, what)
                self.torn = TornTail(str(path), end, size - end, what)
            expected = first + len(block.offsets)
            self.last_seq = expected - 1
            skip = max(0, after + 1 - first)
            if skip:
                block.offsets, block.first_seq = block.offsets[skip:], first + skip
            if len(block.offsets):
                yield block

    def records(self, after=0):
        for block in self.scanned(after):
            for i in range(len(block.offsets)):
                yield block.first_seq + i, block.body(i)

    def truncate_torn_tail(self):
        """Cut the torn tail found by `records()` off its segment (fsynced); return it, or None."""
        torn = self.torn
        if torn is not None:
            with open(torn.path, "r+b") as f:
                f.truncate(torn.offset)
                os.fsync(f.fileno())
            self.torn = None
        return torn


# ---------------------------------------------------------------------------------------------- writing
class _Spill:
    """Records framed in memory while the segment has no room for them: moved to the next segment at commit."""

    def __init__(self):
        self.data = np.zeros(1 << 16, np.uint8)
        self.cursor = np.zeros(3, np.int64)

    def start(self, seq):
        self.cursor[:] = (0, seq, len(self.data))

    def grow(self):
        used = int(self.cursor[CURSOR_POS])
        data = np.zeros(2 * len(self.data), np.uint8)
        data[:used] = self.data[:used]
        self.data = data
        self.cursor[CURSOR_CAP] = len(data)


class JournalWriter:
    _spill_empty = np.zeros(0, np.uint8)  # before open(): no room anywhere

    """Appends records: `append(body)` or `append_arrival(...)` frames one straight into the mapped segment and
    returns its seq; `commit()` ends a batch (fdatasync under fsync = "batch"; a new segment when this one is
    full). Not thread-safe except for its own background thread."""

    def __init__(self, config: JournalConfig, directory, next_seq=1):
        self.config = config
        self.directory = Path(directory)
        self._fd = -1
        self._map = None
        self.segment = None   # the mapped segment's bytes (np.uint8 over the mapping)
        self.cursor = np.array([0, next_seq, 0], np.int64)
        self._spill = None    # a _Spill while records wait for a new segment
        self._out, self._out_cursor = self._spill_empty, self.cursor  # where records go: segment or spill
        self._rotate_at = padded(config.segment_bytes)
        self._sync_commits = config.fsync == "batch"
        self._frame_arrival = entry_point(frame_arrival)
        self._frame_body = entry_point(frame_body)
        self._dirty = False
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self.syncs = 0
        self.prefaulted = 0       # bytes of pages the background thread faulted in ahead of the records
        self.prefault_errno = 0   # why madvise refused (then it is not tried again), or 0
        self._prefaulted_to = 0   # the mapped segment's pages before this were faulted in once
        self._left_bytes = 0   # bytes framed into the segments this writer has left ...
        self._mapped_at = 0    # ... and where it started in the mapped one
        self.written_seq = next_seq - 1  # the last record in the OS's page cache (in a segment) ...
        self.synced_seq = next_seq - 1   # ... and the last one known on disk (fdatasync returned)

    @property
    def next_seq(self):
        return self._out_cursor.item(CURSOR_SEQ)

    @property
    def bytes_written(self):
        """Bytes of records this writer put in segments (spilled ones count when they reach one)."""
        mapped = int(self.cursor[CURSOR_POS]) - self._mapped_at if self._map is not None else 0
        return self._left_bytes + mapped

    @property
    def pending(self):
        """Bytes of records waiting in memory for a segment (a full disk)."""
        return 0 if self._spill is None else int(self._spill.cursor[CURSOR_POS])

    def open(self):
        """Open (or create) the directory and the segment to append to; raise JournalError if it cannot be
        written, JournalCorrupt if the last segment has a torn tail (recovery cuts it first). The last segment
        is continued after its data."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".writable"
            probe.write_bytes(b"")
            probe.unlink()
            existing = segments(self.directory)
            if existing:
                first, path = existing[-1]
                block, end, status, _ = scan_segment(path, first)
                if status != CLEAN:
                    raise JournalCorrupt(path, end, STATUS_NAMES[status] + " (recover the journal first)")
                self.cursor[CURSOR_SEQ] = first + len(block.offsets)
                self._map_segment(path, end)
            else:
                self._map_segment(segment_path(self.directory, self.next_seq), 0)
        except OSError as e:
            raise JournalError(e.errno, f"journal directory {self.directory} cannot be written: {e.strerror}") \
                from None
        self.written_seq = self.synced_seq = self.next_seq - 1
        self._thread = threading.Thread(target=self._background, name="journal-sync", daemon=True, args=(
            weakref.ref(self), self._stop, self.config.fsync, self.config.fsync_interval_ms))
        self._thread.start()

    def _map_segment(self, path, used, least=0):
        """Map `path` (created if new) preallocated to segment_bytes (or `least`), its records continuing at byte
        `used`; the directory entry is made durable."""
        capacity = -(-max(self.config.segment_bytes, used + least, 1) // PAGE) * PAGE  # whole pages
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, used)  # past the data: zeros (a segment left at full size may hold stale pages)
            os.posix_fallocate(fd, 0, capacity)
            mapped = mmap.mmap(fd, capacity, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(fd)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._fd, self._map = fd, mapped
        self.segment = np.frombuffer(mapped, np.uint8)
        self._out, self._out_cursor = self.segment, self.cursor
        self.cursor[CURSOR_POS], self.cursor[CURSOR_CAP] = used, capacity
        self._prefaulted_to = 0
        self._mapped_at = used

    def _unmap_segment(self):
        """Leave the mapped segment: truncated to its data, synced, closed."""
        used = int(self.cursor[CURSOR_POS])
        self._left_bytes += used - self._mapped_at
        self.segment = None
        self.cursor[CURSOR_CAP] = 0  # no room: a record framed before the next segment spills
        if self._spill is None:
            self._out = self._spill_empty
        self._map.close()
        self._map = None
        try:
            os.ftruncate(self._fd, used)
            os.fdatasync(self._fd)
            self.syncs += 1
        finally:
            os.close(self._fd)
            self._fd = -1

    # ------------------------------------------------------------------------------------------ appending
    def append(self, body) -> int:
        """Frame one record of `body` (bytes, not empty); return its seq."""
        if not body:
            raise ValueError("a journal record's body cannot be empty (a zero length ends a segment's data)")
        body = np.frombuffer(body, np.uint8)
        while (seq := self._frame_body(self._out, self._out_cursor, body)) < 0:
            self._no_room()
        return seq

    def append_arrival(self, time_ns, source, rx, start, end, rx_sizes, first, n) -> int:
        """Frame an arrival record (kernels/journal.py frame_arrival) of rx's chunks first..first+n,
        rx[start:end]; return its seq. The hot path: one compiled call."""
        while (seq := self._frame_arrival(self._out, self._out_cursor, time_ns, source, rx, start, end, rx_sizes,
                                          first, n)) < 0:
            self._no_room()
        return seq

    def _no_room(self):
        """Where records go has no room for the next one: the segment's records spill, a spill grows."""
        if self._spill is None:
            self._spill = _Spill()
            self._spill.start(int(self.cursor[CURSOR_SEQ]))
        else:
            self._spill.grow()
        self._out, self._out_cursor = self._spill.data, self._spill.cursor

    def commit(self):
        """End a batch: move spilled records into a new segment, start one if this one is full, fdatasync under
        fsync = "batch". Raises JournalError (spilled records stay in memory: a later commit retries them)."""
        last = self._out_cursor.item(CURSOR_SEQ) - 1
        if self._spill is None and self.cursor.item(CURSOR_POS) < self._rotate_at and not self._sync_commits:
            if last != self.written_seq:  # the common case: nothing to do but say so
                self.written_seq, self._dirty = last, True
            return
        try:
            if self._spill is not None or self.cursor.item(CURSOR_POS) >= self._rotate_at:
                with self._sync_lock:
                    self._rotate()
            if self._sync_commits and self.synced_seq < last:
                os.fdatasync(self._fd)
                self.syncs += 1
                self.synced_seq = last
        except OSError as e:
            raise JournalError(e.errno, f"journal write failed in {self.directory}: {e.strerror}") from None
        if last != self.written_seq:
            self.written_seq, self._dirty = last, True

    def _rotate(self):
        """Leave the full segment (truncated, synced) and map a new one starting at the next record, with the
        spilled records moved in. Records framed meanwhile (a failure here) spill."""
        if self._spill is None:
            self._no_room()
        spill = self._spill
        if self._map is not None:
            self._unmap_segment()
            self.synced_seq = int(self.cursor[CURSOR_SEQ]) - 1
        used = int(spill.cursor[CURSOR_POS])
        self._map_segment(segment_path(self.directory, int(self.cursor[CURSOR_SEQ])), 0, used)
        self.segment[:used] = spill.data[:used]
        self.cursor[CURSOR_POS], self.cursor[CURSOR_SEQ] = used, spill.cursor[CURSOR_SEQ]
        self._spill = None
        self._out, self._out_cursor = self.segment, self.cursor

    def sync(self):
        """fdatasync what was written (any policy): at shutdown, before a snapshot names the seq it covers."""
        with self._sync_lock:
            self._dirty = False  # before the sync: a write after this point marks it dirty again
            if self._fd >= 0:
                written = self.written_seq
                os.fdatasync(self._fd)
                self.syncs += 1
                self.synced_seq = max(self.synced_seq, written)

    @staticmethod
    def _background(ref, stop, fsync, interval_ms):
        """Twice per sync interval (every 5 ms under other policies): under fsync = "interval" sync when something
        was committed since the last sync (so a record is on disk at most one interval after its commit), then
        prefault the pages ahead of the records. Holds the writer weakly: a writer dropped unclosed (a test's
        engine that "died") takes its thread with it."""
        interval = interval_ms if fsync == "interval" else 10
        last = 0
        while not stop.wait(interval / 2000):
            writer = ref()
            if writer is None:
                return
            if writer._dirty and fsync == "interval":
                try:
                    writer.sync()
                except OSError:  # the next commit reports the disk's trouble
                    pass
            last = writer._prefault(last)
            del writer

    def _prefault(self, last):
        """Fault in the pages past the record cursor not faulted in yet, up to PREFAULT_BYTES past it (or 4x what
        was framed since `last`, the cursor at the previous round); return the cursor. Each page once: a page a
        sync wrote back before the engine wrote to it costs a cheap fault again, where faulting it in again here
        would dirty it again and make every sync write PREFAULT_BYTES of zeros. The madvise call releases the
        GIL and leaves the bytes as they are, so it cannot race a record's write."""
        with self._sync_lock:
            if self.segment is None or self.prefault_errno:
                return 0
            pos, capacity = self.cursor.item(CURSOR_POS), self.cursor.item(CURSOR_CAP)
            start = max(pos - pos % PAGE, self._prefaulted_to)
            end = min(pos + max(PREFAULT_BYTES, 4 * (pos - last)), capacity)
            if end > start and _libc.madvise(self.segment.ctypes.data + start, end - start, MADV_POPULATE_WRITE):
                self.prefault_errno = ctypes.get_errno()  # an older kernel: the engine takes the faults
            elif end > start:
                self.prefaulted += end - start
                self._prefaulted_to = end
            return pos

    def close(self):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._map is not None:
            try:
                self.commit()
            finally:
                with self._sync_lock:
                    self._unmap_segment()
                self.synced_seq = self.written_seq
