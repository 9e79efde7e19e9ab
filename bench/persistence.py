"""Issue 10's persistence benchmarks, in one run: the journal's cost per batch and per signal under each fsync
policy against no journal, the snapshot's stall on the engine's thread against its background write, and the
time recovery takes over a journal of 1 M signal events.

`python -m bench.persistence [--quick] [--out FILE] [--dir DIR]` writes bench/results/latest/persistence.json
(or FILE) and prints a summary. Every engine here is the real one (engine/driver.py Engine, its real step, the
real EngineJournal and Snapshotter writing to DIR, a temporary directory on the repository's disk by default),
with two in-memory transports in place of sockets:
- `FeedListener`, a listener whose `poll` puts the next batch of bench signal frames (bench/frames.py
  `fill_signals`, the micro benches' workload on bench/config) into rx, as a socket's poll would;
- `LoopbackOms`, an OMS link whose `send` takes the order frames of tx and whose next `poll` answers each with an
  ACK and a FILL (bench/frames.py `fills_for`), so books stay bounded and every signal takes the accept path.
A batch is timed from `poll()` to the end of `step()`: arrivals journaled (framed into the mapped segment),
commands, run_batch, the journal's commit (fdatasync under fsync = "batch"), the orders sent, the rings
drained. Clocks are simulated (10 us a batch): only the timer is real. The figures are wall-clock on a shared
machine: the JSON records the load before and after, and nothing here asserts a time.

1. journal: for each batch size, the same stream through one engine per mode (journal off, fsync "batch",
   "interval" every 10 ms, "never"), the modes interleaved round by round so drift in the machine's load falls
   on all of them; p50/p99/p99.9 per batch and per signal; the ratio on/off per policy (issue 10's target:
   <= 1.10 with fsync every 10 ms).
2. snapshot: on the demo config and on a generated one with 1,000 strategies x 1,000 instruments (the
   positions table is strategies x instruments; each strategy lists 10 instruments): the engine thread's
   stall (Snapshotter.last_stall_ns: the arena copy, its crc32 and the metadata; and the whole `take()` call,
   which also fdatasyncs the journal and starts the writer) against the writer's time (encode, write,
   fsync, rename), and empty steps timed while the writer runs against steps with no writer.
3. recovery: a journal written by the real engine (fsync "never"), 16 signals a poll as one chunk and the OMS's
   reports, then `engine.recovery.recover(config, dir)` timed from no snapshot; signals/s and records/s; the
   recovered state's digest is compared with the live engine's.
"""
import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from adapters.base import TransportStats
from adapters.journal import JournalConfig, segments
from bench import CONFIG_DIR, RESULTS_DIR, ROOT
from bench.frames import Instruments, fill_signals, fills_for, report_frames, signal_frames
from bench.machine import machine_info, one_line
from engine.config import load_config
from engine.driver import Engine, warm_up
from engine.journal import EngineJournal
from engine.recovery import recover
from engine.snapshot import Snapshotter
from engine.state import EngineState
from sim.sink import NullOms
from wire.records import ORDER_FRAME_T, SIGNAL_FRAME_SIZE

NOW_NS = 1_767_225_600_000_000_000  # 2026-01-01, as bench/workloads.py
STEP_NS = 10_000                   # simulated time between two batches
SOURCE = 0                         # the signal frames' source field
FRAMES_PER_CHUNK = 16              # a chunk is a datagram of up to 16 signal frames
MODES = ("off", "batch", "interval", "never")
INTERVAL_MS = 10
TARGET_RATIO = 1.10                # issue 10: <= 10% with fsync every 10 ms, in process
RECOVERY_TARGET_S = 2.0            # issue 10: 1 M journaled events recovered in under 2 s
BIG = (1000, 1000)                 # strategies x instruments
BIG_INSTRUMENTS_PER_STRATEGY = 10
DEMO_DIR = ROOT / "config" / "demo"
OUT = RESULTS_DIR / "latest" / "persistence.json"

FULL = {"batch_sizes": (1, 16, 256), "batches": {1: 20_000, 16: 10_000, 256: 2_000}, "rounds": 10,
        "snapshots": 5, "idle_steps": 500, "recovery_signals": 1_000_000, "recovery_one_per_poll": 100_000}
QUICK = {"batch_sizes": (1, 16, 256), "batches": {1: 1_000, 16: 500, 256: 100}, "rounds": 2,
         "snapshots": 2, "idle_steps": 100, "recovery_signals": 20_000, "recovery_one_per_poll": 2_000}


