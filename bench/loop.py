"""The trading loop of issue 13: a generated stream, and the two engines that run it (bench/test_loop.py times them).

The stream (`trading_stream`): market data and signals interleaved, one frame per chunk (a datagram each), 1 us
apart. Event 2j is a quote for instrument j % 10 (its mid a random walk of -1, 0 or +1 tick an update, bid and
ask 1 or 2 ticks either side, last at the mid); event 2j + 1 is an ORDER signal on that instrument for one lot,
priced one tick through the touch (a buy above the ask, a sell below the bid), from one of the two strategies
of its kind (bench/config_loop: trend and carry trade the five futures, value and flow the five stocks, with
limit, IOC, limit and market orders). Each (strategy, instrument) buys, then sells, then buys, so positions
swing around zero and no limit is ever reached. The venue runs in the batch and fills at the touch at once
(latency 0, a taker fee): every signal goes decode -> every check -> order -> fill -> position and P&L, and the
fill is applied before the next event; every quote goes decode -> marks -> exposure and P&L of every holder.

`Compiled(stream, batch)` feeds it to `run_batch` `batch` chunks at a time, as Engine.step does (rx filled, one
compiled call, the order, reject and fill rings released), timing each call; `Plain(stream)` feeds the chunks one
by one to reference/stream.py, the plain-Python engine, clearing its outputs every 4096 chunks.
"""
import hashlib
import time

import numpy as np

from bench import BENCH_DIR
from engine.config import load_config
from engine.state import EngineState
from kernels import arena as A
from kernels._jit import entry_point
from kernels.batch import run_batch
from kernels.dtypes import C_BATCH_STOPS, MSG_MARKET_DATA, MSG_SIGNAL, SIGNAL_ORDER
from kernels.rings import HEAD, TAIL
from reference.stream import Stream
from wire.records import records

CONFIG_DIR = BENCH_DIR / "config_loop"
T0_NS = 1_767_225_600_000_000_000  # 2026-01-01
GAP_NS = 1_000
N_INSTRUMENTS = 10
FUTURES = 5  # instruments 0-4: signals 0 and 1 (trend, carry); 5-9: signals 2 and 3 (value, flow)
# what every batch size must end with the same (the venue's internal tables too: the same fills in the same order)
TABLES = ("instruments", "strategies", "positions", "accounts", "exposures", "open_orders", "source_seq",
          "reason_counts", "trip_counts", "venue", "venue_orders", "venue_books")

_config = None


def loop_config():
    global _config
    if _config is None:
        _config = load_config(CONFIG_DIR)
    return _config


