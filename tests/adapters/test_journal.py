"""adapters/journal.py on a real directory: records come back in seq order across segments; a torn tail (cut
header, cut body, bad checksum, a record left unfinished) is found, reported and cut off, never returned; a
segment left at its preallocated size ends at its data; corruption before the tail is an error naming file and
offset; fsync policies sync when they say; an unwritable directory is a JournalError; the bytes on disk are the
documented format (docs/design.md), checked against a framing written again here in plain Python."""
import os
import struct
import time

import msgspec
import numpy as np
import pytest

from adapters.journal import (
    JournalConfig, JournalCorrupt, JournalError, JournalReader, JournalWriter, segments,
)
from kernels.journal import CURSOR_POS, HEADER_BYTES

HEADER = struct.Struct("<IIQ")


def config(**kw):
    return msgspec.convert(kw, JournalConfig)


def write(directory, bodies, next_seq=1, **kw):
    writer = JournalWriter(config(**kw), directory, next_seq)
    writer.open()
    seqs = [writer.append(body) for body in bodies]
    writer.commit()
    writer.close()
    return seqs


def read(directory, after=0):
    reader = JournalReader(directory)
    return [(seq, bytes(body)) for seq, body in reader.records(after)], reader


BODIES = [b"first", b"\0", b"x" * 1000, bytes(range(256))]


def test_journal_when_written_then_read_back_in_order_with_seqs_from_one(tmp_path):
    assert write(tmp_path, BODIES) == [1, 2, 3, 4]

    records, reader = read(tmp_path)

    assert records == list(zip([1, 2, 3, 4], BODIES)) and reader.last_seq == 4 and reader.torn is None
    assert read(tmp_path, after=2)[0] == [(3, BODIES[2]), (4, BODIES[3])]


def test_journal_when_segments_rotate_then_a_reader_crosses_them_and_can_skip_whole_ones(tmp_path):
    bodies = [bytes([i]) * 30_000 for i in range(10)]
    write(tmp_path, bodies[:5], segment_bytes=1 << 16)
    write(tmp_path, bodies[5:], next_seq=6, segment_bytes=1 << 16)  # a restart continues the last segment

    assert len(segments(tmp_path)) >= 3
    assert [seq for seq, _ in read(tmp_path)[0]] == list(range(1, 11))
    assert read(tmp_path, after=8)[0] == [(9, bodies[8]), (10, bodies[9])]


@pytest.mark.parametrize("damage, what", [
    (lambda data: data[:-11], "a record body cut short"),  # the last body is 256 bytes: no padding
    (lambda data: data + HEADER.pack(10, 0, 5)[:7], "a record header cut short"),
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum mismatch"),
])
def test_journal_when_the_tail_is_torn_then_it_is_reported_cut_off_and_never_returned(tmp_path, damage, what):
    write(tmp_path, BODIES)
    path = segments(tmp_path)[-1][1]
    good = path.read_bytes()
    path.write_bytes(damage(good))

    records, reader = read(tmp_path)

    assert reader.torn.what == what
    assert [seq for seq, _ in records] == ([1, 2, 3] if what != "a record header cut short" else [1, 2, 3, 4])
    torn = reader.truncate_torn_tail()
    assert torn.offset == path.stat().st_size and reader.torn is None
    assert read(tmp_path)[1].torn is None
    next_seq = read(tmp_path)[1].last_seq + 1
    write(tmp_path, [b"after"], next_seq=next_seq)  # the engine journals on after the last good record
    assert read(tmp_path)[0][-1] == (next_seq, b"after")


def test_journal_when_a_middle_segment_is_corrupt_then_reading_stops_with_file_and_offset(tmp_path):
    write(tmp_path, [bytes([i]) * 30_000 for i in range(6)], segment_bytes=1 << 16)
    first = segments(tmp_path)[0][1]
    data = bytearray(first.read_bytes())
    data[HEADER_BYTES + 5] ^= 0xFF
    first.write_bytes(bytes(data))

    with pytest.raises(JournalCorrupt, match=f"journal corrupt at {first} byte 0: checksum mismatch"):
        read(tmp_path)


