"""In-process workloads over the real kernels: what the micro-benchmarks time and what the gate compares.

A `Workload` owns an engine arena built from bench/config the way the engine builds it (EngineState.build), puts
it in a known state (its constructor), and keeps a snapshot of every table the kernels write, so `reset()` brings the
books back between rounds and no round measures a book that has filled up (no limit is ever reached: the accept
path, every check evaluated, is what is timed). `call()` is the timed part: one compiled call through the kernel's
entry point (kernels._jit.entry_point), the way the engine calls run_batch.

Kernel arguments are bound by parameter name (`arena` and `layout` -> the engine state's, `now_ns` -> a value given),
so the benches follow the kernels when their argument order changes.
"""
import inspect
import time

import numpy as np

from bench import CONFIG_DIR
from bench.frames import Instruments, fill_signals, signal_frames
from engine.config import load_config
from engine.state import EngineState
from kernels import arena as A
from kernels._jit import entry_point
from kernels.batch import run_batch
from kernels.codec import decode_inbound, encode_orders
from kernels.dtypes import EXEC_FILL
from kernels.pipeline import apply_reports, process_signals
from kernels.rings import HEAD, TAIL
from wire.records import SIGNAL_FRAME_SIZE

NOW_NS = 1_767_225_600_000_000_000  # 2026-01-01: the clock every in-process round runs at
SOURCE = 0  # the signal frames' source field (the Signal Engine's id)
FRAMES_PER_CHUNK = 16  # rx chunks as UDP datagrams of 16 signal frames (the feed's default)

# The tables a batch writes: their snapshot is the state every round starts from. Of the free-slot stack only the
# top can move in a round (orders pop slots, releases push them back): FREE_SLOTS_TOUCHED entries are restored.
MUTABLE = ("cursors", "instruments", "strategies", "positions", "accounts", "exposures", "source_seq",
           "counters", "reason_counts", "trip_counts", "scalars")
FREE_SLOTS_TOUCHED = 8192

_config = None


def bench_config():
    global _config
    if _config is None:
        _config = load_config(CONFIG_DIR)
    return _config


def bind(kernel, state, **values):
    """The kernel's positional arguments: each parameter is a value given here or the engine state's attribute of
    its name (`arena`, `layout`)."""
    return tuple(values[name] if name in values else getattr(state, name)
                 for name in inspect.signature(kernel.py_func).parameters)


