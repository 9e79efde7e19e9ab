"""kernels/codec.py against wire/: the compiled codec reads and writes what msgspec does, byte for byte.

Every property runs on the compiled kernel and on its Python source (`.py_func`, which calls compiled helpers).
The spec of decode_inbound is `reference_decode` below: the same walk in Python with msgspec decoding the bodies,
so "the kernel accepts exactly what msgspec accepts" is tested on valid, near-valid and random bytes.
"""
import math
import struct
from collections import Counter

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import arena as A
from kernels import codec
from kernels.arena import N_RINGS, RING_REPORTS, RING_SIGNALS
from kernels.dtypes import (
    C_FRAME_BAD_TYPE, C_FRAME_BAD_VERSION, C_FRAME_MALFORMED, C_FRAME_OVERSIZE, C_FRAME_TRUNCATED, C_FRAMES,
    C_MARKET_DATA, C_MARKET_DATA_INVALID, C_MARKET_DATA_UNKNOWN_INSTRUMENT, C_REPORT_RING_FULL, C_REPORTS,
    C_SIGNAL_RING_FULL, C_SIGNALS, COUNTER_NAMES, FRAME_HEADER_SIZE, INSTRUMENT_T, MAX_FRAME_BODY, MSG_EXECUTION_REPORT,
    MSG_MARKET_DATA, MSG_ORDER, MSG_SIGNAL, N_COUNTERS, ORDER_T, REPORT_T, SIGNAL_T, WIRE_VERSION,
)
from kernels.rings import HEAD, TAIL
from wire.frames import HEADER, decode_body, encode_frame, iter_frames, read_header
from wire.schema import ExecutionReport, MarketData, Order, Signal

RECV_NS = 1_700_000_000_123_456_789
TICKS = (0.01, 0.5, 1.0, 0.25)  # tick size of instruments 0..3
SENTINEL = 0xA5                 # ring bytes the decoder must not touch


CODEC_MODULES = ("arena", "codec", "rings")


def in_arena(kernel, arrays, *args):
    """Call `kernel(arena, layout, *args)` on an arena holding copies of `arrays` (region name -> array), then
    copy every region back into its array: the tests keep their own arrays, the kernel sees the engine's layout.
    Regions not given are empty (rows 0), so a kernel that touches one fails (bounds) instead of passing."""
    rows = {name: len(array) for name, array in arrays.items()}
    sizes = A.Sizes(rx_bytes=rows.get("rx", 0), rx_chunks=rows.get("rx_sizes", 0), tx_bytes=rows.get("tx", 0),
                    signal_ring=rows.get("signals", 0), order_ring=rows.get("orders", 0), reject_ring=0,
                    report_ring=rows.get("reports", 0), fill_ring=0, instruments=rows.get("instruments", 0),
                    strategies=0, accounts=0, order_table=0, signal_ids=0, subscriptions=0, sources=0, venue=0)
    layout, nbytes = A.plan(sizes)
    arena = np.zeros(nbytes, np.uint8)
    views = A.numpy_views(arena, layout)
    for name, array in arrays.items():
        getattr(views, name)[...] = array
    result = kernel(arena, layout, *args)
    for name, array in arrays.items():
        array[...] = getattr(views, name)
    return result


@pytest.fixture(scope="module", params=["compiled", "python"])
def engine(request):
    """The codec's kernels compiled, or every compiled function of its modules run as Python."""
    if request.param == "compiled":
        yield request.param
        return
    with pytest.MonkeyPatch.context() as patch:
        for name in CODEC_MODULES:
            module = getattr(__import__(f"kernels.{name}"), name)
            for attr, value in list(vars(module).items()):
                if callable(getattr(value, "py_func", None)):
                    patch.setattr(module, attr, getattr(value, "python", value.py_func))
        yield request.param


@pytest.fixture(scope="module")
def decode(engine):
    kernel = codec.decode_inbound  # the Python source while the engine fixture has it patched

    def run(rx, rx_sizes, n_chunks, recv_ns, signals, reports, cursors, instruments, counters):
        return in_arena(kernel, dict(rx=rx, rx_sizes=rx_sizes, signals=signals, reports=reports, cursors=cursors,
                                     instruments=instruments, counters=counters), n_chunks, recv_ns)
    return run


