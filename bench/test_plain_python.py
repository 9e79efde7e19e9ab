"""The plain-Python reference (bench/plain_python.py over reference/stream.py): the same work a user would write
without this project.

Two checks that it does the same work (the kernels' orders and reject reasons on the bench workload and on a
random demo workload full of bad signals), then the two figures every report sets against the engine's:
- `test_plain_python_stream_4096_throughput`: 4096 signal frames in one buffer -> order frames (per signal);
  the engine's figure is `test_stream_4096_udp16_throughput`;
- `test_plain_python_one_signal_latency`: one signal frame -> order frame, paced and corrected exactly as
  `test_inprocess_one_signal_latency`.
Budget: none; the speed-up over this is reported (bench/report.py).
"""
import time

import msgspec
import numpy as np
import pytest

from bench import BENCH_DIR, CONFIG_DIR
from bench.conftest import record_latency, run
from bench.frames import Instruments, fill_signals, signal_frames
from bench.plain_python import PlainEngine
from bench.workloads import NOW_NS, SOURCE, bench_config
from engine.config import load_config
from engine.state import EngineState
from kernels import arena as A
from kernels._jit import entry_point
from kernels.batch import run_batch
from kernels.dtypes import REASON_NAMES, SIGNAL_TARGET
from kernels.rings import HEAD, TAIL
from wire.frames import iter_frames
from wire.records import SIGNAL_FRAME_SIZE

DEMO = BENCH_DIR / "config_mixed"  # a copy of config/demo: tight limits, shared signals


def _with_oms_link(config):
    """The config with its orders going to an OMS link (tx), not to the venue in the batch: these tests compare
    decisions, so no fill may move a position between them (tests/kernels/test_stream_reference.py holds the
    reference to the kernels with the venue trading)."""
    oms = msgspec.structs.replace(config.engine.oms, kind="tcp")
    return msgspec.structs.replace(config, engine=msgspec.structs.replace(config.engine, oms=oms))


