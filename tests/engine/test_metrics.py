import numpy as np
import pytest

from engine.metrics import LogHistogram
from kernels.dtypes import ORDER_T
from kernels.latency import record_signal_to_order


def _orders(strategy, latencies_ns, sent_ns):
    orders = np.zeros(len(latencies_ns), ORDER_T)
    orders["strategy"] = strategy
    orders["signal_ts_ns"] = sent_ns - np.asarray(latencies_ns, np.int64)
    return orders


@pytest.mark.parametrize("engine", ["compiled", "python"])
def test_latency_when_recorded_then_percentiles_are_within_one_bucket(engine):
    record = record_signal_to_order if engine == "compiled" else record_signal_to_order.py_func
    histogram = LogHistogram(rows=2)
    sent = 10**18
    latencies = np.arange(1, 10_001) * 1_000  # 1 us .. 10 ms, uniform
    assert record(_orders(1, latencies, sent), sent, histogram.counts) == len(latencies)

    assert histogram.total(1) == len(latencies) and histogram.total(0) == 0
    for pct in (50, 99, 99.9):
        exact = np.percentile(latencies, pct)
        assert exact <= histogram.percentile(pct, 1) <= exact * (1 + 2 / 16)


def test_latency_when_clock_goes_backwards_then_counted_in_the_first_bucket():
    histogram = LogHistogram(rows=1)
    record_signal_to_order(_orders(0, [-5, 0], 10**18), 10**18, histogram.counts)
    assert histogram.counts[0, 0] == 2 and histogram.percentile(100, 0) <= 2