@pytest.fixture(scope="module")
def encode(engine):
    kernel = codec.encode_orders

    def run(orders, start, stop, instruments, tx, tx_len):
        scalars = np.zeros(A.N_SCALARS, np.int64)
        scalars[A.S_TX_LEN] = tx_len
        frames = in_arena(kernel, dict(orders=orders, instruments=instruments, tx=tx, scalars=scalars), start, stop)
        assert scalars[A.S_TX_LEN] == tx_len + frames * codec.ORDER_FRAME_SIZE
        return int(scalars[A.S_TX_LEN])
    return run


# ---------------------------------------------------------------------------------------------- engine state
class Inbound:
    """The buffers decode_inbound works on, rings starting at sequence `start` with `used` records queued."""

    def __init__(self, capacity=64, start=0, used=0):
        self.signals = np.frombuffer(bytes([SENTINEL]) * capacity * SIGNAL_T.itemsize, SIGNAL_T).copy()
        self.reports = np.frombuffer(bytes([SENTINEL]) * capacity * REPORT_T.itemsize, REPORT_T).copy()
        self.cursors = np.zeros((N_RINGS, 2), np.uint64)
        self.cursors[:, TAIL] = start
        self.cursors[:, HEAD] = start + used
        self.instruments = np.zeros(len(TICKS), INSTRUMENT_T)
        self.instruments["tick_size"] = TICKS
        self.instruments["ref_px_ticks"] = [1000, 2000, 3000, 4000]
        self.counters = np.zeros(N_COUNTERS, np.int64)

    def copy(self):
        other = Inbound.__new__(Inbound)
        other.__dict__ = {k: v.copy() for k, v in self.__dict__.items()}
        return other

    def run(self, decode, chunks, rx_sizes=None):
        rx = np.frombuffer(b"".join(chunks), np.uint8).copy()  # no slack: NUMBA_BOUNDSCHECK=1 catches a read past it
        before = rx.copy()
        sizes = np.array([len(c) for c in chunks] if rx_sizes is None else rx_sizes, np.int32)
        ok = decode(rx, sizes, len(sizes), RECV_NS, self.signals, self.reports, self.cursors, self.instruments,
                    self.counters)
        assert np.array_equal(rx, before)
        return ok

    def counts(self):
        return {COUNTER_NAMES[c]: int(n) for c, n in enumerate(self.counters) if n}

    def queued(self, ring):
        records = self.signals if ring == RING_SIGNALS else self.reports
        tail, head = (int(v) for v in self.cursors[ring, [TAIL, HEAD]])
        return [records[i % len(records)] for i in range(tail, head)]


def count_names(counts):
    return {COUNTER_NAMES[c]: n for c, n in counts.items() if n}


def same(a, b):
    """Equal values; floats bit for bit (so -0.0 keeps its sign), except that any NaN equals any NaN."""
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)
    return int(a) == int(b)


def assert_record_is(rec, msg):
    for name in msg.__struct_fields__:
        assert same(rec[name], getattr(msg, name)), (name, rec[name], getattr(msg, name))


# ---------------------------------------------------------------------------------------------- the spec
def reference_decode(state, chunks):
    """What decode_inbound must do, in Python on msgspec: returns (decoded, counters, signals, reports, instruments)."""
    counts = Counter()
    queued = {RING_SIGNALS: [], RING_REPORTS: []}
    room = {ring: len(state.signals) - int(state.cursors[ring, HEAD] - state.cursors[ring, TAIL])
            for ring in queued}
    instruments = state.instruments.copy()
    decoded = 0
    for chunk in chunks:
        pos = 0
        while pos < len(chunk):
            if len(chunk) - pos < FRAME_HEADER_SIZE:
                counts[C_FRAME_TRUNCATED] += 1
                break
            header = read_header(chunk, pos)
            if header.version != WIRE_VERSION or header.reserved != 0:
                counts[C_FRAME_BAD_VERSION] += 1
                break
            if header.length > MAX_FRAME_BODY:
                counts[C_FRAME_OVERSIZE] += 1
                break
            body, pos = pos + FRAME_HEADER_SIZE, pos + FRAME_HEADER_SIZE + header.length
            if pos > len(chunk):
                counts[C_FRAME_TRUNCATED] += 1
                break
            counts[C_FRAMES] += 1
            if header.msg_type not in (MSG_SIGNAL, MSG_MARKET_DATA, MSG_EXECUTION_REPORT):
                counts[C_FRAME_BAD_TYPE] += 1
                continue
            try:
                msg = decode_body(header.msg_type, chunk[body:pos])
            except msgspec.DecodeError:
                counts[C_FRAME_MALFORMED] += 1
                continue
            decoded += 1
            if header.msg_type == MSG_MARKET_DATA:
                counts[reference_market_data(instruments, msg)] += 1
                continue
            ring = RING_SIGNALS if header.msg_type == MSG_SIGNAL else RING_REPORTS
            if len(queued[ring]) == room[ring]:
                counts[C_SIGNAL_RING_FULL if ring == RING_SIGNALS else C_REPORT_RING_FULL] += 1
            else:
                queued[ring].append(msg)
                counts[C_SIGNALS if ring == RING_SIGNALS else C_REPORTS] += 1
    return decoded, counts, queued[RING_SIGNALS], queued[RING_REPORTS], instruments


