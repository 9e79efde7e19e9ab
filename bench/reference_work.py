"""The fixed reference workload of the regression gate: work that never changes, timed beside every gated
workload in the same process, so that the gate compares *ratios* (workload time / reference time) and a slower
or busier machine moves both sides alike.

Three parts, one for each kind of work the hot path does, combined as a geometric mean: a compiled loop
(numba: what the kernels are), a pure-Python loop (the interpreter: what dispatch and the adapters cost) and a
numpy call (vectorised memory work). DO NOT EDIT: a change here moves every ratio; bump REFERENCE_VERSION and
rebaseline (`python -m bench gate --update-baseline`) if you must.
"""
import time

import numpy as np
from numba import float64, int64, njit

REFERENCE_VERSION = 1

_table = np.ones(4096)
_sortable = np.random.default_rng(0).random(2048)


@njit(float64(float64[::1], int64), cache=True, nogil=True)
def _compiled(table, n):
    acc = 0.0
    mask = len(table) - 1
    for i in range(n):
        j = (i * 7919) & mask
        table[j] = table[j] * 0.999 + i
        acc += table[j]
    return acc


def _python(n=300):
    acc = 0
    seen = {}
    for i in range(n):
        acc = (acc * 31 + i) & 0xFFFFFFFF
        seen[i & 63] = acc
    return acc


def _numpy():
    return float(np.sort(_sortable).sum())


PARTS = {
    "compiled": lambda: _compiled(_table, 2000),
    "python": _python,
    "numpy": _numpy,
}


def warm_up():
    for part in PARTS.values():
        for _ in range(3):
            part()


def time_parts(out, timer=time.perf_counter_ns):
    """Time each part once; append the ns to out[part]."""
    for name, part in PARTS.items():
        t0 = timer()
        part()
        out[name].append(timer() - t0)
