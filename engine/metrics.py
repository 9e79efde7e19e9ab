"""Latency of a running engine for the live view and the report.

Buckets and recording are compiled (kernels/latency.py); this module turns counts into percentiles.
Benchmarks use HdrHistogram itself (bench/); this serves a running engine at no cost per order in Python.
"""
import numpy as np

from kernels._jit import entry_point
from kernels.latency import N_BUCKETS, SUB_BUCKETS, record_signal_to_order


class LogHistogram:
    """Counts of values (ns) in log-linear buckets; rows are independent series (one per strategy)."""

    def __init__(self, rows=1):
        self.counts = np.zeros((rows, N_BUCKETS), np.int64)

    @staticmethod
    def upper_bound(index):
        exponent, sub = divmod(index + 1, SUB_BUCKETS)
        return int((1 + sub / SUB_BUCKETS) * 2.0 ** exponent)

    def total(self, row=None):
        return int(self.counts.sum() if row is None else self.counts[row].sum())

    def cumulative(self, bounds_ns, rows=None):
        """(counts at or below each bound [R, B], totals [R]) per row: a value counts below a bound when its
        bucket's upper bound is at or below it (so a bound is met within a bucket's ~4%)."""
        counts = self.counts if rows is None else self.counts[rows]
        index = _bound_index(tuple(bounds_ns))
        running = np.cumsum(counts, axis=1)
        return np.where(index >= 0, running[:, np.maximum(index, 0)], 0), running[:, -1]

    def percentile(self, pct, row=None):
        """The value at `pct` (0-100) in ns (the upper bound of its bucket); 0 when empty."""
        counts = self.counts.sum(axis=0) if row is None else self.counts[row]
        total = counts.sum()
        if total == 0:
            return 0
        index = int(np.searchsorted(np.cumsum(counts), max(1, int(np.ceil(total * pct / 100.0)))))
        return self.upper_bound(index)


_BOUND_INDEX = {}


def _bound_index(bounds_ns):
    """For each bound, the last bucket whose upper bound is at or below it (-1: none)."""
    index = _BOUND_INDEX.get(bounds_ns)
    if index is None:
        uppers = np.array([LogHistogram.upper_bound(k) for k in range(N_BUCKETS)], np.float64)
        index = _BOUND_INDEX[bounds_ns] = np.searchsorted(uppers, np.array(bounds_ns), side="right") - 1
    return index


class LatencyRecorder:
    """Engine listener: signal-to-order latency per strategy, from the signal's own timestamp (`ts_ns`, set by
    the Signal Engine) to the moment its order left for the OMS. Clocks of the two hosts must agree; on one
    host (colocated, or the demo) they share one clock."""

    def __init__(self, state, clock):
        self.clock = clock
        self.signal_to_order = LogHistogram(len(state.strategies))
        self._record = entry_point(record_signal_to_order)

    def on_batch(self, orders, rejects, fills, now_ns):
        sent = self.clock()
        for chunk in orders:
            self._record(chunk, sent, self.signal_to_order.counts)

    def p99_us(self, strategy):
        return self.signal_to_order.percentile(99, strategy) / 1000
