"""wire/: the schema as Structs, frames in Python, and where whole frames end in a stream."""
import math
import pathlib
import re
import struct

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.dtypes import (
    FRAME_HEADER_SIZE, MAX_FRAME_BODY, MSG_CANCEL, MSG_EXECUTION_REPORT, MSG_MARKET_DATA, MSG_ORDER, MSG_SIGNAL,
    MSG_STATUS_REQUEST, WIRE_VERSION,
)
from wire.frames import HEADER, FrameError, decode_body, encode_frame, iter_frames, read_header, whole_frames_end
from wire.schema import MESSAGE_TYPES, ExecutionReport, MarketData, Order, Signal

SIGNAL = Signal(source=7, seq=1, signal_id=3, instrument=2, kind=0, value=0.5, price=101.25,
                     ts_ns=1_700_000_000_000_000_000, ttl_ns=0)
MARKET_DATA = MarketData(instrument=2, bid=101.0, ask=101.5, last=0.0, ts_ns=1_700_000_000_000_000_001)
ORDER = Order(order_id=2**40 + 5, strategy=1, deploy=2, account=3, instrument=2, side=-1, order_type=0,
                   qty=100, price=101.25, ts_ns=1_700_000_000_000_000_002, signal_source=7, signal_seq=1,
                   signal_ts_ns=1_700_000_000_000_000_000)
REPORT = ExecutionReport(order_id=2**40 + 5, strategy=1, deploy=2, exec_type=3, qty=100, price=101.25,
                              leaves=0, fee=0.12, ts_ns=1_700_000_000_000_000_003, reason=0)
ALL = (SIGNAL, MARKET_DATA, ORDER, REPORT)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-2**63, 2**63 - 1)
floats = st.floats(allow_nan=False)
signals = st.builds(Signal, source=u32, seq=u64, signal_id=u32, instrument=u32, kind=st.sampled_from([0, 1]),
                    value=floats, price=floats, ts_ns=i64, ttl_ns=i64)
frames = st.lists(st.sampled_from(ALL) | signals, max_size=8).map(lambda msgs: b"".join(map(encode_frame, msgs)))


@pytest.mark.parametrize("msg", ALL, ids=lambda m: type(m).__name__)
def test_struct_when_encoded_then_decodes_equal(msg):
    body = msgspec.msgpack.encode(msg)
    assert decode_body(msg.msg_type, body) == msg
    assert msgspec.msgpack.decode(body) == list(msgspec.structs.astuple(msg))  # an array, fields in order


@given(signals)
def test_signal_when_any_valid_values_then_round_trips(signal):
    assert list(iter_frames(encode_frame(signal))) == [(MSG_SIGNAL, signal)]


def test_signal_when_nan_then_round_trips_as_nan():
    (_, back), = iter_frames(encode_frame(msgspec.structs.replace(SIGNAL, value=math.nan)))
    assert math.isnan(back.value)


def test_encode_frame_when_signal_then_header_gives_length_version_type():
    frame = encode_frame(SIGNAL)
    header = read_header(frame)
    assert header == (len(frame) - FRAME_HEADER_SIZE, WIRE_VERSION, MSG_SIGNAL, 0)
    assert frame[:4] == struct.pack("<I", header.length)


def test_message_types_when_listed_then_each_struct_names_its_type():
    assert {t: cls.msg_type for t, cls in MESSAGE_TYPES.items()} == {
        MSG_SIGNAL: MSG_SIGNAL, MSG_MARKET_DATA: MSG_MARKET_DATA, MSG_ORDER: MSG_ORDER,
        MSG_EXECUTION_REPORT: MSG_EXECUTION_REPORT, MSG_CANCEL: MSG_CANCEL, MSG_STATUS_REQUEST: MSG_STATUS_REQUEST}


