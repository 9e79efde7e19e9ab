"""Replay: same file, same chunks, same batches, same clocks; a torn last record is counted."""
import os

import msgspec
import numpy as np
import pytest

from adapters.replay import RECORD, ReplayReader, ReplayReaderConfig, ReplayWriter, ReplayWriterConfig
from tests.adapters.adapter_testkit import Sink, frame, max_frame, split_frames, tag

BATCHES = [(100, [frame(0), frame(1) + frame(2), frame(3)]), (250, [frame(4)]), (400, [frame(5), max_frame(6)])]


def record(path, batches=BATCHES):
    """Record as the live engine does: each batch's chunks land in rx, then write_polled at the batch clock."""
    writer = ReplayWriter(msgspec.convert({"path": str(path)}, ReplayWriterConfig))
    with writer:
        rx, rx_sizes = np.zeros(4096, np.uint8), np.zeros(8, np.int32)
        for recv_ns, chunks in batches:
            offset = 16  # a batch need not start at 0
            for i, chunk in enumerate(chunks):
                rx[offset:offset + len(chunk)] = np.frombuffer(chunk, np.uint8)
                rx_sizes[2 + i] = len(chunk)
                offset += len(chunk)
            writer.write_polled(rx, 16, rx_sizes, 2, len(chunks), recv_ns)
    return path


def reader(path):
    r = ReplayReader(msgspec.convert({"path": str(path)}, ReplayReaderConfig))
    r.open()
    return r


def play(path, **sink_args):
    """Every poll of a whole replay: [(recv_ns, [chunks])]."""
    r, sink, polls = reader(path), Sink(**sink_args), []
    with r:
        while not r.at_end:
            before = len(sink.chunks)
            if sink.poll(r):
                polls.append((r.recv_ns, sink.chunks[before:]))
    return polls, r.stats


def test_replay_when_played_then_each_poll_is_one_recorded_batch_with_its_clock(tmp_path):
    polls, stats = play(record(tmp_path / "a.replay"))
    assert polls == BATCHES
    assert (stats.chunks, stats.truncated) == (6, 0)


def test_replay_when_played_twice_then_chunks_orders_and_clocks_are_identical(tmp_path):
    path = record(tmp_path / "a.replay")
    assert play(path) == play(path)


def test_replay_when_rx_is_short_then_a_batch_spans_polls_with_the_same_clock(tmp_path):
    polls, _ = play(record(tmp_path / "a.replay"), rx_bytes=1100, slots=2)
    assert [chunk for _, chunks in polls for chunk in chunks] == [c for _, cs in BATCHES for c in cs]
    assert [ns for ns, chunks in polls for _ in chunks] == [ns for ns, cs in BATCHES for _ in cs]


def test_replay_when_asked_then_next_recv_ns_tells_the_next_batch_clock(tmp_path):
    r, sink = reader(record(tmp_path / "a.replay")), Sink()
    with r:
        clocks = []
        while (next_ns := r.next_recv_ns) != -1:
            clocks.append(next_ns)
            sink.poll(r)
    assert clocks == [100, 250, 400] and r.at_end


LAST_RECORD = RECORD.size + len(max_frame(6))


@pytest.mark.parametrize("keep", [5, RECORD.size + 5, LAST_RECORD - 1], ids=["in_header", "in_body", "last_byte"])
def test_replay_when_the_last_record_is_torn_then_it_is_counted_not_raised(tmp_path, keep):
    path = record(tmp_path / "a.replay")
    os.truncate(path, os.path.getsize(path) - LAST_RECORD + keep)  # keep only `keep` bytes of the last record
    polls, stats = play(path)
    assert [tag(f) for _, chunks in polls for c in chunks for f in split_frames(c)] == [(0, s) for s in range(6)]
    assert stats.truncated == 1


def test_replay_when_a_record_can_never_fit_rx_then_it_is_skipped_and_counted(tmp_path):
    path = record(tmp_path / "a.replay", [(1, [max_frame(0)]), (2, [frame(1)])])
    polls, stats = play(path, rx_bytes=512)
    assert polls == [(2, [frame(1)])]
    assert (stats.oversize, stats.truncated) == (1, 0)


def test_replay_when_the_file_is_empty_then_it_is_at_end_and_nothing_is_counted(tmp_path):
    path = tmp_path / "empty.replay"
    path.write_bytes(b"")
    polls, stats = play(path)
    assert polls == [] and stats.truncated == 0


def test_replay_writer_when_send_is_used_then_the_chunk_is_stamped_with_now(tmp_path):
    path = tmp_path / "s.replay"
    with ReplayWriter(msgspec.convert({"path": str(path)}, ReplayWriterConfig)) as w:
        assert w.send(frame(9)) and w.flush()
    polls, _ = play(path)
    assert polls[0][1] == [frame(9)] and polls[0][0] > 1_600_000_000 * 10**9
