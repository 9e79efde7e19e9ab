"""Snapshots: the whole engine state at one journal seq, so recovery replays only the journal after it.

What a snapshot holds: the arena (every table, ring and the venue: one buffer, copied whole), the layout it was
planned with, and the Python side of the state (each strategy's deploy history with the specs that run, the
account limits as set live, the applied command ids). It is taken only between steps with nothing waiting in rx,
so it is exactly the state after journal record `seq`.

The hot path pays one memcpy of the arena (`stall_ns`, measured and reported); a writer thread does the rest:
`<dir>/<seq, 20 digits>.snapshot.tmp` written and fsynced, renamed into place, the directory fsynced, then
all but the newest `keep` removed. A reader checks the magic, the lengths and the arena's crc32; a file that
fails is skipped (an older snapshot and a longer journal replay do instead).

File: MAGIC, u32 length of the metadata, the metadata (msgpack `SnapshotMeta`), the arena bytes.
"""
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import msgspec
import numpy as np

from engine.commands import CommandResult
from engine.config.schema import Account
from engine.faults import crash_point
from engine.state import Deploy, EngineState, ShadowRun, allocate_arena, instruments_hash

log = logging.getLogger("orchestrator.snapshot")
MAGIC = b"ORCHESTRATOR-SNAPSHOT-1\n"
LENGTH = struct.Struct("<I")
SUFFIX = ".snapshot"
GENESIS = 0  # the seq of the snapshot a fresh journal starts with, kept whatever `keep` says


class SnapshotMeta(msgspec.Struct, kw_only=True):
    seq: int                         # the last journal record the state includes
    taken_ns: int
    engine: str
    layout: list[list[int]]
    instruments_hash: str            # instruments.toml as the arena holds it (ticks, lots): restart-only
    arena_crc: int
    strategy_names: list[str]
    deploys: list[list[Deploy]]
    account_specs: list[Account]
    shadows: list[ShadowRun]
    results: list[CommandResult]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SnapshotMeta)


def snapshot_files(directory):
    """(seq, path) of the snapshots in a directory, newest first."""
    found = []
    for path in Path(directory).glob(f"*{SUFFIX}"):
        stem = path.name[:-len(SUFFIX)]
        if stem.isdigit():
            found.append((int(stem), path))
    return sorted(found, reverse=True)