def reference_market_data(instruments, md):
    if md.instrument >= len(instruments):
        return C_MARKET_DATA_UNKNOWN_INSTRUMENT
    ins = instruments[md.instrument]
    ticks = [p / float(ins["tick_size"]) for p in (md.bid, md.ask, md.last)]  # Python floats: inf, not a warning
    if not all(0 <= t <= 2**53 for t in ticks):
        return C_MARKET_DATA_INVALID
    bid, ask, last = (round(t) for t in ticks)
    ins["bid_ticks"], ins["ask_ticks"], ins["last_ticks"], ins["md_ts_ns"] = bid, ask, last, md.ts_ns
    ins["mark_ticks"] = (bid + ask) // 2 if bid > 0 and ask > 0 else last if last > 0 else ins["ref_px_ticks"]
    return C_MARKET_DATA


def check_against_reference(decode, state, chunks):
    """Decode `chunks` into `state` and hold every effect to the reference, including the bytes left alone."""
    expected = state.copy()
    decoded, counts, signals, reports, instruments = reference_decode(expected, chunks)
    heads = state.cursors[:, HEAD].copy()
    assert state.run(decode, chunks) == decoded
    assert state.counts() == count_names(counts)
    assert state.counters[C_FRAMES] == decoded + state.counters[C_FRAME_BAD_TYPE] + state.counters[C_FRAME_MALFORMED]
    assert state.instruments.tobytes() == instruments.tobytes()
    for ring, records, messages in ((RING_SIGNALS, state.signals, signals), (RING_REPORTS, state.reports, reports)):
        assert int(state.cursors[ring, HEAD] - heads[ring]) == len(messages)
        assert state.cursors[ring, TAIL] == expected.cursors[ring, TAIL]
        written = {int(i) % len(records) for i in range(int(heads[ring]), int(state.cursors[ring, HEAD]))}
        for i, msg in zip(range(int(heads[ring]), int(state.cursors[ring, HEAD])), messages):
            assert_record_is(records[i % len(records)], msg)
            if ring == RING_SIGNALS:
                assert records[i % len(records)]["recv_ns"] == RECV_NS
        untouched = [i for i in range(len(records)) if i not in written]
        before = expected.signals if ring == RING_SIGNALS else expected.reports
        assert records[untouched].tobytes() == before[untouched].tobytes()
    return counts


# ---------------------------------------------------------------------------------------------- strategies
def edges(lo, hi):
    return st.sampled_from(sorted({lo, hi, max(lo, min(hi, 0)), max(lo, min(hi, 1)), max(lo, min(hi, -1))})) \
        | st.integers(lo, hi)


u8, u32, u64, i64 = edges(0, 2**8 - 1), edges(0, 2**32 - 1), edges(0, 2**64 - 1), edges(-2**63, 2**63 - 1)
floats = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 2.0**64])
prices = st.sampled_from([0.0, 0.004, 0.005, 0.015, 100.01, 2.0**60]) | st.floats(0, 1e7) | floats
instrument_ids = st.integers(0, len(TICKS) + 1) | u32