# ---------------------------------------------------------------------------------------------- the harness
class Clock:
    """The engine's clock: simulated time, moved on by the harness."""

    def __init__(self, now=NOW_NS):
        self.now = now

    def __call__(self):
        return self.now


class FeedListener:
    """A listener (adapters/base.py contract) that delivers what `put` gave it on its next poll."""

    def __init__(self):
        self.stats = TransportStats()
        self._data = self._sizes = None

    def put(self, data, sizes):
        self._data, self._sizes = data, sizes

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        if self._data is None:
            return 0, offset
        n = len(self._sizes)
        end = offset + len(self._data)
        assert n <= max_chunks and end <= len(rx), "a bench batch must fit in rx"
        rx[offset:end] = self._data
        rx_sizes[chunk_index:chunk_index + n] = self._sizes
        self._data = None
        self.stats.chunks += n
        self.stats.bytes_in += end - offset
        return n, end


class LoopbackOms:
    """An OMS link in memory: `send` takes tx's order frames, the next `poll` answers each with ACK + FILL as one
    chunk (a TCP read of whole frames)."""

    def __init__(self, clock, capacity=1 << 14):
        self.stats = TransportStats()
        self.clock = clock
        self._out = report_frames(2 * capacity)
        self._pending = []

    def send(self, frames):
        orders = np.frombuffer(frames, ORDER_FRAME_T)
        self._pending.append(fills_for(orders, self.clock(), self._out).view(np.uint8).copy())
        self.stats.sent += 1
        self.stats.bytes_out += len(frames)
        return True

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        if not self._pending or max_chunks < 1:
            return 0, offset
        data = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        end = offset + len(data)
        if end > len(rx):
            return 0, offset
        self._pending.clear()
        rx[offset:end] = data
        rx_sizes[chunk_index] = len(data)
        self.stats.chunks += 1
        self.stats.bytes_in += len(data)
        return 1, end


class SignalStream:
    """The bench workload, `n` signals a batch, continuing from batch to batch (seq rises by one a signal)."""

    def __init__(self, config, n, frames_per_chunk=FRAMES_PER_CHUNK):
        self.instruments = Instruments(config)
        self.frames = signal_frames(n)
        self.n = n
        self.k = 0
        full, last = divmod(n, frames_per_chunk)
        self.sizes = np.array([frames_per_chunk * SIGNAL_FRAME_SIZE] * full + ([last * SIGNAL_FRAME_SIZE] if last
                                                                               else []), np.int32)

    def next(self, now_ns):
        fill_signals(self.frames, self.instruments, self.k, self.k + 1, SOURCE, now_ns)
        self.k += self.n
        return self.frames.view(np.uint8), self.sizes


class Rig:
    """One real engine on bench/config with the two in-memory transports and, unless `policy` is None, the real
    journal in `directory`."""

    def __init__(self, config, batch, policy=None, directory=None, interval_ms=INTERVAL_MS):
        self.clock = Clock()
        self.listener = FeedListener()
        self.oms = LoopbackOms(self.clock)
        self.journal = None
        if policy is not None:
            settings = JournalConfig(dir=str(directory), fsync=policy, fsync_interval_ms=interval_ms)
            self.journal = EngineJournal(settings, directory)
            self.journal.open()
        self.state = EngineState.build(config)
        self.engine = Engine(self.state, [self.listener], self.oms, clock=self.clock, journal=self.journal)
        self.stream = SignalStream(config, batch)
        self.placed = self.signals = 0
        warm_up(self.engine)

    def run(self, batches, out=None, at=0):
        """`batches` timed batches; their times (ns) go to out[at:at + batches]."""
        engine, listener, clock, stream = self.engine, self.listener, self.clock, self.stream
        timer = time.perf_counter_ns
        for b in range(batches):
            data, sizes = stream.next(clock.now)
            listener.put(data, sizes)
            t0 = timer()
            engine.poll()
            placed = engine.step(clock.now)
            t1 = timer()
            if out is not None:
                out[at + b] = t1 - t0
            self.placed += placed
            self.signals += stream.n
            clock.now += STEP_NS

    def close(self):
        if self.journal is not None:
            self.journal.close()


def percentiles(values_ns, per=1):
    v = np.asarray(values_ns, np.float64) / per
    p50, p99, p999 = np.percentile(v, [50, 99, 99.9])
    return {"p50_us": round(p50 / 1000, 3), "p99_us": round(p99 / 1000, 3), "p999_us": round(p999 / 1000, 3),
            "mean_us": round(float(v.mean()) / 1000, 3), "n": int(len(v))}


