"""Steady state allocates nothing per signal (DESIGN: "a test proves it").

The flow: one strategy trades one instrument in batches of 256 ORDER signals (buys, then sells, so the
position swings and never hits a limit); every order is filled in full by an execution report, so the order
table never fills and orders keep flowing. After a warm-up:
  (a) Python side: 10k and 100k signals through process_signals + apply_reports leave the same (small, constant)
      growth of allocated blocks (sys.getallocatedblocks) and traced memory (tracemalloc);
  (b) numba's NRT: calls from Python allocate nothing that outlives them, and not per signal (the kernels
      compile without NRT, so nothing at all; a kernel compiled with NRT would allocate one MemInfo per array
      argument per call, all freed). Inside a compiled driver loop that runs the same flow, only the driver's
      own arguments allocate, once, whatever the number of signals.
NRT statistics are switched on at run time (`_nrt_python.memsys_enable_stats`, what NUMBA_NRT_STATS=1 does at
start-up), so no subprocess is needed.
"""
import gc
import sys
import tracemalloc

import numpy as np
import pytest
from numba import njit
from numba.core.runtime import _nrt_python, rtsys

from kernels.arena import RING_ORDERS, RING_REPORTS, RING_SIGNALS, S_FREE_TOP, views
from kernels.dtypes import C_ORDERS, C_REJECTS, EXEC_FILL, SIGNAL_ORDER
from kernels.pipeline import apply_reports, process_signals
from kernels.rings import HEAD, TAIL

BATCH = 256
NOW = 1_700_000_000_000_000_000


@pytest.fixture
def flow(make_state):
    return Flow(make_state)


