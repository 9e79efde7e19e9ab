"""encode_orders: orders in the order ring -> fixed-width Order frames in tx (what the OMS adapter sends).

Budget: none of its own. From batch 256 on it is reported against the stream budget of issue 2 (decode + process +
encode <= 667 ns per signal); smaller batches are dominated by the fixed cost of a call (the one-signal bench).
"""
import pytest

from bench.budgets import STREAM_NS_PER_SIGNAL
from bench.conftest import run
from bench.workloads import Encode
from kernels.arena import S_TX_LEN
from wire.records import ORDER_FRAME_SIZE

ROUNDS = {1: 2000, 16: 1000, 256: 300, 4096: 100}


def _bench(n):
    @pytest.mark.benchmark(group="encode")
    def test(benchmark, workloads):
        w = workloads(Encode, n)
        run(benchmark, w, rounds=ROUNDS[n], warmup_rounds=20, unit="order",
            budget_ns=STREAM_NS_PER_SIGNAL if n >= 256 else None,
            budget_note="share of the stream budget (decode + process + encode)")
        w.setup()
        assert w.call() == n and w.state.scalars[S_TX_LEN] == n * ORDER_FRAME_SIZE
    test.__doc__ = f"encode {n} orders: ns per order."
    return test


for _n in ROUNDS:
    globals()[f"test_encode_{_n}_throughput"] = _bench(_n)
