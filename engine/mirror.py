"""The engine's side of the Redis mirror (adapters/redis_mirror.py): records built from the engine's state, fed to
the mirror's writer thread between batches, never in a batch. docs/redis.md says what a reader finds.

`MirrorFeed` is two things to the engine:
- a batch listener (`on_batch`, after every batch): the batch's fills are copied into a preallocated staging
  array, nothing else (no Python object per fill; a full staging array counts `fills_overflow`);
- housekeeping (`housekeeping(now_ns)`, from Engine.maintain, between batches every heartbeat): the staged fills
  become Fill records, lifecycle moves (the state column against the one seen last) become StateChange records,
  and strategies that changed (a fill, a move, or their P&L or positions on the snapshot interval) get a
  StrategySnapshot. Each record gets the next `seq`, is kept in a bounded replay log and goes to the writer's
  bounded queue (`RedisMirror.submit`: never a wait).

Catch-up, in two parts. The stream: the writer asks `since(seq)` for what Redis lacks after an outage (a full
queue, a transaction lost with a connection, a Redis restarted empty): the replay log answers with the records
it still has (`replay_records` of them), older ones are counted `lost` by the writer. The hashes: every time the
writer (re)connects, the next housekeeping re-publishes a snapshot of every strategy, so what Redis holds of
each strategy is whole again one heartbeat after Redis is back, however long it was gone.
"""
import collections
import logging
import threading

import numpy as np

from adapters.redis_mirror import Fill, RedisMirror, StateChange, StrategySnapshot
from kernels.dtypes import FILL_T, HALTED, NO_TRIP, REDUCING, STATE_NAMES, TRIP_NAMES

log = logging.getLogger("orchestrator.mirror")


def strategy_snapshot(state, s, seq, ts_ns) -> StrategySnapshot:
    """Strategy id `s` of `state` (an EngineState) as a mirror record: its state, running deploy, the positions
    it may trade, holds or has working orders in, and its P&L."""
    row = state.strategies[s]
    positions = state.positions[s]
    held = {symbol: int(p["qty"]) for symbol, p in zip(state.instrument_symbols, positions)
            if p["allowed"] or p["qty"] or p["open_buy"] or p["open_sell"]}  # the pairs state.snapshot() lists
    return StrategySnapshot(
        seq=int(seq), ts_ns=int(ts_ns), strategy=state.strategy_names[s], state=STATE_NAMES[int(row["state"])],
        version=state.deploys[s][-1].version, deploy=int(row["deploy"]), positions=held,
        realized=float(row["realized"]), unrealized=float(row["unrealized"]), fees=float(row["fees"]))


class FeedStats:
    """The engine side's counts (the writer's own are RedisMirror.stats)."""

    def __init__(self):
        self.records = 0          # records made (each got a seq and went to submit)
        self.fills = 0            # Fill records
        self.state_changes = 0    # StateChange records
        self.snapshots = 0        # StrategySnapshot records
        self.republished = 0      # full re-publishes of every strategy (at start and after each (re)connect)
        self.fills_overflow = 0   # fills that found the staging array full between two housekeepings: not mirrored
        self.errors = 0           # housekeeping failures (a bug): counted, logged once, trading goes on

    def as_dict(self):
        return dict(vars(self))