def _paused_gc():
    gc.collect()
    gc.disable()


# ---------------------------------------------------------------------------------------------- 1. the journal
def bench_journal(config, work, plan, log):
    out = {"interval_ms": INTERVAL_MS, "target": f"interval: p50 and p99 on/off <= {TARGET_RATIO}",
           "batch_sizes": {}}
    for size in plan["batch_sizes"]:
        total, rounds = plan["batches"][size], plan["rounds"]
        per_round = total // rounds
        rigs = {mode: Rig(config, size, None if mode == "off" else mode, work / f"journal-{size}-{mode}")
                for mode in MODES}
        # fsync = "batch" pays a disk flush (milliseconds here) every batch: a fifth of the batches keeps its
        # share of the run's time in line; its percentiles need no more
        counts = {mode: max(1, per_round // 5) if mode == "batch" else per_round for mode in MODES}
        times = {mode: np.zeros(counts[mode] * rounds, np.int64) for mode in MODES}
        try:
            for rig in rigs.values():  # untimed warm-up: every path compiled, pages touched, books in their cycle
                rig.run(max(10, per_round // 10))
            _paused_gc()
            try:
                for r in range(rounds):
                    order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]  # each mode first in turn
                    for mode in order:
                        rigs[mode].run(counts[mode], times[mode], r * counts[mode])
            finally:
                gc.enable()
            entry = {}
            for mode, rig in rigs.items():
                written = rig.journal.writer.bytes_written if rig.journal else 0
                syncs = rig.journal.writer.syncs if rig.journal else 0
                entry[mode] = {"per_batch": percentiles(times[mode]), "per_signal": percentiles(times[mode], size),
                               "signals": rig.signals, "orders": rig.placed, "journal_bytes": written,
                               "fsyncs": syncs}
        finally:
            for rig in rigs.values():
                rig.close()
        off = entry["off"]["per_batch"]
        ratios = {}
        for mode in MODES[1:]:
            on = entry[mode]["per_batch"]
            ratios[mode] = {k: round(on[k] / off[k], 3) for k in ("p50_us", "p99_us", "p999_us", "mean_us")}
        entry["ratio_on_off"] = ratios
        entry["interval_target_met"] = bool(ratios["interval"]["p50_us"] <= TARGET_RATIO and
                                            ratios["interval"]["p99_us"] <= TARGET_RATIO)
        out["batch_sizes"][str(size)] = entry
        log(f"journal, {size} signals a batch: " + "; ".join(
            f"{m} p50 {entry[m]['per_batch']['p50_us']:.1f} p99 {entry[m]['per_batch']['p99_us']:.1f} us"
            for m in MODES) + " | on/off p50 " + ", ".join(f"{m} x{ratios[m]['p50_us']}" for m in ratios) +
            " p99 " + ", ".join(f"{m} x{ratios[m]['p99_us']}" for m in ratios))
    return out


# ---------------------------------------------------------------------------------------------- 2. snapshots
def big_config(dest, strategies=BIG[0], instruments=BIG[1], per_strategy=BIG_INSTRUMENTS_PER_STRATEGY):
    """config/demo copied to `dest` (engine and accounts as they are), with `instruments`
    generated instruments and `strategies` strategy files (demo's momentum limits, one signal each, each
    listing `per_strategy` instruments); max_strategies and max_subscriptions raised to fit."""
    dest = Path(dest)
    dest.mkdir(parents=True)
    engine = (DEMO_DIR / "engine.toml").read_text()  # its [listen] stays: no socket is opened here
    head, sep, rest = engine.partition("\n[")
    engine = head + f"\nmax_strategies = {strategies}\nmax_subscriptions = {max(4096, strategies)}\n" + sep + rest
    (dest / "engine.toml").write_text(engine)
    shutil.copy(DEMO_DIR / "accounts.toml", dest / "accounts.toml")
    rows = []
    for i in range(instruments):
        rows.append(f"[[instruments]]\nid = {i}\nsymbol = \"I{i:05d}\"\ntick_size = 0.01\nlot_size = 1\n"
                    f"multiplier = 1.0\nprice_band_pct = 10.0\nreference_price = {100 + i % 900}.0\n")
    (dest / "instruments.toml").write_text("\n".join(rows))
    template = (DEMO_DIR / "strategies" / "momentum.toml").read_text()
    body = template[template.index("[sizing]"):]
    (dest / "strategies").mkdir()
    for s in range(strategies):
        listed = ", ".join(f'"I{(s * per_strategy + j) % instruments:05d}"' for j in range(per_strategy))
        (dest / "strategies" / f"s{s:05d}.toml").write_text(
            f'name = "s{s:05d}"\nversion = "1.0.0"\naccount = "futures"\nsignals = [{s % 1024}]\n'
            f'instruments = [{listed}]\nenabled = true\norder_type = "limit"\n\n{body}')
    return dest


def bench_snapshot(config, directory, plan, label):
    """Snapshots of an engine on `config`: the engine thread's stall and the writer's time, and empty steps
    while the writer runs against steps without one."""
    state = EngineState.build(config)
    clock = Clock()
    settings = JournalConfig(dir=str(directory), fsync="interval", fsync_interval_ms=INTERVAL_MS)
    journal = EngineJournal(settings, directory)
    journal.open()
    oms = None if config.engine.oms.kind == "sim" else NullOms()
    engine = Engine(state, [], oms, clock=clock, journal=journal)
    snapshots = Snapshotter(directory / "snapshots", interval_s=0, keep=2)
    engine.snapshots = snapshots
    warm_up(engine)
    timer = time.perf_counter_ns
    stalls, blocked, writes, idle, during = [], [], [], [], []
    try:
        for _ in range(plan["snapshots"]):
            for _ in range(plan["idle_steps"]):  # steps with no writer running
                t0 = timer()
                engine.step(clock.now)
                idle.append(timer() - t0)
                clock.now += STEP_NS
            t0 = timer()
            assert snapshots.take(engine, clock.now), "nothing waits in rx: a snapshot is taken"
            blocked.append(timer() - t0)
            stalls.append(snapshots.last_stall_ns)
            thread = snapshots._thread
            while thread.is_alive():  # the hot path goes on while the writer writes
                t0 = timer()
                engine.step(clock.now)
                during.append(timer() - t0)
                clock.now += STEP_NS
            snapshots.close()
            writes.append(snapshots.last_write_s)
        # where the stall goes, each part timed alone on this arena (best of 3): the copy, its crc32, the
        # journal's fdatasync that take() does before the writer starts
        copy = np.empty_like(state.arena)
        parts = {"copy_us": lambda: np.copyto(copy, state.arena), "crc32_us": lambda: zlib.crc32(copy),
                 "journal_sync_us": journal.sync}
        breakdown = {}
        for name, fn in parts.items():
            best = None
            for _ in range(3):
                t0 = timer()
                fn()
                best = min(best or 1 << 62, timer() - t0)
            breakdown[name] = round(best / 1000, 1)
        files = sorted((directory / "snapshots").glob("*.snapshot"))
        file_bytes = files[-1].stat().st_size if files else 0
        assert snapshots.errors == 0, "every snapshot was written"
    finally:
        snapshots.close()
        journal.close()
    ms = np.array(writes) * 1000
    return {"config": label, "strategies_max": config.engine.max_strategies,
            "strategies": len(config.strategies), "instruments": len(config.instruments),
            "arena_bytes": int(state.arena.nbytes), "file_bytes": int(file_bytes), "snapshots": len(stalls),
            "stall_us": percentiles_plain(np.array(stalls) / 1000), "stall_parts_best_us": breakdown,
            "take_blocked_us": percentiles_plain(np.array(blocked) / 1000),
            "write_ms": percentiles_plain(ms),
            "write_MB_per_s": round(file_bytes / 1e6 / (float(np.median(ms)) / 1000), 1) if len(ms) else None,
            "step_idle": percentiles(idle), "step_during_write": percentiles(during) if during else None}


def percentiles_plain(v):
    v = np.asarray(v, np.float64)
    return {"min": round(float(v.min()), 3), "median": round(float(np.median(v)), 3),
            "max": round(float(v.max()), 3)}


# ---------------------------------------------------------------------------------------------- 3. recovery
def bench_recovery(config, directory, signals, per_poll, log):
    rig = Rig(config, per_poll, "never", directory)
    t0 = time.perf_counter()
    rig.run(signals // per_poll)
    rig.engine.poll()  # the OMS's answer to the last batch, decided too
    rig.engine.step(rig.clock.now)
    write_s = time.perf_counter() - t0
    live_digest = rig.state.digest()
    records = rig.journal.last_seq
    rig.close()
    journal_bytes = sum(p.stat().st_size for _, p in segments(directory))
    state = None
    _paused_gc()
    try:
        t0 = time.perf_counter()
        state, info, _ = recover(config, directory)
        seconds = time.perf_counter() - t0
    finally:
        gc.enable()
    out = {"signals": rig.signals, "orders": rig.placed, "records": records, "signals_per_record": per_poll,
           "journal_bytes": journal_bytes, "records_replayed": info.records_replayed,
           "recover_s": round(seconds, 4), "recover_reported_s": round(info.seconds, 4),
           "signals_per_s": round(rig.signals / seconds), "records_per_s": round(records / seconds),
           "MB_per_s": round(journal_bytes / 1e6 / seconds, 1), "write_s": round(write_s, 3),
           "target_s": RECOVERY_TARGET_S, "target_scaled_s": round(RECOVERY_TARGET_S * signals / 1_000_000, 4),
           "target_met": bool(seconds <= RECOVERY_TARGET_S * signals / 1_000_000),
           "digest_match": state.digest() == live_digest}
    log(f"recovery, {per_poll} signal(s) a poll: {out['signals']:,} signals in {records:,} records "
        f"({journal_bytes / 1e6:.1f} MB) recovered in {seconds:.3f} s ({out['signals_per_s']:,} signals/s, "
        f"{out['records_per_s']:,} records/s; target {out['target_scaled_s']} s); "
        f"digest {'equal' if out['digest_match'] else 'DIFFERS'}")
    return out


# ---------------------------------------------------------------------------------------------- the run
def run(quick=False, out_path=OUT, work_dir=None, log=print):
    plan = QUICK if quick else FULL
    load_before = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="persistence-", dir=work_dir))
    started = time.perf_counter()
    try:
        bench = load_config(CONFIG_DIR)
        result = {"quick": quick, "machine": machine_info(), "loadavg_before": load_before,
                  "work_dir": str(work), "plan": {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                                                  plan.items()}}
        log(f"persistence bench ({'quick' if quick else 'full'}): {one_line(result['machine'])}")
        result["journal"] = bench_journal(bench, work, plan, log)
        snaps = {}
        snaps["demo"] = bench_snapshot(load_config(DEMO_DIR), work / "snap-demo", plan, "config/demo")
        t0 = time.perf_counter()
        big = load_config(big_config(work / "config-big"))
        load_s = time.perf_counter() - t0
        snaps["1000x1000"] = bench_snapshot(big, work / "snap-big", plan,
                                            f"{BIG[0]} strategies x {BIG[1]} instruments (generated from config/"
                                            f"demo, {BIG_INSTRUMENTS_PER_STRATEGY} instruments listed a strategy)")
        snaps["1000x1000"]["config_load_s"] = round(load_s, 3)
        for key, s in snaps.items():
            log(f"snapshot {key}: arena {s['arena_bytes'] / 1e6:.1f} MB; engine thread stalled "
                f"{s['stall_us']['median']:.0f} us (take() {s['take_blocked_us']['median']:.0f} us, max "
                f"{s['take_blocked_us']['max']:.0f}) vs background write {s['write_ms']['median']:.1f} ms; step "
                f"p99 {s['step_idle']['p99_us']:.1f} us idle, "
                f"{s['step_during_write']['p99_us'] if s['step_during_write'] else float('nan'):.1f} us during write")
        result["snapshot"] = snaps
        del big
        gc.collect()
        result["recovery"] = bench_recovery(bench, work / "recovery", plan["recovery_signals"], 16, log)
        # the same journal's worst case, one signal a poll (one arrival record a signal): fewer signals, the
        # rate extrapolated
        one = bench_recovery(bench, work / "recovery-1", plan["recovery_one_per_poll"], 1, log)
        one["extrapolated_1M_s"] = round(1_000_000 / one["signals_per_s"], 3)
        result["recovery_one_signal_a_poll"] = one
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(time.perf_counter() - started, 1)
    log(f"load average before {load_before}, after {result['loadavg_after']}; {result['seconds']} s")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out_path}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.persistence", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (~20 s), 20k signals recovered")
    p.add_argument("--out", default=str(OUT), help=f"the JSON to write (default {OUT.relative_to(ROOT)})")
    p.add_argument("--dir", default=None, help="where journals and snapshots are written (a temporary directory "
                                               "is made there and removed; default the system's)")
    args = p.parse_args(argv)
    run(args.quick, args.out, args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
