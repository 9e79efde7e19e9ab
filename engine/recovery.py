"""Recovery and replay: the latest valid snapshot plus the journal after it -> the state of the engine that died.

`recover(config, directory)` restores the newest snapshot that reads back whole (engine/snapshot.py) and
feeds the journal records after its seq through a replaying engine (`feed_journal`: a checked segment at a
time, runs of arrivals into rx by one compiled call, as many as rx holds): arrivals into rx at their recorded
time and source, commands applied at their recorded stream position and clock. The kernels are deterministic and a
batch's cut does not change what it decides (tests/kernels/test_in_order.py), so the arena comes out as the
live engine left it, bit for bit. A torn tail (a record the dead process was writing) is reported and cut off
before the engine journals again; corruption elsewhere stops recovery with the file and offset.

Replaying sends nothing: a replaying engine's OMS link is a sink, and commands' outbound effects (cancel
requests) are not repeated. What the dead engine decided but never sent is found by reconciliation with the OMS.
`replay(config, directory)` runs the whole journal through a fresh engine (no snapshot) and returns the report
with a digest of every order, so two replays of one journal can be compared.
"""
import hashlib
import logging
import time
from pathlib import Path

import msgspec

from adapters.journal import JournalReader
from engine.driver import Engine
from engine.journal import Arrival, decode
from engine.report import strategies_report
from engine.snapshot import GENESIS, SUFFIX, read_snapshot, restore, snapshot_files
from engine.state import EngineState
from kernels.arena import S_CLOCK_NS
from kernels.dtypes import COUNTER_NAMES
from sim.sink import NullOms

log = logging.getLogger("orchestrator.recovery")
SNAPSHOTS = "snapshots"


class Recovered(msgspec.Struct, kw_only=True):
    """What recovery restored, for the operator (printed at start) and the engine (results, next seq)."""
    snapshot_seq: int = 0          # 0: no snapshot, the journal from its start
    snapshot_file: str | None = None
    skipped_snapshots: list[str] = []  # files that did not read back whole: why
    records_replayed: int = 0
    last_seq: int = 0              # the journal's last good record: the engine journals on after it
    torn_tail: dict | None = None  # what was cut off the journal's end
    seconds: float = 0.0

    def summary(self):
        start = f"snapshot at seq {self.snapshot_seq}" if self.snapshot_seq else "an empty state (no snapshot)"
        torn = (f"; torn tail cut off ({self.torn_tail['dropped']} bytes: {self.torn_tail['what']})"
                if self.torn_tail else "")
        return (f"recovered from {start} + {self.records_replayed} journal records (last seq {self.last_seq}) "
                f"in {self.seconds:.3f} s{torn}")


class OrderDigest:
    """Engine listener: a running sha256 over every order record, in order."""

    def __init__(self):
        self.hash = hashlib.sha256()
        self.orders = 0

    def on_batch(self, orders, rejects, fills, now_ns):
        for chunk in orders:
            self.hash.update(chunk.tobytes())
            self.orders += len(chunk)


def replaying_engine(state, listeners=()):
    """An engine over `state` that only replays: no transports, orders into a sink (or the in-batch venue)."""
    oms = None if state.config.engine.oms.kind == "sim" else NullOms()
    return Engine(state, [], oms, clock=lambda: state.scalars.item(S_CLOCK_NS), listeners=listeners)


def feed_records(engine, records):
    """Feed (seq, decoded record) pairs through a replaying engine, one at a time (export and simulate, which
    look at records on the way); return (records fed, the last record's time)."""
    n, last_ns = 0, 0
    for seq, record in records:
        if type(record) is Arrival:
            engine.feed(record.time_ns, record.source, record.sizes, record.data)
            last_ns = record.time_ns
        else:
            engine.decide(record.at_ns, record.pending_chunks, record.pending_bytes)
            engine.control.replay(record.command, record.at_ns, seq, record.spec)
            last_ns = record.at_ns
        n += 1
    engine.decide(last_ns)
    return n, last_ns


