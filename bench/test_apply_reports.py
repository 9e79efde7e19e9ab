"""apply_reports: execution reports in the report ring -> positions, average price, realized P&L, fees, exposure,
open quantities, the working-order table, breakers.

Workload: n working orders (placed by run_batch from the bench signals: n/4 per instrument, alternating buys and
sells), and one FILL per order in the ring. Every round starts from the same n working orders.

Budget: none of its own in the issues (an execution report is not on the signal -> order path); it is reported
per report so a change in its cost shows. Note the batch-size curve: releasing an order rescans the working
orders of its account and instrument for the best prices, so a report costs more when many orders work.
"""
import pytest

from bench.conftest import run
from bench.workloads import ApplyReports

ROUNDS = {1: 1000, 16: 1000, 256: 200, 4096: 15}


def _bench(n):
    @pytest.mark.benchmark(group="apply_reports")
    def test(benchmark, workloads):
        w = workloads(ApplyReports, n)
        run(benchmark, w, rounds=ROUNDS[n], warmup_rounds=20 if n < 4096 else 2, unit="report")
        w.setup()
        assert w.call() == n  # every report a fill applied
    test.__doc__ = f"apply {n} fills to {n} working orders: ns per report."
    return test


for _n in ROUNDS:
    globals()[f"test_apply_reports_{_n}_throughput"] = _bench(_n)