signals = st.builds(Signal, source=u32, seq=u64, signal_id=u32, instrument=u32, kind=st.sampled_from([0, 1]),
                    value=floats, price=floats, ts_ns=i64, ttl_ns=i64)
market_data = st.builds(MarketData, instrument=instrument_ids, bid=prices, ask=prices, last=prices, ts_ns=i64)
reports = st.builds(ExecutionReport, order_id=u64, strategy=u32, deploy=u32, exec_type=u8, qty=i64,
                    price=floats, leaves=i64, fee=floats, ts_ns=i64, reason=u32)
messages = st.one_of(signals, market_data, reports)


def chunked(frames, cuts):
    """Frames grouped into chunks of whole frames, split after the frames whose index is in `cuts`."""
    chunks, chunk = [], b""
    for i, frame in enumerate(frames):
        chunk += frame
        if i in cuts:
            chunks.append(chunk)
            chunk = b""
    return chunks + ([chunk] if chunk else [])


# Another msgpack encoder: any valid width for each int, float32 when it is exact, an int for an integral float.
def int_encodings(v):
    out = []
    if 0 <= v <= 0x7F:
        out.append(bytes([v]))
    if -32 <= v < 0:
        out.append(struct.pack(">b", v))
    for tag, fmt in ((0xCC, ">B"), (0xCD, ">H"), (0xCE, ">I"), (0xCF, ">Q")):
        if 0 <= v < 2 ** (8 * struct.calcsize(fmt)):
            out.append(bytes([tag]) + struct.pack(fmt, v))
    for tag, fmt in ((0xD0, ">b"), (0xD1, ">h"), (0xD2, ">i"), (0xD3, ">q")):
        half = 2 ** (8 * struct.calcsize(fmt) - 1)
        if -half <= v < half:
            out.append(bytes([tag]) + struct.pack(fmt, v))
    return out


def float_encodings(x):
    out = [b"\xcb" + struct.pack(">d", x)]
    try:
        f32 = struct.pack(">f", x)
    except OverflowError:
        f32 = None
    if f32 is not None and same(struct.unpack(">f", f32)[0], x):
        out.append(b"\xca" + f32)
    if math.isfinite(x) and x == int(x) and math.copysign(1, x) > 0 and -2**63 <= int(x) < 2**64:
        out.extend(int_encodings(int(x)))  # -0.0 stays a float: as an int it would lose its sign
    return out


def array_encodings(n):
    return [bytes([0x90 + n]), b"\xdc" + struct.pack(">H", n), b"\xdd" + struct.pack(">I", n)]


@st.composite
def other_tokens(draw, msg):
    """`msg` as msgpack tokens (array header first) in widths another encoder might choose."""
    values = msgspec.structs.astuple(msg)
    tokens = [draw(st.sampled_from(array_encodings(len(values))))]
    for v in values:
        tokens.append(draw(st.sampled_from(float_encodings(v) if isinstance(v, float) else int_encodings(v))))
    return tokens


def header(length, msg_type, version=WIRE_VERSION, reserved=0):
    return HEADER.pack(length, version, msg_type, reserved)


junk_tokens = st.sampled_from([b"\xc0", b"\xc1", b"\xc2", b"\xc3", b"\xa1a", b"\x80", b"\x90", b"\x91\x01",
                               b"\xc4\x01\x00", b"\xd4\x00\x00", b"\xcb\x00", b"\xcf\xff", b"\xdc\x00", b""]) \
    | st.binary(max_size=4) \
    | st.integers(-2**63, 2**64 - 1).map(lambda v: int_encodings(v)[-1]) \
    | floats.map(lambda x: float_encodings(x)[-1])


