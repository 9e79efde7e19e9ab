"""Latency recording for the live view, the report and the metrics endpoint.

A log-linear histogram in numpy (16 buckets per power of two: ~4% resolution, HdrHistogram's idea at a
fixed precision) fed a whole batch at a time with vectorized numpy, so recording costs no Python per order.
Benchmarks use HdrHistogram itself (bench/); this one serves a running engine.
"""
import numpy as np

SUB_BUCKETS = 16
MAX_EXPONENT = 48  # 2**48 ns ~ 3 days: anything longer lands in the last bucket


class LogHistogram:
    """Counts of values (ns) in log-linear buckets; rows are independent series (one per strategy)."""

    def __init__(self, rows=1):
        self.counts = np.zeros((rows, MAX_EXPONENT * SUB_BUCKETS), np.int64)

    @staticmethod
    def bucket(values):
        mantissa, exponent = np.frexp(np.maximum(values, 1).astype(np.float64))
        index = (exponent - 1) * SUB_BUCKETS + ((2 * mantissa - 1) * SUB_BUCKETS).astype(np.int64)
        return np.minimum(index, MAX_EXPONENT * SUB_BUCKETS - 1)

    @staticmethod
    def lower_bound(index):
        exponent, sub = divmod(index, SUB_BUCKETS)
        return int((1 + sub / SUB_BUCKETS) * 2.0 ** exponent)

    def record(self, rows, values):
        np.add.at(self.counts, (rows, self.bucket(values)), 1)

    def total(self, row=None):
        return int(self.counts.sum() if row is None else self.counts[row].sum())

    def percentile(self, pct, row=None):
        """The value at `pct` (0-100) in ns (the upper bound of its bucket); 0 when empty."""
        counts = self.counts.sum(axis=0) if row is None else self.counts[row]
        total = counts.sum()
        if total == 0:
            return 0
        index = int(np.searchsorted(np.cumsum(counts), max(1, int(np.ceil(total * pct / 100.0)))))
        return self.lower_bound(index + 1)

    def reset(self):
        self.counts[:] = 0


class LatencyRecorder:
    """Engine listener: signal-to-order latency per strategy, from the signal's own timestamp (`ts_ns`, set by
    the Signal Engine) to the moment its order left for the OMS. Clocks of the two hosts must agree; on one
    host (colocated, or the demo) they share one clock."""

    def __init__(self, state, clock):
        self.clock = clock
        self.signal_to_order = LogHistogram(len(state.strategies))

    def on_batch(self, orders, rejects, now_ns):
        sent = self.clock()
        for chunk in orders:
            self.signal_to_order.record(chunk["strategy"], sent - chunk["signal_ts_ns"])

    def p99_us(self, strategy):
        return self.signal_to_order.percentile(99, strategy) / 1000