@pytest.mark.parametrize("body, where", [
    (msgspec.msgpack.encode([7, 1, 3, 2, 0, 0.5, 1.0, 0]), "at least length 9"),
    (msgspec.msgpack.encode([7, 1, 3, 2, 0, 0.5, 1.0, 0, 0, 99]), "at most length 9"),
    (msgspec.msgpack.encode([-7, 1, 3, 2, 0, 0.5, 1.0, 0, 0]), "$[0]"),
    (msgspec.msgpack.encode([2**32, 1, 3, 2, 0, 0.5, 1.0, 0, 0]), "$[0]"),
    (msgspec.msgpack.encode([7, 1, 3, 2, 2, 0.5, 1.0, 0, 0]), "$[4]"),
    (msgspec.msgpack.encode([7, 1.0, 3, 2, 0, 0.5, 1.0, 0, 0]), "$[1]"),
    (msgspec.msgpack.encode([7, 1, "3", 2, 0, 0.5, 1.0, 0, 0]), "$[2]"),
    (msgspec.msgpack.encode({"source": 7}), "array"),
])
def test_decode_body_when_not_a_signal_then_error_names_the_spot(body, where):
    with pytest.raises(msgspec.DecodeError, match=where.replace("$", r"\$").replace("[", r"\[")):
        decode_body(MSG_SIGNAL, body)


def test_decode_body_when_float_field_sent_as_int_then_accepted():
    body = msgspec.msgpack.encode([7, 1, 3, 2, 1, -5, 100, 0, 0])
    assert decode_body(MSG_SIGNAL, body).value == -5.0


def test_iter_frames_when_several_frames_then_yields_each_in_order():
    buf = b"".join(map(encode_frame, ALL))
    assert list(iter_frames(buf)) == [(m.msg_type, m) for m in ALL]
    assert list(iter_frames(bytearray(buf))) == [(m.msg_type, m) for m in ALL]


def _frame(body, msg_type=MSG_SIGNAL, version=WIRE_VERSION, reserved=0, length=None):
    return HEADER.pack(len(body) if length is None else length, version, msg_type, reserved) + body


@pytest.mark.parametrize("tail, what", [
    (encode_frame(SIGNAL)[:5], "truncated: 5 bytes left"),
    (encode_frame(SIGNAL)[:-1], "truncated: body of"),
    (_frame(b"\x90", version=2), "version 2"),
    (_frame(b"\x90", reserved=1), "reserved 1"),
    (_frame(b"", length=MAX_FRAME_BODY + 1), "MAX_FRAME_BODY"),
    (_frame(b"\x90", msg_type=9), "unknown message type 9"),
    (_frame(msgspec.msgpack.encode([1, 2])), "signal: Expected `array` of at least length 9"),
], ids=["short_header", "short_body", "version", "reserved", "oversize", "type", "body"])
def test_iter_frames_when_bad_frame_then_frame_error_names_offset_and_fault(tail, what):
    good = encode_frame(MARKET_DATA)
    frames = iter_frames(good + tail)
    assert next(frames) == (MSG_MARKET_DATA, MARKET_DATA)
    with pytest.raises(FrameError, match=f"bad frame at byte {len(good)}: .*{re.escape(what)}") as e:
        next(frames)
    assert e.value.offset == len(good)


@settings(max_examples=50)
@given(frames, st.data())
def test_whole_frames_end_when_buffer_cut_anywhere_then_ends_at_last_whole_frame(buf, data):
    ends = [0]
    for msg_type, msg in iter_frames(buf):
        ends.append(ends[-1] + len(encode_frame(msg)))
    cut = data.draw(st.integers(0, len(buf)))
    assert whole_frames_end(buf, 0, cut) == max(e for e in ends if e <= cut)


def test_docs_signal_example_when_encoded_then_matches_the_annotated_hex_dump():
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "wire.md").read_text()
    dump = doc.split("## Example: one Signal frame")[1].split("```")[1]
    hex_bytes = "".join(re.match(r"((?:[0-9a-f]{2} )*)", line + " ").group(1) for line in dump.splitlines())
    example = Signal(source=7, seq=42, signal_id=3, instrument=2, kind=0, value=-0.5, price=101.25,
                          ts_ns=1700000000000000000, ttl_ns=250000000)
    assert bytes.fromhex(hex_bytes) == encode_frame(example)
