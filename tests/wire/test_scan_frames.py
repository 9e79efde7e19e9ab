"""Frame boundaries: whole frames, a frame cut anywhere, and headers that cannot be trusted."""
import pytest

from kernels.dtypes import FRAME_HEADER_SIZE, MAX_FRAME_BODY, MSG_SIGNAL, WIRE_VERSION
from wire.frames import (
    FRAME_BAD_VERSION, FRAME_OK, FRAME_OVERSIZE, HEADER, MAX_FRAME_SIZE, frame, scan_frames, whole_frames_end,
)

FRAMES = [frame(MSG_SIGNAL, b""), frame(MSG_SIGNAL, b"abc"),
          frame(MSG_SIGNAL, bytes(MAX_FRAME_BODY))]
STREAM = b"".join(FRAMES)
ENDS = [0, 8, 8 + 11, len(STREAM)]  # where each frame ends


def test_scan_frames_when_cut_at_every_byte_then_it_returns_the_last_whole_frame_end():
    for cut in range(len(STREAM) + 1):
        assert scan_frames(STREAM, 0, cut) == (max(e for e in ENDS if e <= cut), FRAME_OK)


def test_scan_frames_when_given_a_window_then_it_starts_at_start():
    buf = b"junk" + STREAM
    assert scan_frames(buf, 4, len(buf)) == (len(buf), FRAME_OK)
    assert whole_frames_end(buf, 4, 4 + 10) == 4 + 8
    assert MAX_FRAME_SIZE == FRAME_HEADER_SIZE + MAX_FRAME_BODY == len(FRAMES[2])


@pytest.mark.parametrize("header, status", [
    (HEADER.pack(MAX_FRAME_BODY + 1, WIRE_VERSION, MSG_SIGNAL, 0), FRAME_OVERSIZE),
    (HEADER.pack(3, WIRE_VERSION + 1, MSG_SIGNAL, 0), FRAME_BAD_VERSION),
    (HEADER.pack(3, WIRE_VERSION, MSG_SIGNAL, 1), FRAME_BAD_VERSION),  # reserved bits: an extension we do not know
    (HEADER.pack(MAX_FRAME_BODY + 1, WIRE_VERSION + 1, MSG_SIGNAL, 0), FRAME_BAD_VERSION),  # the version first
], ids=["oversize", "version", "reserved", "version_before_length"])
def test_scan_frames_when_a_header_is_untrusted_then_it_stops_there_before_its_body_arrives(header, status):
    buf = STREAM + header  # no body bytes yet
    assert scan_frames(buf, 0, len(buf)) == (len(STREAM), status)
    assert scan_frames(buf, 0, len(buf) - 1) == (len(STREAM), FRAME_OK)  # 7 header bytes: not judged yet


def test_scan_frames_when_given_a_numpy_or_memoryview_buffer_then_it_reads_it_in_place():
    np = pytest.importorskip("numpy")
    rx = np.frombuffer(STREAM, np.uint8).copy()
    assert scan_frames(rx, 0, len(rx)) == scan_frames(memoryview(rx), 0, len(rx)) == (len(STREAM), FRAME_OK)
