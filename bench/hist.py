"""HdrHistogram helpers: record numpy arrays of ns latencies, corrected for coordinated omission; summarise.

Two ways to be honest about coordinated omission, and the benches use both:
- paced loops (a latency sample every `interval`): `record(h, values, interval)` uses HdrHistogram's
  `record_corrected_value`, which adds the samples a stalled loop failed to take (value - interval, value -
  2 interval, ... down to interval);
- open-loop load (end to end): latency is measured from each signal's *intended* send time in the schedule
  (the signal's ts_ns), so a stall anywhere (sender, engine, receiver) is charged to every signal it delayed;
  those are recorded plainly (`interval=0`).
"""
import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_NS = 1
HIGHEST_NS = 3_600_000_000_000  # one hour
SIGNIFICANT = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)


def new():
    return HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT)


def record(h, values_ns, interval_ns=0):
    """Record an array of latencies (ns); with interval_ns > 0, corrected for coordinated omission."""
    values = np.clip(np.asarray(values_ns, np.int64), LOWEST_NS, HIGHEST_NS)
    uniq, counts = np.unique(values, return_counts=True)  # a few thousand distinct values, not millions of calls
    if interval_ns > 0:
        for v, c in zip(uniq.tolist(), counts.tolist()):
            h.record_corrected_value(v, interval_ns, c)
    else:
        for v, c in zip(uniq.tolist(), counts.tolist()):
            h.record_value(v, c)
    return h


def of(values_ns, interval_ns=0):
    return record(new(), values_ns, interval_ns)


def summary(h):
    """p50, p90, p99, p99.9, p99.99, max, mean (ns) and the count; empty -> zeros."""
    out = {f"p{p:g}": int(h.get_value_at_percentile(p)) for p in PERCENTILES}
    out["max"] = int(h.get_max_value())
    out["mean"] = float(h.get_mean_value())
    out["count"] = int(h.get_total_count())
    return out


def curve(h, points=240):
    """(percentile, value ns) pairs for an HDR percentile plot, dense in the tail: x = 1 / (1 - p)."""
    total = h.get_total_count()
    if total == 0:
        return [], []
    top = max(1.0, np.log10(total))  # no finer than one sample
    xs = np.linspace(0.0, top, points)
    pct = 100.0 * (1.0 - 10.0 ** -xs)
    return pct.tolist(), [int(h.get_value_at_percentile(p)) for p in pct]


def encode(h):
    """The compressed base64 HdrHistogram, for the results JSON (decode with HdrHistogram.decode)."""
    enc = h.encode()
    return enc.decode() if isinstance(enc, bytes) else enc


def us(ns):
    return ns / 1000.0
