"""Recovery in process: an engine that journals a random stream of arrivals and commands, killed (its objects
dropped, nothing closed), recovered from its journal (and a snapshot) -> the same state, bit for bit
(EngineState.digest: the arena but rx, tx and the last batch's cut), as the engine that died. Both OMS kinds:
the in-batch venue, and an OMS link that refuses sends at random, so batches stop for back-pressure and commands
apply while input waits undecided in rx. A torn tail is cut off; a disk that fills up follows the policy.
"""
import errno
import os
import random
import struct

import msgspec
import pytest

from adapters.base import TransportStats
from adapters.journal import JournalConfig, JournalReader, scan_segment, segments
from engine.commands import Deploy, KillSwitch, Rollback, SetLimits, Shadow, Transition
from engine.config import load_config
from engine.driver import Engine
from engine.journal import EngineJournal
from engine.recovery import SNAPSHOTS, recover, replay
from engine.service import journal_directory
from engine.snapshot import Snapshotter
from engine.state import EngineState
from kernels.journal import CURSOR_CAP, CURSOR_POS
from kernels.dtypes import HALTED, PAUSED, SIGNAL_ORDER, SIGNAL_TARGET
from sim.sink import NullOms
from tests.e2e.e2e_kit import derive_config
from wire.frames import encode_frame
from wire.schema import MarketData, Signal

T0 = 1_767_225_600_000_000_000
MIDS = [6000.0, 21000.0, 230.5, 420.25, 180.1, 350.0]
TICKS = [0.25, 0.25, 0.01, 0.01, 0.01, 0.01]
STRATEGIES = ["index_arbitrage", "mean_reversion", "momentum", "pairs", "scalper"]


class Scripted:
    """An inbound transport that delivers the chunks it is given, a few per poll."""

    def __init__(self):
        self.waiting = []
        self.stats = TransportStats()

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        n = 0
        while self.waiting and n < max_chunks and offset + len(self.waiting[0]) <= len(rx):
            chunk = self.waiting.pop(0)
            rx[offset:offset + len(chunk)] = memoryview(chunk)
            rx_sizes[chunk_index + n] = len(chunk)
            offset += len(chunk)
            n += 1
        return n, offset


class FlakyOms(NullOms):
    """An OMS link that refuses a send now and then (back-pressure)."""

    def __init__(self, rng):
        super().__init__()
        self.rng = rng

    def send(self, frames):
        return self.rng.random() < 0.6 and super().send(frames)


def frames_for(rng, seq, t):
    out = []
    for _ in range(rng.choice([1, 1, 2, 5])):
        i = rng.randrange(6)
        if rng.random() < 0.4:
            mid = MIDS[i] * (1 + rng.uniform(-0.002, 0.002))
            out.append(encode_frame(MarketData(i, mid - TICKS[i], mid + TICKS[i], mid, t)))
        else:
            seq[0] += 1
            kind = rng.choice([SIGNAL_ORDER, SIGNAL_TARGET])
            value = float(rng.choice([-3, -1, 1, 2, 5])) if kind == SIGNAL_ORDER else rng.uniform(-1, 1)
            out.append(encode_frame(Signal(0, seq[0], rng.randrange(5), i, kind, value,
                                           MIDS[i] * (1 + rng.uniform(-0.003, 0.003)), t, 0)))
    return b"".join(out)


def commands(rng, config):
    name = rng.choice(STRATEGIES)
    if rng.random() < 0.2:  # an operator edits a strategy's file, then deploys it or rolls back
        path = journal_directory(config).parents[1] / "strategies" / f"{name}.toml"
        text = path.read_text()
        qty = rng.choice([10, 20, 30, 40])
        path.write_text("\n".join(f"max_order_qty = {qty}" if line.startswith("max_order_qty") else line
                                  for line in text.splitlines()) + "\n")
        return rng.choice([Deploy(strategy=name), Rollback(strategy=name), Shadow(strategy=name, on=True)])
    return rng.choice([
        Transition(strategy=name, action=rng.choice(["pause", "resume", "activate", "halt", "reset", "reduce_only"])),
        SetLimits(strategy=name, values={"max_order_qty": rng.choice([1, 50, 500])}),
        KillSwitch(scope="strategy", name=name, on=rng.random() < 0.5),
        KillSwitch(scope="global", on=rng.random() < 0.2),
        Shadow(strategy=name, on=False),
    ])


def run_live(config, rng, steps, snapshot_at=None):
    """A live engine on `config` journaling a random session; returns it (never closed: it "dies")."""
    directory = journal_directory(config)
    journal = EngineJournal(config.engine.journal, directory)
    journal.open()
    inbound = Scripted()
    oms = None if config.engine.oms.kind == "sim" else FlakyOms(rng)
    clock = [T0]
    engine = Engine(EngineState.build(config), [inbound], oms, clock=lambda: clock[0], journal=journal)
    snapshots = Snapshotter(directory / SNAPSHOTS, interval_s=0)
    seq = [0]
    for step in range(steps):
        clock[0] += rng.choice([1_000, 50_000, 2_000_000, 300_000_000])
        for _ in range(rng.choice([0, 1, 1, 3])):
            inbound.waiting.append(frames_for(rng, seq, clock[0]))
        if rng.random() < 0.15:
            engine.control.submit(commands(rng, config))
        engine.poll()
        engine.step()
        if step == snapshot_at:
            assert snapshots.take(engine, clock[0], wait=True) or engine.pending_input()[0]
    return engine