def test_journal_when_fsync_is_per_batch_then_every_commit_syncs(tmp_path):
    writer = JournalWriter(config(fsync="batch"), tmp_path)
    writer.open()
    for body in BODIES:
        writer.append(body)
        writer.commit()
    assert writer.syncs == len(BODIES)
    writer.close()


def test_journal_when_fsync_is_on_an_interval_then_a_thread_syncs_what_was_written(tmp_path):
    writer = JournalWriter(config(fsync="interval", fsync_interval_ms=5), tmp_path)
    writer.open()
    writer.append(b"one")
    writer.commit()
    deadline = time.monotonic() + 5
    while writer.syncs == 0:
        assert time.monotonic() < deadline, "the sync thread never synced"
        time.sleep(0.001)
    quiet = writer.syncs
    time.sleep(0.05)
    assert writer.syncs == quiet  # nothing written since: nothing to sync
    writer.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_journal_when_the_directory_cannot_be_written_then_open_raises_naming_it(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(JournalError, match=f"journal directory {locked / 'j'} cannot be written"):
        JournalWriter(config(), locked / "j").open()


def test_journal_when_the_path_is_a_file_then_open_raises_naming_it(tmp_path):
    (tmp_path / "j").write_text("not a directory")
    with pytest.raises(JournalError, match="cannot be written"):
        JournalWriter(config(), tmp_path / "j").open()


# ---------------------------------------------------------------------------------------------- the format
M64 = (1 << 64) - 1
P1, P2 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F


def die(writer):
    """What a SIGKILL does to a writer: its thread stops, its mapping and descriptor go, nothing is truncated or
    synced (the records are in the page cache)."""
    writer._stop.set()
    writer._thread.join()
    writer.segment = writer._out = None
    writer._map.close()
    os.close(writer._fd)


def reference_check(seq, body):
    """kernels/journal.py's check, written again from its docstring in plain Python integers."""
    padded = body + bytes(-len(body) % 8)
    words = struct.unpack(f"<{len(padded) // 8}Q", padded)
    seed = (seq * P2 & M64) ^ len(body)
    lanes = [seed ^ P1, seed ^ P2, (seed + P1) & M64, (seed + P2) & M64]
    full = len(words) // 4 * 4
    for i in range(0, full, 4):
        for k in range(4):
            x = (lanes[k] ^ words[i + k]) * P1 & M64
            lanes[k] = x ^ (x >> 29)
    for w in words[full:]:
        x = (lanes[0] ^ w) * P2 & M64
        lanes[0] = x ^ (x >> 29)
    a, b, c, d = lanes
    h = a ^ (b * P2 & M64) ^ ((c * P1 & M64) >> 7) ^ (d * P1 * P2 & M64)
    return (h ^ (h >> 32)) & 0xFFFF_FFFF


def reference_record(seq, body):
    return HEADER.pack(len(body), reference_check(seq, body), seq) + body + bytes(-len(body) % 8)


def test_journal_when_written_then_the_file_is_the_documented_format_byte_for_byte(tmp_path):
    bodies = [b"a", b"12345678", bytes(range(200)) * 3, b"\xff" * 33]
    write(tmp_path, bodies, next_seq=1)

    expected = b"".join(reference_record(seq, body) for seq, body in enumerate(bodies, 1))
    assert segments(tmp_path)[0][1].read_bytes() == expected  # truncated to its data on close


def test_journal_when_a_body_is_empty_then_append_refuses_it(tmp_path):
    writer = JournalWriter(config(), tmp_path)
    writer.open()
    with pytest.raises(ValueError, match="cannot be empty"):
        writer.append(b"")
    writer.close()


def test_journal_when_the_writer_died_then_its_full_size_segment_reads_to_its_data_and_is_continued(tmp_path):
    writer = JournalWriter(config(), tmp_path)  # never closed: the process was killed
    writer.open()
    for body in BODIES:
        writer.append(body)
    writer.commit()
    die(writer)
    path = segments(tmp_path)[0][1]
    assert path.stat().st_size == config().segment_bytes  # preallocated, zeros after the records

    records, reader = read(tmp_path)
    assert [body for _, body in records] == BODIES and reader.torn is None

    write(tmp_path, [b"after"], next_seq=5)  # a new writer continues after the data, not after the zeros
    assert read(tmp_path)[0][-1] == (5, b"after") and path.stat().st_size < 4096


def test_journal_when_a_record_was_left_unfinished_then_the_zero_header_with_data_after_is_a_torn_tail(tmp_path):
    write(tmp_path, BODIES)
    path = segments(tmp_path)[-1][1]
    end = path.stat().st_size
    with open(path, "ab") as f:  # the body of seq 5 written, its header (written last) not yet
        f.write(bytes(HEADER.size) + b"a body" + bytes(2))

    records, reader = read(tmp_path)

    assert len(records) == 4 and reader.torn.what.startswith("a record not finished") and reader.torn.offset == end


def test_journal_when_a_record_does_not_fit_the_segment_then_it_waits_and_the_commit_starts_a_new_one(tmp_path):
    writer = JournalWriter(config(segment_bytes=1 << 16), tmp_path)
    writer.open()
    writer.append(b"x" * 60_000)
    big = bytes(range(256)) * 40  # 10 kB: past the segment's 64 kB
    assert writer.append(big) == 2 and writer.pending > len(big) and len(segments(tmp_path)) == 1
    assert writer.append(b"third") == 3 and writer.next_seq == 4  # behind it, in order

    writer.commit()

    assert writer.pending == 0 and [first for first, _ in segments(tmp_path)] == [1, 2]
    writer.close()
    assert [body for _, body in read(tmp_path)[0]] == [b"x" * 60_000, big, b"third"]
    assert segments(tmp_path)[0][1].stat().st_size == HEADER.size + 60_000  # truncated when left


def test_journal_when_the_background_thread_runs_then_it_prefaults_pages_ahead_and_leaves_them_zero(tmp_path):
    writer = JournalWriter(config(fsync="never"), tmp_path)
    writer.open()
    writer.append(b"one")
    deadline = time.monotonic() + 5
    while writer.prefaulted == 0:
        assert writer.prefault_errno == 0, os.strerror(writer.prefault_errno)
        assert time.monotonic() < deadline, "the background thread never prefaulted"
        time.sleep(0.001)
    assert not writer.segment[int(writer.cursor[CURSOR_POS]):].any()
    writer.close()
    assert read(tmp_path)[0] == [(1, b"one")]


def test_journal_when_an_arrival_is_framed_from_rx_then_its_body_is_the_documented_layout(tmp_path):
    rx = np.frombuffer(bytes(range(256)) * 4, np.uint8).copy()
    rx_sizes = np.array([3, 40, 0, 17, 99], np.int32)
    writer = JournalWriter(config(), tmp_path)
    writer.open()
    assert writer.append_arrival(1_767_225_600_123_456_789, 2, rx, 10, 10 + 60, rx_sizes, 1, 3) == 1  # 40+0+17+3
    assert writer.append_arrival(7, 0, rx, 0, 0, rx_sizes, 0, 1) == 2  # a tick: one chunk of no bytes
    writer.close()

    chunks = struct.pack("<3i", 40, 0, 17)
    first = struct.pack("<B3xiqii", 1, 2, 1_767_225_600_123_456_789, 3, 60) + chunks + bytes(range(10, 70))
    tick = struct.pack("<B3xiqii", 1, 0, 7, 1, 0) + struct.pack("<i", 0)
    assert segments(tmp_path)[0][1].read_bytes() == reference_record(1, first) + reference_record(2, tick)
