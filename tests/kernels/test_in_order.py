"""Events in arrival order: any split of a stream into batches decides the same (kernels/batch.py).

A random stream is a run of chunks, each with its arrival time: signals (targets and orders, near and far from
the market, some odd), market data moving the marks (now and then one-sided, off the tick, void, or for an
unknown instrument), ticks (empty chunks: time passing), reports for orders nobody knows, a malformed frame now
and then; the simulated venue runs in the batch (latencies, partial fills, random rejects, resting orders, a
TTL, fees), so the stream trades: orders, fills, positions, P&L, breakers.
The same stream is fed whole, and cut into batches of 1 to 4096 chunks (with small rings, so that batches
also stop for want of room and hand the rest on): the orders, rejects and fills that come out and every table
at the end are the same, bit for bit. Both engines: the compiled kernels and their Python source.
"""
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels import arena as A
from kernels import rings
from kernels.dtypes import (
    ACTIVE, C_BATCH_STOPS, MSG_EXECUTION_REPORT, MSG_SIGNAL, ORDER_IOC, ORDER_LIMIT, ORDER_MARKET, SIGNAL_ORDER,
    SIGNAL_TARGET,
)
from wire.frames import encode_frame, frame
from wire.schema import ExecutionReport, MarketData, Signal

T0 = 1_700_000_000_000_000_000
GAPS_NS = st.sampled_from([0, 0, 1_000, 50_000, 10**6, 10**8, 10**9])
STREAMS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])
# what may differ between runs that cut the same stream differently: how often a batch stopped for room
BATCHING_COUNTERS = (C_BATCH_STOPS,)
TABLES = ("instruments", "strategies", "positions", "accounts", "exposures", "open_orders", "source_seq",
          "reason_counts", "trip_counts", "venue", "venue_orders", "venue_books")


@st.composite
def desks(draw, make_state, small_rings):
    """A state with the venue in the batch, and the facts a stream needs about it."""
    n_strategies, n_instruments = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    ring = 4 if small_rings else 256
    venue = dict(ack_latency_us=draw(st.sampled_from([0, 50, 1000])),
                 fill_latency_us=draw(st.sampled_from([0, 100, 2000])),
                 reject_ratio=draw(st.sampled_from([0.0, 0.1])), partial_fill_ratio=draw(st.sampled_from([0.0, 0.5])),
                 resting_ttl_us=draw(st.sampled_from([0, 5000])), fee_per_unit=draw(st.sampled_from([0.0, 0.01])),
                 taker_fee_bps=draw(st.sampled_from([0.0, 1.5])), maker_fee_bps=draw(st.sampled_from([0.0, -0.5])),
                 min_fee=draw(st.sampled_from([0.0, 1.0])), seed=draw(st.integers(0, 2**32)))
    k = make_state(
        n_strategies, n_instruments, subscriptions=[list(range(n_strategies)), [0]], order_table=32,
        order_ring=ring, reject_ring=ring, fill_ring=ring, rx_bytes=1 << 16, rx_chunks=4096, tx_bytes=1 << 12,
        venue=venue,
        strategies=dict(state=ACTIVE, order_type=[draw(st.sampled_from([ORDER_LIMIT, ORDER_MARKET, ORDER_IOC]))
                                                  for _ in range(n_strategies)],
                        max_position=1000, max_order_qty=500, max_open_orders=6,
                        max_consecutive_rejects=draw(st.sampled_from([0, 3])), cooldown_ns=10**7,
                        max_drawdown=draw(st.sampled_from([0.0, 50.0])), rate_per_s=draw(st.sampled_from([5.0, 1e4]))),
        instruments=dict(lot_size=10, band_pct=20.0))
    return k


@st.composite
def streams(draw, n_instruments):
    """(time, bytes) chunks: one event each, a few frames at once, or nothing (a tick)."""
    t = T0
    seq = 0
    marks = [10_000] * n_instruments
    chunks = []
    for _ in range(draw(st.integers(1, 60))):
        t += draw(GAPS_NS)
        frames = []
        for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3, 0]))):
            what = draw(st.sampled_from(["signal"] * 5 + ["market"] * 3 + ["report", "bad"]))
            i = draw(st.integers(0, n_instruments - 1))
            if what == "signal":
                seq += 1
                kind = draw(st.sampled_from([SIGNAL_ORDER, SIGNAL_TARGET]))
                value = float(10 * draw(st.integers(-8, 8))) if kind == SIGNAL_ORDER else draw(
                    st.sampled_from([0.5, -0.5, 0.1, -0.2, 0.0, 1.5]))
                price = (marks[i] + draw(st.integers(-30, 30))) * 0.01
                frames.append(encode_frame(Signal(
                    source=0, seq=seq - draw(st.sampled_from([0] * 9 + [1])), signal_id=draw(st.integers(0, 1)),
                    instrument=i, kind=kind, value=value, price=price,
                    ts_ns=t - draw(st.sampled_from([0, 0, 10**9])), ttl_ns=draw(st.sampled_from([0, 10**8])))))
            elif what == "market":
                mark = max(100, marks[i] + draw(st.integers(-40, 40)))
                bid, ask = mark - draw(st.integers(0, 5)), mark + draw(st.integers(1, 5))
                bid, ask, last = draw(st.sampled_from(
                    [(bid, ask, mark)] * 8 + [(0, ask, mark), (bid, 0, 0), (0, 0, mark), (0, 0, 0),  # one side, none
                                              (bid + 0.5, ask - 0.25, mark + 0.4),                   # off the tick
                                              (math.nan, ask, mark), (bid, ask, -mark)]))             # void
                if math.isfinite(bid) and last >= 0:
                    marks[i] = mark
                frames.append(encode_frame(MarketData(instrument=draw(st.sampled_from([i] * 15 + [n_instruments])),
                                                      bid=bid * 0.01, ask=ask * 0.01, last=last * 0.01, ts_ns=t)))
            elif what == "report":
                frames.append(encode_frame(ExecutionReport(
                    order_id=(draw(st.integers(1, 50)) << 24) | draw(st.integers(0, 31)), strategy=0, deploy=0,
                    exec_type=draw(st.integers(0, 4)), qty=10, price=100.0, leaves=0, fee=0.0, ts_ns=t, reason=0)))
            else:
                frames.append(frame(draw(st.sampled_from([MSG_SIGNAL, MSG_EXECUTION_REPORT])), b"\xc1\xc1"))
        chunks.append((t, b"".join(frames)))
    chunks.append((t + 10**9, b""))  # a last tick: whatever the venue still owes is due
    return chunks


