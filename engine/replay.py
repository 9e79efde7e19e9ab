"""Replay: a recording's chunks through a fresh engine, each batch at its recorded clock.

The recording holds every inbound chunk of a live run (signals, market data and the OMS's reports), grouped by
batch and stamped with the batch clock, so a replay makes the same batches and the same decisions: the same
file gives the same orders, which the digest over every order record proves.
"""
import hashlib

from adapters.replay import ReplayReader, ReplayReaderConfig
from engine.driver import Engine
from engine.report import strategies_report
from engine.state import EngineState
from kernels.dtypes import COUNTER_NAMES
from sim.sink import NullOms


class OrderDigest:
    """Engine listener: a running sha256 over every order record, in order."""

    def __init__(self):
        self.hash = hashlib.sha256()
        self.orders = 0

    def on_batch(self, orders, rejects, fills, now_ns):
        for chunk in orders:
            self.hash.update(chunk.tobytes())
            self.orders += len(chunk)


def replay(config, path):
    """Run the recording at `path` through a fresh engine on `config`; return counters and the order digest."""
    state = EngineState.build(config)
    reader = ReplayReader(ReplayReaderConfig(path=str(path)))
    reader.open()
    digest = OrderDigest()
    oms = None if config.engine.oms.kind == "sim" else NullOms()  # the in-batch venue runs again, in stream time
    engine = Engine(state, [reader], oms, clock=lambda: reader.recv_ns, listeners=[digest])
    batches = 0
    try:
        while engine.poll():
            engine.step(reader.recv_ns)
            batches += 1
    finally:
        reader.close()
    return {"batches": batches, "orders_digest": digest.hash.hexdigest(), "orders": digest.orders,
            "truncated_records": reader.stats.truncated,
            "counters": {name: int(v) for name, v in zip(COUNTER_NAMES, state.counters)},
            "strategies": strategies_report(state)}
