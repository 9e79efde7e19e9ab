"""The journal on disk: numbered, checksummed records appended to segment files, read back in order.

A record is a header `<IIQ` (body length u32, crc32 u32 of the seq bytes and the body, seq u64) and its body;
what a body means is the engine's (engine/journal.py encodes msgpack records): this module only frames,
checks, writes, syncs and rotates. Seqs start at 1 and rise by one, across segments.

Segments: `<dir>/<first seq, 20 digits>.journal`; a new one starts when the current one passes `segment_bytes`,
so old segments can be archived or deleted whole once a snapshot covers them.

Durability, by `fsync`:
- "batch": every `commit()` (the engine commits once per batch, before its orders leave) ends in fdatasync;
- "interval": a background thread fdatasyncs what was written at most `fsync_interval_ms` ago (the batch only
  pays the write(2), never the sync);
- "never": the OS decides.
A written record survives a SIGKILL of the engine in every mode (it is in the OS's page cache); the policy
decides what a power cut may take.

Reading: a record whose header or body is cut short, or whose checksum or seq is wrong, at the end of the LAST
segment is a torn tail (a process killed mid-write): `JournalReader` stops there and `truncate_torn_tail()`
cuts it off, so it is never replayed and new records follow the last good one. A bad record anywhere else is
corruption: `JournalCorrupt`, naming the file and offset (nothing is guessed).
"""
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

HEADER = struct.Struct("<IIQ")
SEQ = struct.Struct("<Q")
MAX_BODY = 1 << 30
SUFFIX = ".journal"


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


def checksum(seq, body):
    return zlib.crc32(body, zlib.crc32(SEQ.pack(seq))) & 0xFFFF_FFFF


# ---------------------------------------------------------------------------------------------- reading
class TornTail(msgspec.Struct, frozen=True):
    path: str
    offset: int      # where the last good record ends: the file is cut here
    dropped: int     # bytes after it
    what: str


class JournalReader:
    """Records of a journal directory in seq order: `for seq, body in reader.records(after=seq)`.

    After the iteration, `last_seq` is the last good record's seq (0 for an empty journal) and `torn` says
    what was found after it in the last segment (None when the journal ends cleanly)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.last_seq = 0
        self.torn = None
        self.segments = segments(self.directory)

    def records(self, after=0):
        expected = None
        for index, (first, path) in enumerate(self.segments):
            last_segment = index == len(self.segments) - 1
            if index + 1 < len(self.segments) and self.segments[index + 1][0] <= after + 1:
                expected = self.segments[index + 1][0]  # wholly before `after`: skip unread
                continue
            if expected is not None and first != expected:
                raise JournalCorrupt(path, 0, f"segment starts at seq {first}, expected {expected}")
            expected = first
            with open(path, "rb") as f:
                data = f.read()
            offset = 0
            while offset < len(data):
                problem = None
                if len(data) - offset < HEADER.size:
                    problem = "a record header cut short"
                else:
                    length, crc, seq = HEADER.unpack_from(data, offset)
                    end = offset + HEADER.size + length
                    if length > MAX_BODY or end > len(data):
                        problem = "a record body cut short"
                    elif seq != expected:
                        problem = f"seq {seq}, expected {expected}"
                    elif checksum(seq, data[offset + HEADER.size:end]) != crc:
                        problem = "checksum mismatch"
                if problem:
                    if not last_segment:
                        raise JournalCorrupt(path, offset, problem)
                    self.torn = TornTail(str(path), offset, len(data) - offset, problem)
                    return
                self.last_seq = seq
                if seq > after:
                    yield seq, memoryview(data)[offset + HEADER.size:end]
                expected += 1
                offset = end

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
class JournalWriter:
    """Appends records: `append(body)` buffers one and returns its seq; `commit()` writes what is buffered with
    one write(2) (and fdatasync under fsync = "batch"). Not thread-safe except for its own sync thread."""

    def __init__(self, config: JournalConfig, directory, next_seq=1):
        self.config = config
        self.directory = Path(directory)
        self.next_seq = next_seq
        self._buffer = bytearray()
        self._fd = -1
        self._segment_size = 0
        self._dirty = False
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._syncer = None
        self.syncs = 0
        self.bytes_written = 0
        self.written_seq = next_seq - 1  # the last record handed to the OS (write(2) returned) ...
        self.synced_seq = next_seq - 1   # ... and the last one known on disk (fdatasync returned)

    def open(self):
        """Open (or create) the directory and the segment to append to; raise JournalError if it cannot be
        written. The last existing segment is continued: recovery has already cut any torn tail."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            existing = segments(self.directory)
            path = existing[-1][1] if existing else segment_path(self.directory, self.next_seq)
            self._open_segment(path)
            probe = self.directory / ".writable"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise JournalError(e.errno, f"journal directory {self.directory} cannot be written: {e.strerror}") \
                from None
        if self.config.fsync == "interval":
            self._syncer = threading.Thread(target=self._sync_loop, name="journal-fsync", daemon=True)
            self._syncer.start()

    def _open_segment(self, path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        old, self._fd = self._fd, fd
        self._segment_size = os.fstat(fd).st_size
        if old >= 0:
            os.fdatasync(old)
            os.close(old)
        dir_fd = os.open(self.directory, os.O_RDONLY)  # the new file's name is durable too
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def append(self, body) -> int:
        seq = self.next_seq
        self._buffer += HEADER.pack(len(body), checksum(seq, body), seq)
        self._buffer += body
        self.next_seq = seq + 1
        return seq

    @property
    def pending(self):
        return len(self._buffer)

    def commit(self):
        """Write every buffered record (one write(2)); rotate after it if the segment is full. Raises
        JournalError (the records stay buffered: a later commit retries them)."""
        if not self._buffer:
            return
        try:
            written = os.write(self._fd, self._buffer)
            while written < len(self._buffer):  # a short write (signal, disk nearly full): finish or fail
                written += os.write(self._fd, memoryview(self._buffer)[written:])
            self.written_seq = self.next_seq - 1
            if self.config.fsync == "batch":
                os.fdatasync(self._fd)
                self.syncs += 1
                self.synced_seq = self.written_seq
        except OSError as e:
            raise JournalError(e.errno, f"journal write failed in {self.directory}: {e.strerror}") from None
        self.bytes_written += written
        self._segment_size += written
        self._buffer.clear()
        self._dirty = True
        if self._segment_size >= self.config.segment_bytes:
            with self._sync_lock:
                self._open_segment(segment_path(self.directory, self.next_seq))  # syncs the old one
                self._dirty = False
                self.synced_seq = self.written_seq

    def sync(self):
        """fdatasync what was written (any policy): at shutdown, before a snapshot names the seq it covers."""
        with self._sync_lock:
            self._dirty = False  # before the sync: a write after this point marks it dirty again
            if self._fd >= 0:
                written = self.written_seq
                os.fdatasync(self._fd)
                self.syncs += 1
                self.synced_seq = max(self.synced_seq, written)

    def _sync_loop(self):
        """fsync = "interval": wake twice per interval, sync when something was written since the last sync, so
        a record is on disk at most one interval after its commit."""
        half = self.config.fsync_interval_ms / 2000
        while not self._stop.wait(half):
            if self._dirty:
                try:
                    self.sync()
                except OSError:  # the next commit's write reports the disk's trouble
                    pass

    def close(self):
        if self._syncer is not None:
            self._stop.set()
            self._syncer.join()
            self._syncer = None
        if self._fd >= 0:
            try:
                self.commit()
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1