def read_snapshot(path):
    """(meta, arena) of a snapshot file; ValueError naming what is wrong."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path}: not a snapshot (no magic)")
    start = len(MAGIC) + LENGTH.size
    if len(data) < start:
        raise ValueError(f"{path}: cut short")
    (meta_len,) = LENGTH.unpack_from(data, len(MAGIC))
    if len(data) < start + meta_len:
        raise ValueError(f"{path}: metadata cut short")
    try:
        meta = _decoder.decode(data[start:start + meta_len])
    except msgspec.DecodeError as e:
        raise ValueError(f"{path}: metadata unreadable: {e}") from None
    body = memoryview(data)[start + meta_len:]
    layout = np.array(meta.layout, np.int64)
    nbytes = int((layout[:, 0] + layout[:, 1]).max()) if len(layout) else 0
    if len(body) < nbytes or zlib.crc32(body) != meta.arena_crc:
        raise ValueError(f"{path}: arena cut short or corrupt (crc mismatch)")
    arena = allocate_arena(len(body))
    arena[:] = np.frombuffer(body, np.uint8)
    return meta, arena


class Snapshotter:
    """Takes snapshots of one engine: `maybe_take(engine, now_ns)` between steps, on an interval; `take(engine,
    now_ns, wait=True)` at a clean shutdown."""

    def __init__(self, directory, interval_s=60.0, keep=3):
        self.directory = Path(directory)
        self.interval_ns = int(interval_s * 1e9)
        self.keep = keep
        self._next_ns = 0
        self._copy = None
        self._thread = None
        self.taken = self.skipped = 0
        self.last_seq = 0
        self.last_stall_ns = self.max_stall_ns = 0
        self.last_write_s = 0.0
        self.errors = 0

    def maybe_take(self, engine, now_ns) -> bool:
        if self.interval_ns <= 0 or now_ns < self._next_ns or engine.pending_input()[0]:
            return False
        self._next_ns = now_ns + self.interval_ns
        return self.take(engine, now_ns)

    def take(self, engine, now_ns, wait=False) -> bool:
        """Copy the state now (the stall) and write it in the background (or here, `wait`); False when input
        waits undecided in rx, or the previous snapshot is still being written (this one is skipped, counted)."""
        if engine.pending_input()[0]:
            return False  # undecided input in rx: its arrival records would be skipped by a recovery from here
        if self._thread is not None and self._thread.is_alive():
            if not wait:
                self.skipped += 1
                return False
            self._thread.join()
        state, journal = engine.state, engine.journal
        start = time.perf_counter_ns()
        if self._copy is None or len(self._copy) != len(state.arena):
            self._copy = np.empty_like(state.arena)
        np.copyto(self._copy, state.arena)
        meta = SnapshotMeta(
            seq=journal.last_seq if journal is not None else 0, taken_ns=now_ns, engine=state.config.engine.name,
            layout=state.layout.tolist(), instruments_hash=instruments_hash(state.config),
            arena_crc=0, strategy_names=list(state.strategy_names),  # the CRC of the copy: the writer's work
            deploys=[list(d) for d in state.deploys], account_specs=list(state.account_specs),
            shadows=[msgspec.structs.replace(run) for run in state.shadows],
            results=list(engine.control.results.values()))
        self.last_stall_ns = time.perf_counter_ns() - start
        self.max_stall_ns = max(self.max_stall_ns, self.last_stall_ns)
        if journal is not None:
            journal.sync()  # the records the snapshot covers are on disk before the snapshot is
        self._thread = threading.Thread(target=self._write, args=(meta, self._copy), name="snapshot", daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
        return True

    def _write(self, meta, arena):
        start = time.perf_counter()
        meta = msgspec.structs.replace(meta, arena_crc=zlib.crc32(arena))  # off the engine's thread: ~30 ms at 70 MB
        path = self.directory / f"{meta.seq:020d}{SUFFIX}"
        tmp = path.with_suffix(SUFFIX + ".tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            head = _encoder.encode(meta)
            with open(tmp, "wb") as f:
                f.write(MAGIC + LENGTH.pack(len(head)) + head)
                half = len(arena) // 2
                f.write(memoryview(arena)[:half])
                crash_point("snapshot.write")
                f.write(memoryview(arena)[half:])
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            for seq, old in snapshot_files(self.directory)[self.keep:]:
                if seq != GENESIS:  # the state the journal starts from: `replay` begins there
                    old.unlink(missing_ok=True)
            for half in self.directory.glob(f"*{SUFFIX}.tmp"):  # left by a process killed while writing
                half.unlink(missing_ok=True)
        except OSError as e:
            self.errors += 1
            log.error("snapshot at seq %d not written: %s", meta.seq, e)
            return
        self.taken += 1
        self.last_seq = meta.seq
        self.last_write_s = time.perf_counter() - start

    def close(self):
        if self._thread is not None:
            self._thread.join()

    def as_dict(self):
        return {"taken": self.taken, "skipped": self.skipped, "errors": self.errors, "last_seq": self.last_seq,
                "last_stall_us": self.last_stall_ns / 1000, "max_stall_us": self.max_stall_ns / 1000,
                "last_write_s": round(self.last_write_s, 4)}


def restore(config, meta, arena) -> EngineState:
    """The EngineState a snapshot holds, its registry included, on `config`; ValueError when the config plans
    another arena or changed a restart-only table (the message says which and what to do)."""
    planned = EngineState.build(config).layout.tolist()
    if meta.layout != planned:
        raise ValueError("the snapshot's arena was planned for other sizes (engine.toml max_* and rings, the "
                         "number of instruments or accounts): restore that config, or start --fresh")
    if meta.instruments_hash != instruments_hash(config):
        raise ValueError("instruments.toml changed since the snapshot (tick and lot sizes are restart-only): "
                         "restore it, or start --fresh")
    state = EngineState(config, arena, np.array(meta.layout, np.int64))
    state.strategy_names = list(meta.strategy_names)
    state.strategy_ids = {name: s for s, name in enumerate(state.strategy_names)}
    state.deploys = [list(d) for d in meta.deploys]
    state.account_specs = list(meta.account_specs)
    state.shadows = list(meta.shadows)
    return state