@st.composite
def near_frames(draw):
    """A frame of a valid message in other widths, then perhaps mutated: tokens, count, length, type, version."""
    msg = draw(messages)
    tokens = draw(other_tokens(msg))
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(tokens)))
        op = draw(st.sampled_from(["replace", "delete", "insert", "count"]))
        if op == "count":
            tokens[0] = draw(st.sampled_from(array_encodings(draw(st.integers(0, 15)))))
        elif op == "insert" or i == len(tokens):
            tokens.insert(i, draw(junk_tokens))
        elif op == "delete":
            del tokens[i]
        else:
            tokens[i] = draw(junk_tokens)
    body = b"".join(tokens)
    if draw(st.integers(0, 9)) == 0:
        body = body[:draw(st.integers(0, len(body)))]
    length, msg_type, version, reserved = len(body), msg.msg_type, WIRE_VERSION, 0
    fault = draw(st.integers(0, 29))
    if fault == 0:
        length = draw(st.integers(0, 2**32 - 1))
    elif fault == 1:
        msg_type = draw(st.integers(0, 255))
    elif fault == 2:
        version = draw(st.integers(0, 255))
    elif fault == 3:
        reserved = draw(st.integers(0, 2**16 - 1))
    elif fault == 4:
        length = draw(st.integers(max(0, len(body) - 3), len(body) + 3))
    return header(length, msg_type, version, reserved) + body


# ---------------------------------------------------------------------------------------------- properties
@settings(deadline=None)
@given(st.lists(messages, max_size=24), st.sets(st.integers(0, 23)), st.integers(0, 200))
def test_decode_when_msgspec_frames_then_same_values_in_rings_and_table(decode, msgs, cuts, start):
    state = Inbound(capacity=32, start=start)
    chunks = chunked([encode_frame(m) for m in msgs], cuts)
    counts = check_against_reference(decode, state, chunks)
    assert counts[C_FRAMES] == len(msgs)
    assert counts[C_SIGNALS] == sum(isinstance(m, Signal) for m in msgs)
    assert counts[C_REPORTS] == sum(isinstance(m, ExecutionReport) for m in msgs)


@settings(deadline=None)
@given(st.data())
def test_decode_when_other_encoder_widths_then_same_values(decode, data):
    msgs = data.draw(st.lists(messages, min_size=1, max_size=12))
    frames = []
    for msg in msgs:
        body = b"".join(data.draw(other_tokens(msg)))
        frames.append(header(len(body), msg.msg_type) + body)
    chunks = chunked(frames, data.draw(st.sets(st.integers(0, 11))))
    counts = check_against_reference(decode, Inbound(), chunks)
    assert counts[C_FRAMES] == len(msgs) and not counts[C_FRAME_MALFORMED]


@settings(deadline=None, max_examples=300)
@given(st.lists(near_frames(), max_size=10), st.sets(st.integers(0, 9)), st.integers(0, 8), st.integers(0, 2**40))
def test_decode_when_near_valid_frames_then_accepts_exactly_what_msgspec_accepts(decode, frames, cuts, used, start):
    check_against_reference(decode, Inbound(capacity=8, start=start, used=used), chunked(frames, cuts))