class MirrorFeed:
    """Feeds a RedisMirror from an engine's state (see the module docstring). Engine thread only, except `since`,
    which the writer thread calls (the replay log is behind a lock)."""

    def __init__(self, state, settings, mirror_factory=RedisMirror, control=None):
        """`settings`: the [redis] table (engine/config/schema.py Redis); `control`: the engine's Control, whose
        results name the commands that moved strategies (a StateChange's cause)."""
        self.state = state
        self.control = control
        self._results_seen = 0 if control is None else len(control.results)
        self.settings = settings
        self.stats = FeedStats()
        self.seq = 0
        self._log = collections.deque(maxlen=settings.replay_records)
        self._lock = threading.Lock()
        self._staged = np.zeros(settings.queue_size, FILL_T)
        self._n_staged = 0
        self._states = state.strategies["state"][:len(state.strategy_names)].copy()  # the states as last seen
        self._published = {}                   # strategy id -> what its last snapshot said (without seq, time)
        self._dirty = set()                    # strategies with a fill or a move since their last snapshot
        self._next_snapshot_ns = 0
        self._resyncs_seen = 0
        self._republish = True
        self.mirror = mirror_factory(settings.mirror_config(), state.config.engine.name, since=self.since)

    def open(self):
        self.mirror.open()

    def close(self):
        self.mirror.close()

    # ------------------------------------------------------------------------------------------- engine thread
    def on_batch(self, orders, rejects, fills, now_ns):
        """After a batch: copy its fills into the staging array (views of the fills ring, released after this)."""
        for view in fills:
            n = len(view)
            room = len(self._staged) - self._n_staged
            if n > room:
                self.stats.fills_overflow += n - room
                n = room
            if n:
                self._staged[self._n_staged:self._n_staged + n] = view[:n]
                self._n_staged += n

    def housekeeping(self, now_ns):
        """Between batches: the staged fills, the lifecycle moves and the due snapshots become records. Never
        raises into the engine: a failure (a bug) is counted and logged once, and trading goes on."""
        try:
            self._housekeeping(now_ns)
        except Exception:
            self.stats.errors += 1
            if self.stats.errors == 1:
                log.exception("redis mirror: building records failed (trading goes on; counted as errors)")

    def _housekeeping(self, now_ns):
        state = self.state
        resyncs = self.mirror.resyncs
        if resyncs != self._resyncs_seen:  # (re)connected, or Redis came back empty: the hashes are written again
            self._resyncs_seen = resyncs
            self._republish = True
        n = len(state.strategy_names)
        self._fills(now_ns)
        self._moves(n, now_ns)
        interval_due = now_ns >= self._next_snapshot_ns
        if interval_due:
            self._next_snapshot_ns = now_ns + self.settings.snapshot_interval_ms * 1_000_000
        if self._republish:
            self._republish = False
            self.stats.republished += 1
            for s in range(n):
                self._snapshot(s, now_ns, force=True)
        else:  # a strategy whose snapshot would say what its last one said gets none
            for s in (range(n) if interval_due else sorted(self._dirty)):
                self._snapshot(s, now_ns)
        self._dirty.clear()

    def final(self, now_ns, timeout_s):
        """At a clean stop: the last records, then up to `timeout_s` for the writer to have them in Redis."""
        self.housekeeping(now_ns)
        return self.mirror.flush(timeout_s)

    def _fills(self, now_ns):
        state = self.state
        names, symbols = state.strategy_names, state.instrument_symbols
        staged, self._n_staged = self._staged[:self._n_staged].tolist(), 0  # tuples in FILL_T's field order
        for f in staged:
            (order_id, s, deploy, _account, i, side, _exec_type, _flags, qty, _leaves, price, fee, *_rest) = f
            self._emit(Fill(seq=self._next(), ts_ns=int(f[_TS]), strategy=names[s], deploy=deploy,
                            instrument=symbols[i], order_id=order_id, side=side, qty=qty, price=price, fee=fee))
            self.stats.fills += 1
            self._dirty.add(s)

    def _moves(self, n, now_ns):
        state = self.state
        current = state.strategies["state"][:n]
        seen = self._states
        changed = np.flatnonzero(current[:len(seen)] != seen[:n]).tolist()
        commands = self._commands()
        for s in changed:
            name = state.strategy_names[s]
            before, after = int(seen[s]), int(current[s])
            trip = int(state.strategies[s]["trip_cause"])
            if name in commands:
                cause = f"command:{commands[name]}"
            elif trip != NO_TRIP and after in (HALTED, REDUCING):
                cause = f"breaker:{TRIP_NAMES[trip]}"
            elif before in (HALTED, REDUCING):
                cause = "cooldown"
            else:
                cause = "engine"
            self._emit(StateChange(seq=self._next(), ts_ns=now_ns, strategy=name, before=STATE_NAMES[before],
                                   after=STATE_NAMES[after], cause=cause))
            self.stats.state_changes += 1
            self._dirty.add(s)
        self._states = current.copy()

    def _commands(self):
        """Strategy name -> the last command applied since the last housekeeping that names it (its result's
        `strategy`, or one of the strategies a halt_all `moved`)."""
        if self.control is None or len(self.control.results) == self._results_seen:
            return {}
        results = list(self.control.results.values())
        fresh, self._results_seen = results[self._results_seen:], len(results)
        named = {}
        for result in fresh:
            detail = result.detail if result.ok and isinstance(result.detail, dict) else {}
            for name in [detail.get("strategy"), *detail.get("moved", ())]:
                if isinstance(name, str):
                    named[name] = result.command
        return named

    def _snapshot(self, s, now_ns, force=False):
        """A snapshot of strategy s if what it says differs from its last one (or `force`)."""
        record = strategy_snapshot(self.state, s, 0, now_ns)
        said = (record.strategy, record.state, record.version, record.deploy, record.positions, record.realized,
                record.unrealized, record.fees)
        if not force and self._published.get(s) == said:
            return
        self._published[s] = said
        self._emit(StrategySnapshot(**{**_fields(record), "seq": self._next()}))
        self.stats.snapshots += 1

    def _next(self):
        self.seq += 1
        return self.seq

    def _emit(self, record):
        if self._log.maxlen:
            with self._lock:
                self._log.append(record)
        self.stats.records += 1
        self.mirror.submit(record)

    # ------------------------------------------------------------------------------------------- writer thread
    def since(self, seq):
        """The records after `seq` the replay log still has, in seq order (the writer's catch-up)."""
        with self._lock:
            if not self._log or self._log[-1].seq <= seq:
                return []
            return [r for r in self._log if r.seq > seq]

    def report(self):
        mirror = self.mirror
        return {"connected": mirror.connected, "last_seq": self.seq, "written_seq": mirror.written_seq,
                "queued": mirror.queued, **self.stats.as_dict(), "writer": mirror.stats.as_dict()}


_TS = FILL_T.names.index("ts_ns")


def _fields(record):
    return {name: getattr(record, name) for name in record.__struct_fields__}
