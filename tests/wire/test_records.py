"""wire/records.py: frames as numpy records decode as the wire Structs; the engine's order frames read as records."""
import numpy as np

from kernels import codec
from kernels.dtypes import MSG_MARKET_DATA, MSG_SIGNAL, SIGNAL_TARGET
from wire.frames import iter_frames
from wire.records import MARKET_DATA_FRAME_T, ORDER_FRAME_SIZE, SIGNAL_FRAME_T, order_view, records
from wire.schema import MarketData, Signal


def test_records_when_filled_then_decode_as_the_wire_structs():
    sig = records(MSG_SIGNAL, 1)
    expected = Signal(source=2**32 - 1, seq=2**64 - 1, signal_id=5, instrument=2**31, kind=SIGNAL_TARGET,
                      value=-0.25, price=101.5, ts_ns=-5, ttl_ns=2**63 - 1)
    for key in Signal.__struct_fields__:
        sig[key] = getattr(expected, key)
    assert list(iter_frames(sig.tobytes())) == [(MSG_SIGNAL, expected)]
    md = records(MSG_MARKET_DATA, 1)
    expected_md = MarketData(instrument=3, bid=99.75, ask=100.25, last=0.0, ts_ns=1_700_000_000_000_000_000)
    for key in MarketData.__struct_fields__:
        md[key] = getattr(expected_md, key)
    assert list(iter_frames(md.tobytes())) == [(MSG_MARKET_DATA, expected_md)]
    assert (SIGNAL_FRAME_T.itemsize, MARKET_DATA_FRAME_T.itemsize) == (70, 50)


def test_order_records_when_compared_with_the_compiled_encoder_then_same_layout():
    assert ORDER_FRAME_SIZE == codec.ORDER_FRAME_SIZE
    assert order_view(np.zeros(ORDER_FRAME_SIZE - 1, np.uint8), ORDER_FRAME_SIZE - 1) is None
