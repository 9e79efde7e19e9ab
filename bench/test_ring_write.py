"""Ring write: publishing decoded records into the signal ring, and refusing them when it is full.

Two figures:
- `test_signal_ring_write_<n>_throughput`: a compiled claim-and-publish loop over the engine's own ring (the arena's
  signal ring and cursors, kernels/rings.py: power-of-two capacity, u64 head and tail, a full ring refuses and
  counts, never overwrites), n SIGNAL_T records per call. The loop is bench code: the engine's ring write is
  inlined into decode_inbound and cannot be called alone.
- `test_decode_4096_ring_full_throughput`: the engine's decode of 4096 frames into a ring with no room (every frame
  decoded, every claim refused and counted as back-pressure). Its difference to `test_decode_4096_throughput` is
  what the ring write costs inside the engine's decode.

Budget: none of its own (issue 2 asks for rings with back-pressure, not a figure); part of the stream budget.
"""
import numpy as np
import pytest
from numba import from_dtype, njit, types

from bench.conftest import run
from bench.workloads import Decode, Workload
from kernels.arena import RING_SIGNALS
from kernels.dtypes import C_SIGNAL_RING_FULL, SIGNAL_T
from kernels.rings import HEAD, NO_ROOM, claim, publish

SIGNALS = from_dtype(SIGNAL_T)[::1]


@njit(types.int64(SIGNALS, types.uint64[:, ::1], SIGNALS, types.int64, types.int64[::1]), cache=True, nogil=True,
      error_model="numpy")
def ring_write(ring_out, cursors, records, n, counters):
    """Claim a slot and publish each of records[:n] into ring_out; count and skip when full; return written."""
    written = 0
    for k in range(n):
        slot = claim(cursors, RING_SIGNALS, len(ring_out))
        if slot == NO_ROOM:
            counters[C_SIGNAL_RING_FULL] += 1
            continue
        ring_out[slot] = records[k]
        publish(cursors, RING_SIGNALS)
        written += 1
    return written


class RingWrite(Workload):
    def __init__(self, n):
        super().__init__()
        self.name, self.items = f"signal_ring_write_{n}", n
        self.records = np.zeros(n, self.state.signals.dtype)
        self.records["seq"] = np.arange(1, n + 1)
        self.records["value"] = 1.0
        self.args = (self.state.signals, self.state.cursors, self.records, n, self.state.counters)
        ring_write(*self.args)

    def setup(self):
        self.state.cursors[RING_SIGNALS] = 0

    def call(self):
        return ring_write(*self.args)


ROUNDS = {16: 1000, 4096: 200}


def _bench(n):
    @pytest.mark.benchmark(group="ring_write")
    def test(benchmark, workloads):
        w = workloads(RingWrite, n)
        run(benchmark, w, rounds=ROUNDS[n], warmup_rounds=20, unit="record")
        w.setup()
        assert w.call() == n
    test.__doc__ = f"claim and publish {n} records: ns per record."
    return test


for _n in ROUNDS:
    globals()[f"test_signal_ring_write_{_n}_throughput"] = _bench(_n)


@pytest.mark.benchmark(group="ring_write")
def test_decode_4096_ring_full_throughput(benchmark, workloads):
    """Decode 4096 frames into a full signal ring: ns per frame, nothing written."""
    w = workloads(Decode, 4096, full=True)
    run(benchmark, w, rounds=60, warmup_rounds=5, unit="frame")
    w.setup()
    assert w.call() == 4096 and w.state.cursors[RING_SIGNALS, HEAD] == len(w.state.signals)
