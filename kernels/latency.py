"""Latency histograms of a running engine, recorded in compiled code (numpy per batch cost ~20 us).

Log-linear buckets, HdrHistogram's idea at a fixed precision: SUB_BUCKETS per power of two (~4% resolution)
over 1 ns .. 2**MAX_EXPONENT ns; longer lands in the last bucket. engine/metrics.py reads percentiles.
"""
import math

from numba import from_dtype, types

from kernels._jit import helper, kernel
from kernels.dtypes import ORDER_T

SUB_BUCKETS = 16
MAX_EXPONENT = 48  # 2**48 ns ~ 3 days
N_BUCKETS = SUB_BUCKETS * MAX_EXPONENT


@helper
def bucket_of(value_ns):
    mantissa, exponent = math.frexp(float(max(value_ns, 1)))
    return min((exponent - 1) * SUB_BUCKETS + int((2.0 * mantissa - 1.0) * SUB_BUCKETS), N_BUCKETS - 1)


@kernel(types.int64(from_dtype(ORDER_T)[::1], types.int64, types.int64[:, ::1]))
def record_signal_to_order(orders, sent_ns, counts_out):
    """Count each order's latency from its signal's timestamp to `sent_ns` in counts_out[strategy]."""
    for k in range(len(orders)):
        counts_out[orders[k]["strategy"], bucket_of(sent_ns - orders[k]["signal_ts_ns"])] += 1
    return len(orders)