def feed_journal(engine, reader, after=0):
    """Feed the journal after seq `after` through a replaying engine, a checked segment at a time (adapters/
    journal.py JournalReader.scanned): runs of arrival records go into rx by one compiled call each, as many as
    rx holds, then one batch decides them; a command is applied at its recorded stream position. The same
    batches as `feed_records` would run, cut differently: the kernels decide the same either way
    (tests/kernels/test_in_order.py). Return (records fed, the last record's time)."""
    n, last_ns = 0, 0
    for block in reader.scanned(after):
        data, offsets = block.data, block.offsets
        i, count = 0, len(offsets)
        while i < count:
            loaded, time_ns = engine.feed_records(data, offsets, i, count)
            if loaded:
                i, n, last_ns = i + loaded, n + loaded, time_ns
                continue
            record = decode(block.body(i))
            if type(record) is Arrival:  # rx is full: decide what waits, then it fits
                if not engine.pending_input()[0]:
                    raise ValueError(f"a journal record at seq {block.first_seq + i} holds more than rx can")
                engine.decide(record.time_ns)
                continue
            engine.decide(record.at_ns, record.pending_chunks, record.pending_bytes)
            engine.control.replay(record.command, record.at_ns, block.first_seq + i, record.spec)
            i, n, last_ns = i + 1, n + 1, record.at_ns
    engine.decide(last_ns)
    return n, last_ns


def recover(config, directory) -> tuple[EngineState, Recovered, dict]:
    """(state, what was done, applied command results by id) for an engine on `config` whose journal is in
    `directory`. Raises JournalCorrupt for a journal bad before its tail, ValueError for a snapshot taken on a
    config that plans a different arena (the error says which)."""
    start = time.perf_counter()
    directory = Path(directory)
    info = Recovered()
    state = None
    for seq, path in snapshot_files(directory / SNAPSHOTS):
        try:
            meta, arena = read_snapshot(path)
        except (OSError, ValueError) as e:
            info.skipped_snapshots.append(str(e))
            log.warning("snapshot skipped: %s", e)
            continue
        state = restore(config, meta, arena)
        info.snapshot_seq, info.snapshot_file = meta.seq, str(path)
        results = {r.id: r for r in meta.results}
        break
    if state is None:
        state, results = EngineState.build(config), {}
    engine = replaying_engine(state)
    engine.control.results = results
    reader = JournalReader(directory)
    info.records_replayed, _ = feed_journal(engine, reader, info.snapshot_seq)
    info.last_seq = max(reader.last_seq, info.snapshot_seq)
    if reader.last_seq < info.snapshot_seq:
        raise ValueError(f"the journal in {directory} ends at seq {reader.last_seq}, before the snapshot's "
                         f"{info.snapshot_seq}: journal segments are missing")
    torn = reader.truncate_torn_tail()
    if torn is not None:
        info.torn_tail = msgspec.to_builtins(torn)
        log.warning("journal: torn tail cut off %s at byte %d (%d bytes: %s)", torn.path, torn.offset,
                    torn.dropped, torn.what)
    info.seconds = time.perf_counter() - start
    return state, info, engine.control.results


def replay(config, directory):
    """The whole journal in `directory` through a fresh engine: from the state it started with (the genesis
    snapshot; a state built from `config` if there is none), every record; counters, strategies, the state's
    digest and a digest of every order (two replays of one journal give the same)."""
    genesis = Path(directory) / SNAPSHOTS / f"{GENESIS:020d}{SUFFIX}"
    state = restore(config, *read_snapshot(genesis)) if genesis.exists() else EngineState.build(config)
    digest = OrderDigest()
    engine = replaying_engine(state, [digest])
    reader = JournalReader(directory)
    records, _ = feed_journal(engine, reader)
    return {"records": records, "last_seq": reader.last_seq, "orders_digest": digest.hash.hexdigest(),
            "orders": digest.orders, "torn_tail": None if reader.torn is None else msgspec.to_builtins(reader.torn),
            "state_digest": state.digest(),
            "counters": {name: int(v) for name, v in zip(COUNTER_NAMES, state.counters)},
            "strategies": strategies_report(state)}
