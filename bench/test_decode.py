"""decode_inbound: signal frames in rx -> records in the signal ring (header checks, msgpack reads, range checks,
ring claim and publish). rx holds the frames as chunks of 16 (UDP datagrams of 16 frames, the feed's default).

Budget: none of its own in the issues. From batch 256 on it is reported against the stream budget of issue 2
(decode + process + encode >= 1.5 M signals/s on one core, i.e. <= 667 ns per signal for all three); smaller
batches are dominated by the fixed cost of a call, which the one-signal bench (p50 <= 1 us) covers.
"""
import pytest

from bench.budgets import STREAM_NS_PER_SIGNAL
from bench.conftest import run
from bench.workloads import Decode

ROUNDS = {16: 1000, 256: 300, 4096: 60}


def _bench(n):
    @pytest.mark.benchmark(group="decode")
    def test(benchmark, workloads):
        w = workloads(Decode, n)
        run(benchmark, w, rounds=ROUNDS[n], warmup_rounds=20, unit="frame",
            budget_ns=STREAM_NS_PER_SIGNAL if n >= 256 else None,
            budget_note="share of the stream budget (decode + process + encode)")
        w.setup()
        assert w.call() == n
    test.__doc__ = f"decode {n} signal frames into the ring: ns per frame."
    return test


for _n in ROUNDS:
    globals()[f"test_decode_{_n}_throughput"] = _bench(_n)