class TradingStream:
    """n events as one byte string of frames, with each chunk's size, offset and arrival time."""

    def __init__(self, n, seed=13):
        assert n % 2 == 0
        config = loop_config()
        tick = np.array([i.tick_size for i in config.instruments])
        lot = np.array([i.lot_size for i in config.instruments], np.float64)
        ref = np.round(np.array([i.reference_price for i in config.instruments]) / tick).astype(np.int64)
        rng = np.random.default_rng(seed)
        pairs = n // 2
        j = np.arange(pairs)
        i = j % N_INSTRUMENTS
        steps = rng.integers(-1, 2, (pairs // N_INSTRUMENTS + 1, N_INSTRUMENTS))
        mid = (ref + np.cumsum(steps, axis=0))[j // N_INSTRUMENTS, i]
        half = rng.integers(1, 3, pairs)
        bid, ask = mid - half, mid + half
        t = T0_NS + np.arange(n, dtype=np.int64) * GAP_NS
        md = records(MSG_MARKET_DATA, pairs)
        md["instrument"], md["ts_ns"] = i, t[0::2]
        md["bid"], md["ask"], md["last"] = bid * tick[i], ask * tick[i], mid * tick[i]
        side = np.where((j // (2 * N_INSTRUMENTS)) % 2 == 0, 1, -1)
        sig = records(MSG_SIGNAL, pairs)
        sig["source"], sig["seq"] = 0, j + 1
        sig["signal_id"] = np.where(i < FUTURES, 0, 2) + (j // N_INSTRUMENTS) % 2
        sig["instrument"], sig["kind"] = i, SIGNAL_ORDER
        sig["value"] = side * lot[i]
        sig["price"] = np.where(side > 0, ask + 1, bid - 1) * tick[i]
        sig["ts_ns"], sig["ttl_ns"] = t[1::2], 1_000_000_000
        both = np.empty(pairs, [("md", md.dtype), ("signal", sig.dtype)])
        both["md"], both["signal"] = md, sig
        self.n = n
        self.data = both.tobytes()  # md, signal, md, signal, ...
        self.sizes = np.tile(np.array([md.dtype.itemsize, sig.dtype.itemsize], np.int32), pairs)
        self.offsets = np.concatenate(([0], np.cumsum(self.sizes, dtype=np.int64)))
        self.times = t


class Compiled:
    """The stream through run_batch, `batch` chunks a call, from a fresh engine state each run."""

    def __init__(self, stream, batch):
        self.stream, self.batch = stream, batch
        self.state = EngineState.build(loop_config())
        self.fresh = self.state.arena.copy()
        self.fn = entry_point(run_batch)
        self.calls_ns = np.zeros(-(-stream.n // batch), np.int64)  # each call's time, last run

    def setup(self):
        np.copyto(self.state.arena, self.fresh)

    def call(self):
        """One run of the whole stream; return the orders placed."""
        s, st, batch = self.stream, self.state, self.batch
        arena, layout, fn, cursors = st.arena, st.layout, self.fn, st.cursors
        rx, rx_sizes, rx_times, calls_ns = st.rx, st.rx_sizes, st.rx_times, self.calls_ns
        data = np.frombuffer(s.data, np.uint8)
        clock = time.perf_counter_ns
        placed = 0
        for b, k in enumerate(range(0, s.n, batch)):
            m = min(batch, s.n - k)
            start, end = s.offsets[k], s.offsets[k + m]
            rx[:end - start] = data[start:end]
            rx_sizes[:m] = s.sizes[k:k + m]
            rx_times[:m] = s.times[k:k + m]
            t0 = clock()
            placed += fn(arena, layout, m)
            calls_ns[b] = clock() - t0
            cursors[A.RING_ORDERS, TAIL] = cursors[A.RING_ORDERS, HEAD]  # the rings' readers took everything
            cursors[A.RING_REJECTS, TAIL] = cursors[A.RING_REJECTS, HEAD]
            cursors[A.RING_FILLS, TAIL] = cursors[A.RING_FILLS, HEAD]
        assert st.counters[C_BATCH_STOPS] == 0, "the rings are sized so that no batch stops"
        return placed

    def per_event_ns(self):
        """Each call's time per event, spread over the events of its batch (one value per event)."""
        s, batch = self.stream, self.batch
        sizes = np.minimum(batch, s.n - np.arange(0, s.n, batch))
        return np.repeat(self.calls_ns / sizes, sizes)

    def digest(self):
        """A digest of every table a run ends with (counters but the batching one)."""
        st = self.state
        h = hashlib.sha256()
        for name in TABLES:
            h.update(getattr(st, name).tobytes())
        counters = st.counters.copy()
        counters[C_BATCH_STOPS] = 0
        h.update(counters.tobytes())
        return h.hexdigest()


class Plain:
    """The stream through reference/stream.py, chunk by chunk, from a fresh engine each run."""

    def __init__(self, stream):
        self.stream = stream
        self.engine = None

    def setup(self):
        self.engine = Stream.from_config(loop_config())

    def call(self):
        s, engine = self.stream, self.engine
        data, offsets, times = s.data, s.offsets.tolist(), s.times.tolist()
        feed, outputs = engine.feed, (engine.orders, engine.rejects, engine.fills)
        placed = 0
        for k in range(s.n):
            placed += feed(times[k], data[offsets[k]:offsets[k + 1]])
            if k & 4095 == 4095:
                for out in outputs:
                    out.clear()
        return placed
