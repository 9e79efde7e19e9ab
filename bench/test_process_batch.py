"""process_batch: signals already in the signal ring -> sized, risk-checked orders in the order ring.

Budget (issue 2): >= 100 M signals/s at batch 4096 with every check on, i.e. <= 10 ns per signal. Batches 1, 16
and 256 show how the fixed cost of a call is amortised; batch 0 is that fixed cost alone (unboxing 21 array
arguments from Python, the cool-down scan). The engine never calls process_batch from Python (run_batch fuses
it), so the small-batch figures are an upper bound of what the engine pays.

Workload (bench/frames.py): one-lot ORDER signals for 4 strategies on 4 instruments, every one accepted: the
path that evaluates every rule, books the order and updates the breakers. The books are reset between rounds
(bench/workloads.py), so no round measures a full book.
"""
import pytest

from bench.budgets import PROCESS_BATCH_4096_NS_PER_SIGNAL
from bench.conftest import run
from bench.workloads import ProcessBatch

ROUNDS = {0: 2000, 1: 2000, 16: 1000, 256: 300, 4096: 60}


def _bench(n):
    @pytest.mark.benchmark(group="process_batch")
    def test(benchmark, workloads):
        w = workloads(ProcessBatch, n)
        run(benchmark, w, rounds=ROUNDS[n], warmup_rounds=50 if n < 4096 else 5,
            budget_ns=PROCESS_BATCH_4096_NS_PER_SIGNAL if n == 4096 else None)
        w.setup()
        assert w.call() == n, "the workload left the accept path: a limit was reached"
    test.__doc__ = f"process_batch over {n} signals: ns per signal (batch 0: per call)."
    return test


for _n in ROUNDS:
    globals()[f"test_process_batch_{_n}_throughput"] = _bench(_n)