@pytest.fixture(params=["venue", "oms"])
def config(request, tmp_path):
    engine = {"rx_bytes": 4096, "rx_chunks": 16, "tx_bytes": 2048, "rings": {"orders": 8, "rejects": 8, "fills": 8},
              "journal": {"fsync": "never", "segment_bytes": 1 << 16}}
    if request.param == "oms":
        engine["oms"] = {"kind": "tcp"}
    strategies = {name: {"enabled": True, "limits": {"rate_per_second": 1e6, "burst": 1e6}} for name in STRATEGIES}
    return load_config(derive_config(tmp_path / "config", engine=engine, strategies=strategies))


@pytest.mark.parametrize("seed", range(4))
def test_recovery_when_the_engine_dies_then_journal_replay_gives_its_state_bit_for_bit(config, seed):
    live = run_live(config, random.Random(seed), steps=300)

    state, info, results = recover(config, journal_directory(config))

    assert live.state.counters[0] > 0 and info.records_replayed > 300 and info.snapshot_seq == 0
    assert state.digest() == live.state.digest()
    assert results == live.control.results
    assert state.deploys == live.state.deploys  # the journaled specs, whatever the files say now
    assert any(len(d) > 1 for d in live.state.deploys)
    assert state.shadows == live.state.shadows


@pytest.mark.parametrize("seed", range(3))
def test_recovery_when_a_snapshot_was_taken_then_it_and_the_tail_give_the_same_state(config, seed):
    live = run_live(config, random.Random(seed), steps=300, snapshot_at=150)

    state, info, _ = recover(config, journal_directory(config))

    assert 0 < info.snapshot_seq < info.last_seq and info.records_replayed == info.last_seq - info.snapshot_seq
    assert state.digest() == live.state.digest()


def test_recovery_when_the_last_record_is_torn_then_it_is_cut_off_and_the_rest_recovered(config):
    live = run_live(config, random.Random(9), steps=100)
    before_tear = recover(config, journal_directory(config))[1].last_seq
    first, path = segments(journal_directory(config))[-1]
    _, end, _, size = scan_segment(path, first)
    assert size > end, "the dead engine's segment is still at its preallocated size, zeros after its data"
    with open(path, "r+b") as f:  # the next record's header and the start of its body: the rest never written
        f.seek(end)
        f.write(struct.pack("<IIQ", 48, 0xDEAD, before_tear + 1) + b"half a record")

    state, info, _ = recover(config, journal_directory(config))

    assert info.torn_tail["what"] == "checksum mismatch" and info.last_seq == before_tear
    assert state.digest() == live.state.digest()
    reader = JournalReader(journal_directory(config))
    assert len(list(reader.records())) == before_tear and reader.torn is None  # cut off on disk
    assert "torn tail cut off" in info.summary()


def test_replay_when_run_twice_then_the_same_orders_and_state(config):
    live = run_live(config, random.Random(3), steps=200)
    first, second = replay(config, journal_directory(config)), replay(config, journal_directory(config))
    assert first["orders_digest"] == second["orders_digest"] and first["orders"] > 0
    assert first["state_digest"] == second["state_digest"] == live.state.digest()


def test_journal_when_the_disk_fills_up_then_halt_policy_halts_and_sends_nothing_unjournaled(config, monkeypatch):
    live = run_live(config, random.Random(4), steps=20)
    writer = live.journal.writer
    writer.cursor[CURSOR_CAP] = writer.cursor[CURSOR_POS]  # this segment is full ...

    def enospc(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "posix_fallocate", enospc)  # ... and the disk has no room for the next one
    live.state.strategies["state"][:len(STRATEGIES)] = 2  # every strategy ACTIVE
    sent_before = getattr(live.oms, "stats", None) and live.oms.stats.sent

    live.control.submit(Transition(strategy="momentum", action="pause"))
    live.poll()
    live.step()

    assert live.journal.failing and live.stats.journal_failures >= 1
    states = [int(x) for x in live.state.strategies["state"][:len(STRATEGIES)]]
    assert states == [HALTED, HALTED, PAUSED, HALTED, HALTED]
    if live.oms is not None:
        assert live.oms.stats.sent == sent_before
    assert writer.pending > 0  # the records wait in memory, in order

    monkeypatch.undo()  # room again: the next commit moves them into a new segment, nothing lost
    live.poll()
    live.step()
    assert not live.journal.failing and writer.pending == 0 and len(segments(journal_directory(config))) == 2
    assert recover(config, journal_directory(config))[0].digest() == live.state.digest()


def test_journal_config_when_a_field_is_wrong_then_decoding_names_it():
    with pytest.raises(msgspec.ValidationError, match="fsync"):
        msgspec.convert({"fsync": "sometimes"}, JournalConfig)
