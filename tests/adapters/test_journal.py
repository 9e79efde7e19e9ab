"""adapters/journal.py on a real directory: records come back in seq order across segments; a torn tail (cut
header, cut body, bad checksum) is found, reported and cut off, never returned; corruption before the tail is an
error naming file and offset; fsync policies sync when they say; an unwritable directory is a JournalError."""
import os
import time

import msgspec
import pytest

from adapters.journal import (
    HEADER, JournalConfig, JournalCorrupt, JournalError, JournalReader, JournalWriter, segments,
)


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


BODIES = [b"first", b"", b"x" * 1000, bytes(range(256))]


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
    (lambda data: data[:-3], "a record body cut short"),
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
    data[HEADER.size + 5] ^= 0xFF
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
