"""run_batch == reference/stream.py: the compiled batch and the plain-Python stream engine take the same random
trading stream to the same orders, rejects and fills (record bytes in the kernels' layout, floats bit for bit)
and the same books at the end (every table, the live working orders, the counters but the batching ones, the
venue's counts and what it still holds).

The streams and desks are tests/kernels/test_in_order.py's: signals near and far from the market, market data,
ticks, reports for orders nobody knows, malformed frames, with the simulated venue in the batch (latencies,
partial fills, random rejects, resting orders, a TTL, fees). The kernel side is cut into batches at random
(small rings too, so batches stop and hand the rest on); the reference takes the chunks one by one. Both engines:
the compiled kernels and their Python source.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from kernels.dtypes import C_ROLE_REPORT_OFF_OMS, EXEC_CANCELED, FILL_T, ORDER_T, REJECT_T, SIGNAL_ORDER
from reference.compare import records_differences, table_differences, venue_differences
from reference.stream import Stream
from tests.kernels.test_in_order import BATCHING_COUNTERS, STREAMS, T0, desks, run_stream, streams
from wire.frames import encode_frame
from wire.schema import ExecutionReport, MarketData, Signal

RINGS = (("orders", ORDER_T), ("rejects", REJECT_T), ("fills", FILL_T))


def differences(k, out, ref):
    """Kernel state k (after run_stream gave `out`) against the Stream reference `ref` fed the same chunks."""
    found = []
    for name, dtype in RINGS:
        kernel_rows = np.frombuffer(b"".join(out[name]), dtype)
        found += records_differences(name, kernel_rows, getattr(ref, name))
    found += table_differences(k, ref.rules, ignore_counters=BATCHING_COUNTERS)
    found += venue_differences(k, ref.venue)
    if k.role_drops.tolist() != ref.role_drops:
        found.append(f"role_drops: kernel {k.role_drops.tolist()} != reference {ref.role_drops}")
    return found


@STREAMS
@given(data=st.data())
def test_stream_reference_when_random_stream_then_same_orders_rejects_fills_and_books(engine, make_state, data):
    k = data.draw(desks(make_state, data.draw(st.booleans(), label="small rings")), label="desk")
    chunks = data.draw(streams(len(k.instruments)), label="stream")
    ref = Stream(k)
    size = data.draw(st.sampled_from([1, 3, 16, 4096]), label="batch size")
    out = run_stream(engine, k, chunks, list(range(size, len(chunks), size)))
    for t, chunk in chunks:
        ref.feed(t, chunk)
    found = differences(k, out, ref)
    assert not found, "\n".join(found[:30])


def test_stream_reference_when_a_fixed_stream_trades_then_same_orders_fills_and_books(engine, make_state):
    """A quote, a marketable buy that fills at once, a resting sell that a later quote crosses."""
    k = make_state(1, 1, subscriptions=[[0]], order_table=8, rx_bytes=1 << 12, rx_chunks=64,
                   venue=dict(ack_latency_us=0, fill_latency_us=0, taker_fee_bps=2.0, maker_fee_bps=-0.5),
                   instruments=dict(lot_size=10, band_pct=20.0))
    chunks = [(T0, quote(99.99, 100.01)), (T0 + 1000, order(1, 50.0, 100.05)), (T0 + 2000, order(2, -20.0, 100.10)),
              (T0 + 3000, quote(100.10, 100.12)), (T0 + 10**6, b"")]
    ref = Stream(k)
    out = run_stream(engine, k, chunks, [])
    for t, chunk in chunks:
        ref.feed(t, chunk)
    assert (len(ref.orders), len(ref.fills)) == (2, 2) and k.positions[0, 0]["qty"] == 30
    assert not differences(k, out, ref)


def test_stream_reference_when_a_report_arrives_while_the_venue_runs_here_then_it_is_dropped_by_role(
        engine, make_state):
    """A CANCELED for an order the in-batch venue works, sent from outside: the venue owns that order's reports, so
    the frame is counted and dropped (were it applied, the freed slot would be booked again while the venue still
    holds the first order there: its reports would land on the new one)."""
    k = make_state(1, 1, subscriptions=[[0]], order_table=4, rx_bytes=1 << 12, rx_chunks=64,
                   venue=dict(ack_latency_us=0, fill_latency_us=1000), instruments=dict(lot_size=10, band_pct=20.0))
    cancel = encode_frame(ExecutionReport(order_id=(1 << 24) | 0, strategy=0, deploy=0, exec_type=EXEC_CANCELED,
                                          qty=0, price=0.0, leaves=0, fee=0.0, ts_ns=T0, reason=0))
    chunks = [(T0, quote(99.99, 100.01)), (T0 + 1, order(1, 10.0, 100.05)), (T0 + 2, cancel),
              (T0 + 3, order(2, 10.0, 100.02)), (T0 + 10**7, b"")]
    ref = Stream(k)
    out = run_stream(engine, k, chunks, [])
    for t, chunk in chunks:
        ref.feed(t, chunk)
    assert not differences(k, out, ref)
    assert k.counters[C_ROLE_REPORT_OFF_OMS] == 1 and k.role_drops[0].tolist() == [1, 0]
    assert (len(out["orders"]), len(out["fills"]), k.positions[0, 0]["qty"]) == (2, 2, 20)


def quote(bid, ask):
    return encode_frame(MarketData(instrument=0, bid=bid, ask=ask, last=round((bid + ask) / 2, 2), ts_ns=T0))


def order(seq, qty, price):
    return encode_frame(Signal(source=0, seq=seq, signal_id=0, instrument=0, kind=SIGNAL_ORDER, value=qty,
                               price=price, ts_ns=T0, ttl_ns=0))