@settings(deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_decode_when_random_bytes_then_never_raises_and_every_byte_is_accounted(decode, chunks):
    check_against_reference(decode, Inbound(capacity=8), chunks)


# ---------------------------------------------------------------------------------------------- bad input
SIGNAL = Signal(source=7, seq=1, signal_id=3, instrument=2, kind=0, value=0.5, price=101.25,
                     ts_ns=1_700_000_000_000_000_000, ttl_ns=0)
REPORT = ExecutionReport(order_id=2**40 + 5, strategy=1, deploy=2, exec_type=3, qty=100, price=101.25,
                              leaves=0, fee=0.12, ts_ns=1_700_000_000_000_000_003, reason=0)
GOOD = encode_frame(SIGNAL)


def signal_with(**fields):
    return encode_frame(msgspec.structs.replace(SIGNAL, **fields))


def body_frame(values, msg_type=MSG_SIGNAL):
    body = msgspec.msgpack.encode(values)
    return header(len(body), msg_type) + body


def signal_values(**fields):
    return list(msgspec.structs.astuple(msgspec.structs.replace(SIGNAL, **fields)))


@pytest.mark.parametrize("bad, counter", [
    (GOOD[:7], "frame_truncated"),
    (GOOD[:-1], "frame_truncated"),
    (header(len(GOOD) - 8, MSG_SIGNAL, version=0) + GOOD[8:] + GOOD, "frame_bad_version"),
    (header(len(GOOD) - 8, MSG_SIGNAL, reserved=1) + GOOD[8:] + GOOD, "frame_bad_version"),
    (header(MAX_FRAME_BODY + 1, MSG_SIGNAL) + GOOD[8:] + GOOD, "frame_oversize"),
], ids=["short_header", "short_body", "version", "reserved", "oversize"])
def test_decode_when_bad_header_then_counted_and_rest_of_chunk_dropped(decode, bad, counter):
    state = Inbound()
    assert state.run(decode, [GOOD + bad, GOOD]) == 2
    assert state.counts() == {"frames": 2, "signals": 2, counter: 1}


@pytest.mark.parametrize("frame", [
    header(len(GOOD) - 8, MSG_ORDER) + GOOD[8:],
    header(len(GOOD) - 8, 0) + GOOD[8:],
    header(len(GOOD) - 8, 99) + GOOD[8:],
], ids=["order_inbound", "zero", "unknown"])
def test_decode_when_bad_type_then_counted_and_next_frame_decoded(decode, frame):
    state = Inbound()
    assert state.run(decode, [frame + GOOD]) == 1
    assert state.counts() == {"frames": 2, "frame_bad_type": 1, "signals": 1}


@pytest.mark.parametrize("frame", [
    body_frame(signal_values()[:-1]),
    body_frame(signal_values() + [0]),
    body_frame(signal_values(source="7")),
    body_frame(signal_values(source=None)),
    body_frame(signal_values(seq=1.0)),
    body_frame(signal_values(value="0.5")),
    signal_with(source=-1),
    signal_with(source=2**32),
    signal_with(instrument=-1),
    signal_with(kind=2),
    signal_with(ts_ns=2**63),
    body_frame({"source": 7}),
    header(len(GOOD) - 7, MSG_SIGNAL) + GOOD[8:] + b"\x00",
    header(len(GOOD) - 9, MSG_SIGNAL) + GOOD[8:-1],
    encode_frame(REPORT)[:4] + bytes([WIRE_VERSION, MSG_SIGNAL, 0, 0]) + encode_frame(REPORT)[8:],
], ids=["8_fields", "10_fields", "str_for_int", "nil_for_int", "float_for_int", "str_for_float", "negative_source",
        "u32_overflow", "negative_instrument", "kind_2", "i64_overflow", "map", "trailing_byte", "cut_in_body",
        "report_as_signal"])
def test_decode_when_body_is_not_a_signal_then_malformed_and_next_frame_decoded(decode, frame):
    state = Inbound()
    assert state.run(decode, [frame + GOOD]) == 1
    assert state.counts() == {"frames": 2, "frame_malformed": 1, "signals": 1}
    assert_record_is(state.queued(RING_SIGNALS)[0], SIGNAL)


@pytest.mark.parametrize("array", [0, 1, 2], ids=["fixarray", "array16", "array32"])
@pytest.mark.parametrize("width", [0, -1], ids=["narrowest", "widest"])
def test_decode_when_body_cut_anywhere_then_malformed_and_nothing_read_past_it(decode, array, width):
    """The cut body ends rx, so a read past it fails loudly under NUMBA_BOUNDSCHECK=1 (as CI runs kernels)."""
    values = msgspec.structs.astuple(SIGNAL)
    body = array_encodings(len(values))[array] + b"".join(
        (float_encodings(v)[0] if isinstance(v, float) else int_encodings(v)[width]) for v in values)
    for cut in range(len(body)):
        state = Inbound()
        assert state.run(decode, [GOOD, header(cut, MSG_SIGNAL) + body[:cut]]) == 1
        assert state.counts() == {"frames": 2, "frame_malformed": 1, "signals": 1}


def test_decode_when_values_at_the_edges_of_their_dtypes_then_kept_exactly(decode):
    edge = Signal(source=2**32 - 1, seq=2**64 - 1, signal_id=0, instrument=2**32 - 1, kind=1, value=-0.0,
                       price=math.nan, ts_ns=-2**63, ttl_ns=2**63 - 1)
    state = Inbound()
    assert state.run(decode, [encode_frame(edge)]) == 1
    assert_record_is(state.queued(RING_SIGNALS)[0], edge)


def test_decode_when_nan_or_negative_value_then_decoded_for_risk_to_reject(decode):
    state = Inbound()
    assert state.run(decode, [signal_with(value=math.nan, price=-1.0, ttl_ns=-5, seq=0)]) == 1
    rec = state.queued(RING_SIGNALS)[0]
    assert math.isnan(rec["value"]) and rec["price"] == -1.0 and rec["ttl_ns"] == -5 and rec["seq"] == 0


@pytest.mark.parametrize("ring, msg, full, counted", [
    (RING_SIGNALS, SIGNAL, "signal_ring_full", "signals"),
    (RING_REPORTS, REPORT, "report_ring_full", "reports"),
])
def test_decode_when_ring_full_then_dropped_counted_and_nothing_overwritten(decode, ring, msg, full, counted):
    state = Inbound(capacity=4, start=2**40 - 2, used=2)
    frame = encode_frame(msg)
    assert state.run(decode, [frame * 3, frame]) == 4
    assert state.counts() == {"frames": 4, counted: 2, full: 2}
    assert state.cursors[ring, HEAD] - state.cursors[ring, TAIL] == 4
    records = state.signals if ring == RING_SIGNALS else state.reports
    sentinel = {(2**40 - 2) % 4, (2**40 - 1) % 4}  # the two records already queued
    assert all(records[i].tobytes() == bytes([SENTINEL]) * records.itemsize for i in sentinel)


def test_decode_when_rx_sizes_claim_more_than_rx_then_clamped_to_rx(decode):
    state = Inbound()
    assert state.run(decode, [GOOD], rx_sizes=[len(GOOD) + 20, 50, -3]) == 1
    assert state.counts() == {"frames": 1, "signals": 1}


def test_decode_when_empty_then_nothing(decode):
    state = Inbound()
    assert state.run(decode, []) == 0
    assert state.run(decode, [b"", b""]) == 0
    assert state.counts() == {}


# ---------------------------------------------------------------------------------------------- market data
def md(instrument=0, bid=0.0, ask=0.0, last=0.0, ts_ns=5):
    return encode_frame(MarketData(instrument=instrument, bid=bid, ask=ask, last=last, ts_ns=ts_ns))


@pytest.mark.parametrize("bid, ask, last, mark", [
    (100.01, 100.04, 0.0, 10002),  # mid of bid and ask, floored: (10001 + 10004) // 2
    (100.01, 0.0, 99.5, 9950),     # one side unknown: last
    (0.0, 0.0, 0.0, 1000),         # nothing known: the configured reference
])
def test_decode_when_market_data_then_ticks_and_mark_set(decode, bid, ask, last, mark):
    state = Inbound()
    assert state.run(decode, [md(0, bid, ask, last, ts_ns=77)]) == 1
    ins = state.instruments[0]
    assert (ins["bid_ticks"], ins["ask_ticks"], ins["last_ticks"]) == tuple(round(p / 0.01) for p in (bid, ask, last))
    assert (ins["mark_ticks"], ins["md_ts_ns"]) == (mark, 77)
    assert state.counts() == {"frames": 1, "market_data": 1}


@pytest.mark.parametrize("prices", [(math.nan, 1.0, 1.0), (1.0, math.inf, 1.0), (1.0, 1.0, -0.01), (1e300, 1, 1)])
def test_decode_when_market_data_invalid_then_counted_and_ignored(decode, prices):
    state = Inbound()
    before = state.instruments.copy()
    assert state.run(decode, [md(1, *prices)]) == 1
    assert state.counts() == {"frames": 1, "market_data_invalid": 1}
    assert state.instruments.tobytes() == before.tobytes()


def test_decode_when_market_data_for_unknown_instrument_then_counted(decode):
    state = Inbound()
    assert state.run(decode, [md(len(TICKS), 1.0, 2.0, 1.5), md(2**32 - 1, 1.0, 2.0, 1.5)]) == 2
    assert state.counts() == {"frames": 2, "market_data_unknown_instrument": 2}


# ---------------------------------------------------------------------------------------------- orders out
orders = st.fixed_dictionaries({
    "order_id": u64, "strategy": u32, "deploy": u32, "account": u32, "instrument": st.integers(0, len(TICKS) - 1),
    "side": st.sampled_from([1, -1]), "order_type": st.sampled_from([0, 1, 2]), "qty": i64, "px_ticks": i64,
    "ts_ns": i64, "signal_source": u32, "signal_seq": u64, "signal_ts_ns": i64,
})


def order_ring(records, start, capacity=8):
    ring = np.zeros(capacity, ORDER_T)
    for i, fields in enumerate(records):
        for name, v in fields.items():
            ring[(start + i) % capacity][name] = v
    return ring


@settings(deadline=None)
@given(st.lists(orders, max_size=8), st.integers(0, 2**40))
def test_encode_orders_when_any_orders_then_msgspec_decodes_same_values(encode, records, start):
    instruments = Inbound().instruments
    ring = order_ring(records, start)
    tx = np.zeros(8 * codec.ORDER_FRAME_SIZE + 5, np.uint8)
    end = encode(ring, start, start + len(records), instruments, tx, 5)
    assert end == 5 + len(records) * codec.ORDER_FRAME_SIZE
    decoded = list(iter_frames(tx[5:end].tobytes()))
    assert [t for t, _ in decoded] == [MSG_ORDER] * len(records)
    for fields, (_, order) in zip(records, decoded):
        for name, v in fields.items():
            assert name == "px_ticks" or getattr(order, name) == v, name
        assert same(order.price, np.int64(fields["px_ticks"]) * np.float64(TICKS[fields["instrument"]]))


def test_encode_orders_when_frame_size_then_matches_msgspec_layout_of_full_width_ints(encode):
    ring = order_ring([dict(order_id=1, side=1, qty=3, px_ticks=10001, instrument=0)], 0)
    tx = np.zeros(codec.ORDER_FRAME_SIZE, np.uint8)
    assert encode(ring, 0, 1, Inbound().instruments, tx, 0) == codec.ORDER_FRAME_SIZE
    assert read_header(tx) == (codec.ORDER_BODY_SIZE, WIRE_VERSION, MSG_ORDER, 0)
    assert tx[8] == 0x90 + codec.ORDER_FIELDS == 0x90 + len(Order.__struct_fields__)
    (_, order), = iter_frames(tx.tobytes())
    assert (order.order_id, order.side, order.qty, order.price) == (1, 1, 3, 10001 * 0.01)


def test_encode_orders_when_tx_full_then_stops_at_a_whole_frame(encode):
    ring = order_ring([dict(order_id=i + 1, side=1, qty=1) for i in range(5)], 0)
    tx = np.zeros(3 * codec.ORDER_FRAME_SIZE - 1, np.uint8)
    end = encode(ring, 0, 5, Inbound().instruments, tx, 0)
    assert end == 2 * codec.ORDER_FRAME_SIZE
    assert [o.order_id for _, o in iter_frames(tx[:end].tobytes())] == [1, 2]
    assert encode(ring, 2, 5, Inbound().instruments, tx, end) == end  # still full: nothing more


def test_encode_orders_when_unknown_instrument_then_nan_price(encode):
    ring = order_ring([dict(order_id=1, side=1, qty=1, px_ticks=5, instrument=len(TICKS))], 0)
    tx = np.zeros(codec.ORDER_FRAME_SIZE, np.uint8)
    encode(ring, 0, 1, Inbound().instruments, tx, 0)
    (_, order), = iter_frames(tx.tobytes())
    assert math.isnan(order.price)


def test_encode_orders_when_ring_empty_then_nothing_written(encode):
    tx = np.zeros(codec.ORDER_FRAME_SIZE, np.uint8)
    assert encode(np.zeros(0, ORDER_T), 0, 3, Inbound().instruments, tx, 0) == 0
    assert not tx.any()


def test_decode_when_order_frame_inbound_then_bad_type(decode, encode):
    ring = order_ring([dict(order_id=1, side=1, qty=1)], 0)
    tx = np.zeros(codec.ORDER_FRAME_SIZE, np.uint8)
    encode(ring, 0, 1, Inbound().instruments, tx, 0)
    state = Inbound()
    assert state.run(decode, [tx.tobytes()]) == 0
    assert state.counts() == {"frames": 1, "frame_bad_type": 1}


def test_field_counts_when_compared_then_codec_matches_wire():
    assert codec.SIGNAL_FIELDS == len(Signal.__struct_fields__)
    assert codec.MARKET_DATA_FIELDS == len(MarketData.__struct_fields__)
    assert codec.REPORT_FIELDS == len(ExecutionReport.__struct_fields__)
    assert codec.ORDER_FIELDS == len(Order.__struct_fields__)