class Flow:
    """A state sized for the flow and a Python driver that keeps it flowing without allocating per signal."""

    def __init__(self, make_state):
        loose = 1e12
        self.k = k = make_state(
            order_table=2 * BATCH, signal_ring=BATCH, order_ring=BATCH, reject_ring=BATCH, report_ring=BATCH,
            strategies=dict(max_position=10**9, max_order_qty=10**6, max_order_notional=loose,
                            max_open_orders=2 * BATCH, rate_per_s=loose, burst=loose, tokens=loose,
                            daily_loss_limit=loose),
            accounts=dict(max_gross_notional=loose, max_net_notional=loose, daily_loss_limit=loose))
        k.signals["ts_ns"] = NOW
        k.signals["kind"] = SIGNAL_ORDER
        k.signals["price"] = 100.0
        k.reports["exec_type"] = EXEC_FILL
        self.offsets = np.arange(1, BATCH + 1, dtype=np.uint64)
        self.seq = 0
        self.batches = 0
        # resolved once: the views the loop writes, so it creates no field views per batch
        self.signal_seq, self.signal_value = k.signals["seq"], k.signals["value"]
        self.report_fields = [(k.reports[name], k.orders[name]) for name in ("order_id", "strategy", "deploy",
                                                                            "qty")]
        self.report_price, self.order_price = k.reports["price"], k.orders["price"]
        self.batch_args = (k.arena, k.layout, NOW, BATCH)
        self.report_args = (k.arena, k.layout, NOW)

    def run(self, n_signals):
        cursors = self.k.cursors
        for _ in range(n_signals // BATCH):
            np.add(self.offsets, self.seq, out=self.signal_seq)
            self.signal_value.fill(100.0 if self.batches % 2 == 0 else -100.0)
            self.seq += BATCH
            self.batches += 1
            cursors[RING_SIGNALS, HEAD] += BATCH
            if process_signals(*self.batch_args) != BATCH:
                raise AssertionError("the flow stopped placing orders")
            for report, order in self.report_fields:   # the OMS fills every order in full at its price
                np.copyto(report, order)
            np.copyto(self.report_price, self.order_price)
            cursors[RING_ORDERS, TAIL] = cursors[RING_ORDERS, HEAD]
            cursors[RING_REPORTS, HEAD] += BATCH
            if apply_reports(*self.report_args) != BATCH:
                raise AssertionError("the flow stopped filling")


def python_growth(flow, n_signals):
    """(allocated blocks, traced bytes) that outlive a run of n_signals."""
    gc.collect()
    blocks, (traced, _) = sys.getallocatedblocks(), tracemalloc.get_traced_memory()
    flow.run(n_signals)
    gc.collect()
    return sys.getallocatedblocks() - blocks, tracemalloc.get_traced_memory()[0] - traced


def test_pipeline_when_100k_signals_flow_then_python_allocations_do_not_grow(flow):
    flow.run(4 * BATCH)   # warm-up: entry points resolved, caches filled
    tracemalloc.start()
    try:
        python_growth(flow, 10 * BATCH)   # tracemalloc's own first-use costs
        blocks_10k, bytes_10k = python_growth(flow, 10_000)
        blocks_100k, bytes_100k = python_growth(flow, 100_000)
    finally:
        tracemalloc.stop()
    k = flow.k
    assert (k.counters[C_ORDERS], k.counters[C_REJECTS]) == (flow.batches * BATCH, 0)
    assert k.strategies[0]["open_orders"] == 0 and k.scalars[S_FREE_TOP] == len(k.open_orders)
    # A small constant either way (interpreter free lists, tracemalloc's bookkeeping, other threads of the
    # process), the same bound for 10x the signals: one object kept per 1000 signals would be 100 blocks.
    assert abs(blocks_10k) <= 64 and abs(blocks_100k) <= 64, (blocks_10k, blocks_100k)
    assert abs(bytes_10k) <= 8192 and abs(bytes_100k) <= 8192, (bytes_10k, bytes_100k)


@pytest.fixture
def nrt_stats():
    """numba runtime allocation counters, switched on for the test."""
    was_on = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    yield rtsys.get_allocation_stats
    if not was_on:
        _nrt_python.memsys_disable_stats()


def nrt_growth(stats, run):
    before = stats()
    run()
    after = stats()
    return after.alloc - before.alloc, after.free - before.free


def test_pipeline_when_called_from_python_then_nrt_allocates_nothing_per_signal(flow, nrt_stats):
    flow.run(2 * BATCH)
    allocs_10k, frees_10k = nrt_growth(nrt_stats, lambda: flow.run(10_000))
    allocs_100k, frees_100k = nrt_growth(nrt_stats, lambda: flow.run(100_000))
    calls_10k = 2 * (10_000 // BATCH)
    array_args = sum(isinstance(a, np.ndarray) for a in flow.batch_args + flow.report_args)
    assert allocs_10k <= calls_10k * array_args           # at most an unboxing wrapper per array per call
    assert allocs_100k == 10 * allocs_10k                 # per call: 10x the calls, 10x; never per signal
    assert (frees_10k, frees_100k) == (allocs_10k, allocs_100k)   # and every one freed


@njit(cache=False)
def compiled_flow(n_batches, batch, first_seq, arena, layout, now_ns):
    """The same flow as Flow.run, as one compiled loop: returns the number of fills."""
    state = views(arena, layout)
    signals, orders, reports, cursors = state.signals, state.orders, state.reports, state.cursors
    seq = first_seq
    fills = 0
    for b in range(n_batches):
        value = 100.0 if (first_seq // batch + b) % 2 == 0 else -100.0
        for j in range(batch):
            seq += 1
            signals[j]["seq"] = seq
            signals[j]["value"] = value
        cursors[RING_SIGNALS, HEAD] = cursors[RING_SIGNALS, HEAD] + np.uint64(batch)   # u64 + int is a float
        process_signals(arena, layout, now_ns, batch)
        for j in range(batch):
            reports[j]["order_id"] = orders[j]["order_id"]
            reports[j]["strategy"] = orders[j]["strategy"]
            reports[j]["deploy"] = orders[j]["deploy"]
            reports[j]["qty"] = orders[j]["qty"]
            reports[j]["price"] = orders[j]["price"]
        cursors[RING_ORDERS, TAIL] = cursors[RING_ORDERS, HEAD]
        cursors[RING_REPORTS, HEAD] = cursors[RING_REPORTS, HEAD] + np.uint64(batch)
        fills += apply_reports(arena, layout, now_ns)
    return fills


def test_pipeline_when_driven_by_a_compiled_loop_then_nrt_allocations_are_constant(flow, nrt_stats):
    k = flow.k

    def run(n_signals):
        n_batches = n_signals // BATCH
        fills = compiled_flow(n_batches, BATCH, flow.seq, k.arena, k.layout, NOW)
        assert fills == n_batches * BATCH
        flow.seq += n_batches * BATCH

    run(2 * BATCH)   # compile and warm up
    allocs_10k, frees_10k = nrt_growth(nrt_stats, lambda: run(10_000))
    allocs_100k, frees_100k = nrt_growth(nrt_stats, lambda: run(100_000))
    driver_array_args = 2  # the arena and its layout
    assert allocs_10k == allocs_100k == driver_array_args   # one per argument of the single call, none per batch
    assert frees_10k == frees_100k == driver_array_args
    assert (k.counters[C_ORDERS], k.counters[C_REJECTS]) == (flow.seq, 0)