class Workload:
    """An arena in a known state, a snapshot to return to, and one compiled call to time."""
    name = "workload"
    items = 1  # signals (or frames, reports, orders) per call: the unit of the per-item figure
    kernel = None  # the public kernel `call` runs (its dispatcher)

    def __init__(self):
        self.config = bench_config()
        self.state = EngineState.build(self.config)
        self.instruments = Instruments(self.config)
        self._snapshot = None

    # ------------------------------------------------------------------------------------------ state
    def snapshot(self, *extra):
        """Remember the tables a call writes (plus `extra` views) as they are now."""
        views = [getattr(self.state, name) for name in MUTABLE] + [self.state.free_slots[-FREE_SLOTS_TOUCHED:]]
        views += list(extra)
        self._snapshot = [(v, v.copy()) for v in views]

    def reset(self):
        for view, saved in self._snapshot:
            np.copyto(view, saved)

    def load_rx(self, frames, per_chunk=FRAMES_PER_CHUNK):
        """Put whole frames (a record array) into rx as chunks of `per_chunk` frames; return the chunk count."""
        raw = frames.view(np.uint8)
        size = frames.dtype.itemsize
        self.state.rx[:len(raw)] = raw
        n = len(frames)
        chunks = -(-n // per_chunk)
        for k in range(chunks):
            self.state.rx_sizes[k] = min(per_chunk, n - k * per_chunk) * size
        self.state.rx_times[:chunks] = NOW_NS
        self.state.rx_sources[:chunks] = A.FIRST_LISTENER
        return chunks

    def signals(self, n, seq0=1):
        return fill_signals(signal_frames(n), self.instruments, 0, seq0, SOURCE, NOW_NS)

    # ------------------------------------------------------------------------------------------ timing
    def setup(self):
        """Untimed, before every call: return the state to its snapshot."""
        self.reset()

    def call(self):
        raise NotImplementedError

    def time_once(self, timer=time.perf_counter_ns):
        self.setup()
        t0 = timer()
        self.call()
        return timer() - t0


class RunBatchStream(Workload):
    """rx holds n signal frames (chunks of 16); one run_batch decodes, applies, decides and encodes them all."""

    def __init__(self, n=4096, per_chunk=FRAMES_PER_CHUNK):
        super().__init__()
        self.name, self.items = f"run_batch_stream_{n}", n
        self.n_chunks = self.load_rx(self.signals(n), per_chunk)
        self.snapshot()
        self.kernel, self.fn = run_batch, entry_point(run_batch)
        self.args = (self.state.arena, self.state.layout, self.n_chunks)

    def call(self):
        return self.fn(*self.args)

    def check(self):
        """After one call: every signal made an order and every order frame is in tx."""
        self.setup()
        placed = self.call()
        return placed == self.items and int(self.state.scalars[A.S_TX_LEN]) > 0


class OneSignal(Workload):
    """The in-process one-signal path: one signal frame in rx -> run_batch -> one order frame in tx.

    `setup()` puts the next of `pool` distinct frames into rx and drains tx and the order ring, as Engine.step
    does after the call; every `pool` calls the books are reset (seq restarts with the source's last seq)."""

    def __init__(self, pool=1024):
        super().__init__()
        self.name = "one_signal"
        self.pool = pool
        self.frames = self.signals(pool)
        self.raw = self.frames.view(np.uint8).reshape(pool, SIGNAL_FRAME_SIZE)
        self.snapshot()
        self.state.rx_sizes[0] = SIGNAL_FRAME_SIZE
        self.state.rx_times[0] = NOW_NS
        self.state.rx_sources[0] = A.FIRST_LISTENER
        self.kernel, self.fn = run_batch, entry_point(run_batch)
        self.args = (self.state.arena, self.state.layout, 1)
        self.k = pool

    def setup(self):
        st = self.state
        if self.k == self.pool:
            self.reset()
            self.k = 0
        st.rx[:SIGNAL_FRAME_SIZE] = self.raw[self.k]
        self.k += 1
        st.scalars[A.S_TX_LEN] = 0
        st.cursors[A.RING_ORDERS, TAIL] = st.cursors[A.RING_ORDERS, HEAD]

    def call(self):
        return self.fn(*self.args)


class Decode(Workload):
    """decode_inbound: n signal frames in rx (chunks of 16) -> the signal ring. With `full`, the ring has no
    room: every frame is decoded and refused (counted as back-pressure), so no record is written."""

    def __init__(self, n=4096, full=False, per_chunk=FRAMES_PER_CHUNK):
        super().__init__()
        self.name, self.items = f"decode_{n}{'_ring_full' if full else ''}", n
        n_chunks = self.load_rx(self.signals(n), per_chunk)
        if full:  # a ring whose head is a whole lap ahead of its tail
            self.state.cursors[A.RING_SIGNALS, HEAD] = len(self.state.signals)
        self.snapshot()
        self.cursors = self.state.cursors.copy()
        self.kernel, self.fn = decode_inbound, entry_point(decode_inbound)
        self.args = bind(decode_inbound, self.state, n_chunks=n_chunks, recv_ns=NOW_NS)

    def setup(self):
        np.copyto(self.state.cursors, self.cursors)  # only the ring cursors move (and counters, harmlessly)

    def call(self):
        return self.fn(*self.args)


class ProcessBatch(Workload):
    """process_signals over n signals already decoded into the signal ring: fan-out, sizing, every pre-trade risk
    check, order booking, breakers. n orders come out (the accept path)."""

    def __init__(self, n):
        super().__init__()
        self.name, self.items = f"process_batch_{n}", max(n, 1)  # n = 0: the fixed cost of a call
        self.load_rx(self.signals(n))
        decode = entry_point(decode_inbound)
        decode(*bind(decode_inbound, self.state, n_chunks=-(-n // FRAMES_PER_CHUNK), recv_ns=NOW_NS))
        self.snapshot()
        self.kernel, self.fn = process_signals, entry_point(process_signals)
        self.args = bind(process_signals, self.state, now_ns=NOW_NS, max_orders=len(self.state.orders))

    def call(self):
        return self.fn(*self.args)


class ApplyReports(Workload):
    """apply_reports over n FILL reports in the report ring, one for each of n working orders: positions,
    average price, realized P&L, fees, exposure, open quantities, order release, breakers."""

    def __init__(self, n):
        super().__init__()
        self.name, self.items = f"apply_reports_{n}", n
        st = self.state
        self.load_rx(self.signals(n))
        entry_point(run_batch)(st.arena, st.layout, -(-n // FRAMES_PER_CHUNK))
        orders = st.orders[:n]
        assert int(st.cursors[A.RING_ORDERS, HEAD]) == n, "the bench workload must place one order per signal"
        reports = st.reports[:n]
        reports["order_id"] = orders["order_id"]
        reports["strategy"] = orders["strategy"]
        reports["deploy"] = orders["deploy"]
        reports["exec_type"] = EXEC_FILL
        reports["qty"] = orders["qty"]
        reports["price"] = orders["price"]
        reports["leaves"] = 0
        reports["fee"] = 0.01 * orders["qty"]
        reports["ts_ns"] = NOW_NS
        st.cursors[A.RING_REPORTS] = (n, 0)
        self.snapshot(st.open_orders[:n])
        self.kernel, self.fn = apply_reports, entry_point(apply_reports)
        self.args = bind(apply_reports, st, now_ns=NOW_NS)

    def call(self):
        return self.fn(*self.args)


class Encode(Workload):
    """encode_orders: n orders in the order ring -> n fixed-width Order frames in tx. Writes only tx."""

    def __init__(self, n):
        super().__init__()
        self.name, self.items = f"encode_{n}", n
        st = self.state
        self.load_rx(self.signals(n))
        entry_point(run_batch)(st.arena, st.layout, -(-n // FRAMES_PER_CHUNK))
        assert int(st.cursors[A.RING_ORDERS, HEAD]) == n
        self.kernel, self.fn = encode_orders, entry_point(encode_orders)
        self.args = bind(encode_orders, st, start=0, stop=n)

    def setup(self):
        self.state.scalars[A.S_TX_LEN] = 0  # tx is empty again: each round encodes into the same bytes

    def call(self):
        return self.fn(*self.args)