def run_stream(engine, k, chunks, cuts):
    """Feed the chunks in batches that end at `cuts`, like the engine's step does: append to rx after what waits,
    run the batch, carry over what it did not take, drain the outbound rings. Returns what came out."""
    batch, carry_over = engine.kernel("batch", "run_batch"), engine.kernel("batch", "carry_over")
    out = {"orders": [], "rejects": [], "fills": []}
    waiting, used, fed = 0, 0, 0
    bounds = sorted(set(cuts) | {len(chunks)})
    passes = 0
    while fed < len(chunks) or waiting:
        upto = next((b for b in bounds if b > fed), len(chunks))
        for t, data in chunks[fed:upto]:
            k.rx[used:used + len(data)] = np.frombuffer(data, np.uint8)
            k.rx_sizes[waiting], k.rx_times[waiting] = len(data), t
            used += len(data)
            waiting += 1
        fed = upto
        batch(k.arena, k.layout, waiting)
        stopped = int(k.scalars[A.S_STOP_CHUNK]) < waiting
        waiting = carry_over(k.arena, k.layout, waiting) if stopped else 0
        used = int(k.rx_sizes[:waiting].sum())
        for name, ring in (("orders", A.RING_ORDERS), ("rejects", A.RING_REJECTS), ("fills", A.RING_FILLS)):
            tail, head = rings.available(k.cursors, ring)
            out[name] += [row.tobytes() for part in rings.slices(getattr(k, name), tail, head) for row in part]
            rings.release(k.cursors, ring, head)
        k.scalars[A.S_TX_LEN] = 0  # the OMS link took the frames (none: the venue is in the batch)
        passes += 1
        assert passes < 10 * len(chunks) + 10, "the batches make no progress"
    return out


def final_state(k):
    counters = k.counters.copy()
    counters[list(BATCHING_COUNTERS)] = 0
    top = int(k.scalars[A.S_FREE_TOP])
    return ({name: getattr(k, name).tobytes() for name in TABLES}, counters.tobytes(), k.free_slots[:top].tobytes(),
            k.scalars[[A.S_FREE_TOP, A.S_ORDER_GEN, A.S_CLOCK_NS, A.S_NEXT_COOLDOWN_NS]].tolist(),
            k.venue_events[:int(k.venue[0]["pending"])].tobytes())


def check_any_split_decides_the_same(engine, make_state, data, small_rings):
    k = data.draw(desks(make_state, small_rings), label="desk")
    chunks = data.draw(streams(len(k.instruments)), label="stream")
    whole = k.copy()
    out_whole = run_stream(engine, whole, chunks, [])
    size = data.draw(st.sampled_from([1, 2, 3, 7, 16, 4096]), label="batch size")
    cuts = list(range(size, len(chunks), size)) + data.draw(st.lists(st.integers(1, len(chunks)), max_size=5))
    cut = k.copy()
    out_cut = run_stream(engine, cut, chunks, cuts)
    for name in out_whole:
        assert out_cut[name] == out_whole[name], name
    assert final_state(cut) == final_state(whole)


@STREAMS
@given(data=st.data())
def test_batches_when_a_stream_is_cut_anywhere_then_the_same_orders_fills_and_books(engine, make_state, data):
    check_any_split_decides_the_same(engine, make_state, data, small_rings=False)


@STREAMS
@given(data=st.data())
def test_batches_when_rings_are_small_then_batches_stop_and_hand_on_and_decide_the_same(engine, make_state, data):
    check_any_split_decides_the_same(engine, make_state, data, small_rings=True)


def test_batches_when_the_venue_trades_then_the_stream_really_fills(engine, make_state):
    """A fixed stream of the generator's kind trades for real: orders, fills, a position, fees."""
    k = make_state(1, 1, subscriptions=[[0]], order_table=32, rx_bytes=1 << 12, rx_chunks=64,
                   venue=dict(ack_latency_us=50, fill_latency_us=100, taker_fee_bps=2.0),
                   instruments=dict(lot_size=10, band_pct=20.0))
    quote = encode_frame(MarketData(instrument=0, bid=99.99, ask=100.01, last=100.0, ts_ns=T0))
    buy = encode_frame(Signal(source=0, seq=1, signal_id=0, instrument=0, kind=SIGNAL_ORDER, value=50.0,
                              price=100.05, ts_ns=T0, ttl_ns=0))
    out = run_stream(engine, k, [(T0, quote), (T0 + 1000, buy), (T0 + 10**6, b"")], [])
    assert len(out["orders"]) == 1 and len(out["fills"]) == 1
    assert k.positions[0, 0]["qty"] == 50 and k.positions[0, 0]["fees"] == round(50 * 100.01 * 2e-4, 2)
    assert k.venue[0]["fills"] == 1 and k.venue[0]["pending"] == 0
