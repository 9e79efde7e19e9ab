"""kernels/scan.py against wire/frames.py: the compiled stream scanner finds the same frame boundaries and gives
the same verdict as the Python walk, in the one order of checks (version, then length, then a whole body).

Every property runs on the compiled kernel and on its Python source (with the codec's compiled helpers swapped
for their Python source too), over random bytes, runs of valid frames cut anywhere, and runs with one bad header
(another version, reserved bits set, an oversize length, both at once) somewhere in them.
"""
import importlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import scan
from kernels.codec import HEADER_OK
from kernels.dtypes import C_FRAME_BAD_VERSION, C_FRAME_OVERSIZE, FRAME_HEADER_SIZE, MAX_FRAME_BODY, WIRE_VERSION
from wire import frames

# wire/frames.py's verdict -> the scanner's (the decoder's counter for the same fault)
VERDICTS = {frames.FRAME_OK: HEADER_OK, frames.FRAME_BAD_VERSION: C_FRAME_BAD_VERSION,
            frames.FRAME_OVERSIZE: C_FRAME_OVERSIZE}
HEADER = struct.Struct("<IBBH")
COMPILED = scan.scan_frames  # taken at import: the Python engine's fixture swaps the module's name


@pytest.fixture(scope="module", params=["compiled", "python"])
def scan_frames(request):
    """scan.scan_frames compiled, or as Python with the codec's helpers (read_header) as Python too."""
    if request.param == "compiled":
        yield scan.scan_frames
        return
    with pytest.MonkeyPatch.context() as patch:
        for module in (importlib.import_module(f"kernels.{name}") for name in ("codec", "scan")):
            for name, value in list(vars(module).items()):
                if callable(getattr(value, "py_func", None)):
                    patch.setattr(module, name, value.py_func)
        yield scan.scan_frames


def check(scan_frames, data, start=0, end=None):
    buf = np.frombuffer(bytearray(data), np.uint8)
    end = len(buf) if end is None else end
    expected_end, verdict = frames.scan_frames(memoryview(buf), start, end)
    assert scan_frames(buf, start, end) == (expected_end, VERDICTS[verdict])
    return expected_end, verdict


def good_frame(body_len, msg_type=1):
    return HEADER.pack(body_len, WIRE_VERSION, msg_type, 0) + bytes((body_len + k) & 0xFF for k in range(body_len))


bodies = st.integers(0, MAX_FRAME_BODY)
bad_headers = st.one_of(
    st.builds(lambda n, v: HEADER.pack(n, v, 1, 0), bodies, st.integers(0, 255).filter(lambda v: v != WIRE_VERSION)),
    st.builds(lambda n, r: HEADER.pack(n, WIRE_VERSION, 1, r), bodies, st.integers(1, 0xFFFF)),
    st.builds(lambda n: HEADER.pack(n, WIRE_VERSION, 1, 0), st.integers(MAX_FRAME_BODY + 1, 2**32 - 1)),
    st.builds(lambda n, v: HEADER.pack(n, v, 1, 0), st.integers(MAX_FRAME_BODY + 1, 2**32 - 1),
              st.integers(0, 255).filter(lambda v: v != WIRE_VERSION)),  # both wrong: version is judged first
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), cut=st.data())
def test_scan_when_random_bytes_then_same_boundary_and_verdict_as_wire_frames(scan_frames, data, cut):
    start = cut.draw(st.integers(0, len(data)))
    end = cut.draw(st.integers(start, len(data)))
    check(scan_frames, data, start, end)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), max_size=20), cut=st.data())
def test_scan_when_valid_frames_cut_anywhere_then_the_end_of_the_last_whole_frame(scan_frames, sizes, cut):
    run = b"".join(good_frame(n) for n in sizes)
    end = cut.draw(st.integers(0, len(run)))
    whole_end, verdict = check(scan_frames, run, 0, end)
    assert verdict == frames.FRAME_OK
    boundaries = np.cumsum([0] + [FRAME_HEADER_SIZE + n for n in sizes])
    assert whole_end == boundaries[boundaries <= end].max()


@settings(max_examples=200, deadline=None)
@given(before=st.lists(st.integers(0, 200), max_size=8), bad=bad_headers, after=st.binary(max_size=600),
       tail=st.booleans())
def test_scan_when_a_bad_header_follows_whole_frames_then_it_is_named_where_it_starts(scan_frames, before, bad,
                                                                                     after, tail):
    head = b"".join(good_frame(n) for n in before)
    run = head + bad + after
    end = len(run) if tail else len(head) + FRAME_HEADER_SIZE  # the header alone is enough to judge it
    whole_end, verdict = check(scan_frames, run, 0, end)
    assert whole_end == len(head)
    _, version, _, reserved = HEADER.unpack(bad)
    assert verdict == (frames.FRAME_BAD_VERSION if (version, reserved) != (WIRE_VERSION, 0) else frames.FRAME_OVERSIZE)


def test_scan_when_the_range_passes_the_buffer_then_it_is_clipped_to_it(scan_frames):
    run = np.frombuffer(bytearray(good_frame(10) + good_frame(20)), np.uint8)
    assert scan_frames(run, 0, len(run) + 100) == (len(run), HEADER_OK)
    assert scan_frames(run, 5, 5) == (5, HEADER_OK)


def test_scan_when_given_another_dtype_then_type_error_not_a_recompile():
    with pytest.raises(TypeError):
        COMPILED(np.zeros(16, np.int8), 0, 16)
