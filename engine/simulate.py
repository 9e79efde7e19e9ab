"""`orchestrator simulate CONFIG INPUT`: a recorded stream through the production kernels and the compiled venue,
as fast as one core allows, and the report of what it traded.

INPUT is the engine's own journal directory (every arrival and command, replayed like recovery does), or a
stream of signals and market data as columns (sim/stream.py; a Parquet file a backtest engine writes, or one
`--generate N` makes for the config). The simulated venue always runs in the batch ([oms.sim] of the config,
whatever its [oms] kind), in stream time: a stream's events arrive at their `time_ns`, one chunk each, and the
venue's latencies, partial fills and fees play out between them exactly as they would live.

The columnar path puts the frames of thousands of events in rx at once and calls the batch: no Python per
event. `events_per_second` is the batch loop's rate (loading and encoding the input are timed apart).
Same input, same output: `digest` is the sha256 of every order and fill record and of the final state.
"""
import hashlib
import time

import msgspec
import numpy as np

from adapters.journal import JournalReader
from engine.recovery import feed_records, replaying_engine
from engine.journal import decode
from engine.report import strategies_report, venue_report
from engine.state import EngineState
from kernels import arena as A
from kernels import rings
from kernels._jit import entry_point
from kernels.batch import carry_over, run_batch
from kernels.dtypes import COUNTER_NAMES, REASON_NAMES
from sim.stream import frames

OUTBOUND = ((A.RING_ORDERS, "orders"), (A.RING_REJECTS, "rejects"), (A.RING_FILLS, "fills"))


def venue_config(config):
    """The config with the simulated venue in the batch, whatever its [oms] kind."""
    engine = msgspec.structs.replace(config.engine, oms=msgspec.structs.replace(config.engine.oms, kind="sim"))
    return msgspec.structs.replace(config, engine=engine)


class Outbound:
    """Drains the outbound rings after each batch: counts, and a running sha256 of orders and fills."""

    def __init__(self, state):
        self.state = state
        self.hash = hashlib.sha256()
        self.counts = {name: 0 for _, name in OUTBOUND}

    def drain(self):
        state = self.state
        for ring, name in OUTBOUND:
            tail, head = rings.available(state.cursors, ring)
            if head == tail:
                continue
            if name != "rejects":
                for part in rings.slices(getattr(state, name), tail, head):
                    self.hash.update(part.tobytes())
            self.counts[name] += head - tail
            rings.release(state.cursors, ring, head)

    def on_batch(self, orders, rejects, fills, now_ns):  # as an engine listener (journal input)
        for part in orders + fills:
            self.hash.update(part.tobytes())
        self.counts["orders"] += sum(len(p) for p in orders)
        self.counts["rejects"] += sum(len(p) for p in rejects)
        self.counts["fills"] += sum(len(p) for p in fills)


def run_stream(state, data, sizes, times, outbound):
    """Feed frames (`data`, one chunk of `sizes[k]` bytes per event, arriving at `times[k]`) through the batch
    in as few calls as rx allows; return the number of batch calls."""
    batch, carry = entry_point(run_batch), entry_point(carry_over)
    arena, layout = state.arena, state.layout
    rx, rx_sizes, rx_times, rx_sources = state.rx, state.rx_sizes, state.rx_times, state.rx_sources
    ends = np.cumsum(sizes, dtype=np.int64)
    rx_sources[:] = 1
    n, k, calls = len(sizes), 0, 0
    waiting, used = 0, 0  # chunks (and their bytes) a stopped batch left at the front of rx
    while k < n or waiting:
        start = int(ends[k - 1]) if k else 0  # where event k's frame starts in data
        last = min(k + len(rx_sizes) - waiting, n)  # the events that fit: chunk slots, then bytes
        last = k + int(np.searchsorted(ends[k:last], start + len(rx) - used, side="right"))
        take = last - k
        stop = int(ends[last - 1]) if take else start
        rx[used:used + stop - start] = data[start:stop]
        rx_sizes[waiting:waiting + take] = sizes[k:last]
        rx_times[waiting:waiting + take] = times[k:last]
        chunks = waiting + take
        batch(arena, layout, chunks)
        calls += 1
        k = last
        if state.scalars[A.S_STOP_CHUNK] < chunks:
            waiting = carry(arena, layout, chunks)
            used = int(rx_sizes[:waiting].sum())
        else:
            waiting, used = 0, 0
        outbound.drain()
        if calls > 4 * n + 16:
            raise RuntimeError("the batch makes no progress: a signal reaches more strategies than the order ring "
                               "holds (engine.toml [rings])")
    return calls


def simulate_stream(config, stream):
    """Run a columnar stream (sim/stream.py) through a fresh engine on `config` with the venue in the batch."""
    state = EngineState.build(venue_config(config))
    started = time.perf_counter()
    data, sizes = frames(stream)
    encoded = time.perf_counter()
    outbound = Outbound(state)
    calls = run_stream(state, data, sizes, np.ascontiguousarray(stream["time_ns"]), outbound)
    done = time.perf_counter()
    return report(state, outbound, len(stream), done - encoded, encode_s=encoded - started, batches=calls)


def simulate_journal(config, directory):
    """Replay an engine's journal (arrivals and commands) with the venue in the batch."""
    state = EngineState.build(venue_config(config))
    outbound = Outbound(state)
    engine = replaying_engine(state, [outbound])
    reader = JournalReader(directory)
    started = time.perf_counter()
    records, _ = feed_records(engine, ((seq, decode(body)) for seq, body in reader.records()))
    elapsed = time.perf_counter() - started
    events = int(state.counters[COUNTER_NAMES.index("frames")])
    return report(state, outbound, events, elapsed, journal_records=records)


def report(state, outbound, events, seconds, **extra):
    counters = {name: int(v) for name, v in zip(COUNTER_NAMES, state.counters)}
    outbound.hash.update(state.digest().encode())
    by_reason = {}
    for s in range(len(state.strategy_names)):
        for r, count in enumerate(state.reason_counts[s]):
            if count:
                by_reason[REASON_NAMES[r]] = by_reason.get(REASON_NAMES[r], 0) + int(count)
    return {"events": events, "seconds": round(seconds, 6),
            "events_per_second": round(events / seconds) if seconds > 0 else None, **extra,
            "orders": outbound.counts["orders"], "fills": outbound.counts["fills"],
            "rejects": {"total": outbound.counts["rejects"], "by_reason": by_reason},
            "venue": venue_report(state), "counters": counters, "strategies": strategies_report(state),
            "digest": outbound.hash.hexdigest()}