def _kernel_orders(config, frames, batches=1, step_ns=0, per_chunk=16):
    """The engine's orders (engine.wire.Order) and reasons per strategy for `frames` cut into `batches` batches,
    batch b run at NOW_NS + b x step_ns."""
    state = EngineState.build(_with_oms_link(config))
    batch = entry_point(run_batch)
    tx = b""
    for b, part in enumerate(np.array_split(frames, batches)):
        raw = part.view(np.uint8)
        state.rx[:len(raw)] = raw
        n = len(part)
        chunks = -(-n // per_chunk)
        for k in range(chunks):
            state.rx_sizes[k] = min(per_chunk, n - k * per_chunk) * SIGNAL_FRAME_SIZE
        state.rx_times[:chunks] = NOW_NS + b * step_ns
        state.rx_sources[:chunks] = A.FIRST_LISTENER  # signals come on a listener
        batch(state.arena, state.layout, chunks)
        tx += bytes(state.tx[:int(state.scalars[A.S_TX_LEN])])
        state.scalars[A.S_TX_LEN] = 0
        state.cursors[A.RING_ORDERS, TAIL] = state.cursors[A.RING_ORDERS, HEAD]
        state.cursors[A.RING_REJECTS, TAIL] = state.cursors[A.RING_REJECTS, HEAD]
    reasons = {name: {REASON_NAMES[b]: int(c) for b, c in enumerate(state.reason_counts[s]) if c}
               for s, name in enumerate(state.strategy_names)}
    return [o for _, o in iter_frames(tx)], reasons


def _plain_orders(config, frames, batches=1, step_ns=0):
    engine = PlainEngine(_with_oms_link(config))
    out = b"".join(engine.on_bytes(part.tobytes(), NOW_NS + b * step_ns)
                   for b, part in enumerate(np.array_split(frames, batches)))
    return [o for _, o in iter_frames(out)], {name: s["rejects"]["by_reason"]
                                              for name, s in engine.report()["strategies"].items()}


def _key(o):
    return (o.strategy, o.instrument, o.side, o.order_type, o.qty, o.price, o.signal_source, o.signal_seq)


def test_plain_python_when_bench_workload_then_same_orders_as_kernels():
    frames = fill_signals(signal_frames(4096), Instruments(bench_config()), 0, 1, SOURCE, NOW_NS)
    kernel, _ = _kernel_orders(bench_config(), frames)
    plain, reasons = _plain_orders(bench_config(), frames)
    assert len(kernel) == 4096
    assert [_key(o) for o in plain] == [_key(o) for o in kernel]
    assert not any(reasons.values())


def _demo_mix(n=4096, seed=1, batches=32, step_ns=50_000_000):
    """Random signals for the demo config, many of them bad in one way or another, stamped with their batch's
    clock (batch b of `batches` runs at NOW_NS + b x step_ns; token buckets refill in between)."""
    config = load_config(DEMO)
    rng = np.random.default_rng(seed)
    ref = np.array([i.reference_price for i in config.instruments])
    tick = np.array([i.tick_size for i in config.instruments])
    frames = signal_frames(n)
    inst = rng.integers(0, len(ref), n)
    frames["source"] = rng.integers(0, 2, n)
    seq = np.arange(1, n + 1)
    dup = rng.random(n) < 0.05
    seq[1:][dup[1:]] = seq[:-1][dup[1:]]  # repeats and, after a repeat, older sequences
    frames["seq"] = seq
    frames["signal_id"] = rng.integers(0, 6, n)  # 5 is subscribed by nobody
    frames["instrument"] = inst
    frames["kind"] = SIGNAL_TARGET
    frames["value"] = rng.uniform(-1.2, 1.2, n)
    frames["value"][rng.random(n) < 0.03] = np.nan
    far = np.where(rng.random(n) < 0.05, 1.5, 1.0)
    frames["price"] = np.round(ref[inst] * far * rng.uniform(0.995, 1.005, n) / tick[inst]) * tick[inst]
    clock = NOW_NS + (np.arange(n) * batches // n) * step_ns  # the batch each signal lands in (np.array_split)
    frames["ts_ns"] = np.where(rng.random(n) < 0.03, clock - 5_000_000_000, clock)
    frames["ttl_ns"] = 1_000_000_000
    return config, frames


def test_plain_python_when_demo_mix_of_bad_signals_then_same_orders_and_reasons_as_kernels():
    config, frames = _demo_mix(batches=32, step_ns=50_000_000)
    kernel, kernel_reasons = _kernel_orders(config, frames, 32, 50_000_000)
    plain, plain_reasons = _plain_orders(config, frames, 32, 50_000_000)
    assert len(kernel) >= 10 and sum(sum(r.values()) for r in kernel_reasons.values()) > 1000
    assert [_key(o) for o in plain] == [_key(o) for o in kernel]
    assert plain_reasons == kernel_reasons


class PlainStream:
    """4096 signal frames through a fresh PlainEngine (built untimed) per round."""

    def __init__(self, n=4096):
        self.items = n
        self.data = fill_signals(signal_frames(n), Instruments(bench_config()), 0, 1, SOURCE, NOW_NS).tobytes()
        self.engine = None

    def setup(self):
        self.engine = PlainEngine(CONFIG_DIR)

    def call(self):
        return self.engine.on_bytes(self.data, NOW_NS)


@pytest.mark.benchmark(group="plain_python")
def test_plain_python_stream_4096_throughput(benchmark):
    w = PlainStream()
    run(benchmark, w, rounds=15, warmup_rounds=2, reference_for="test_stream_4096_udp16_throughput")
    w.setup()
    assert len(w.call()) > 0


class PlainOneSignal:
    """One frame at a time, paced like test_inprocess_one_signal_latency; a fresh engine every `pool` signals."""

    def __init__(self, interval_ns, pool=1024):
        self.items, self.interval, self.pool = 1, interval_ns, pool
        frames = fill_signals(signal_frames(pool), Instruments(bench_config()), 0, 1, SOURCE, NOW_NS)
        self.frames = [f.tobytes() for f in frames]
        self.k, self.next, self.engine, self.frame = pool, 0, None, None

    def setup(self):
        if self.k == self.pool:
            self.engine, self.k = PlainEngine(CONFIG_DIR), 0
        self.frame = self.frames[self.k]
        self.k += 1
        now = time.perf_counter_ns()
        if self.next == 0 or now - self.next > 1_000_000_000:
            self.next = now
        while time.perf_counter_ns() < self.next:
            pass
        self.next += self.interval

    def call(self):
        return self.engine.on_bytes(self.frame, NOW_NS)


@pytest.mark.benchmark(group="plain_python")
def test_plain_python_one_signal_latency(benchmark):
    from bench.test_one_signal import INTERVAL_NS
    w = PlainOneSignal(4 * INTERVAL_NS)  # plain Python needs more time per signal than the engine's pacing allows
    run(benchmark, w, rounds=10_000, warmup_rounds=500, reference_for="test_inprocess_one_signal_latency")
    record_latency(benchmark, w.interval)
