"""The batched stream on one core: rx full of signal frames -> one run_batch -> order frames in tx, through the
compiled entry point as Engine.step calls it (decode, ring, process with every check, encode).

Budget (issue 2): >= 1.5 M signals/s on one core, i.e. <= 667 ns per signal.

Topologies of rx (what the transports deliver): `udp16` datagrams of 16 frames (the feed's default), `udp1` one
signal per datagram, `tcp` one read of 4096 whole frames. Every round starts from the same books (reset untimed).
"""
import pytest

from bench.budgets import STREAM_NS_PER_SIGNAL
from bench.conftest import run
from bench.workloads import RunBatchStream

TOPOLOGIES = {"udp16": 16, "udp1": 1, "tcp": 4096}


def _bench(topology, per_chunk, n=4096):
    @pytest.mark.benchmark(group="stream")
    def test(benchmark, workloads):
        w = workloads(RunBatchStream, n, per_chunk)
        run(benchmark, w, rounds=60, warmup_rounds=5, budget_ns=STREAM_NS_PER_SIGNAL)
        assert w.check()
    test.__doc__ = f"run_batch over {n} signal frames delivered as {topology}: signals per second."
    return test


for _name, _per in TOPOLOGIES.items():
    globals()[f"test_stream_4096_{_name}_throughput"] = _bench(_name, _per)
