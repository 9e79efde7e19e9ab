"""An optional mirror of engine state in Redis, for services that watch the engine (risk monitor, dashboard).

It must never block or stop trading. The engine thread calls `submit(record)` between batches: an append to a
bounded queue, nothing else (a full queue drops the record and counts it). A writer thread of its own takes the
records, writes them to Redis in MULTI/EXEC transactions, and reconnects with exponential backoff while Redis is
down (failures counted). It never raises into the engine; bad records are counted by reason and skipped.

Catch-up instead of buffering: every record carries the engine's sequence number (`seq`: 1, 2, 3, ... one
sequence for all records, assigned by the feeder: engine/mirror.py). Each transaction also sets `<ns>:seq` to the
last sequence it wrote, so what Redis holds and the sequence it says it holds cannot disagree, whatever broke
when. On every (re)connect, and every IDLE_CHECK_S while idle, the writer reads that sequence back from Redis;
whenever the queue does not continue it (a record dropped at a full queue, a transaction lost with a connection,
a Redis that lost its data) it calls `since(seq)`, the callback given at construction, for the records after it,
so nothing is missing and nothing is written twice. A Redis that lost its data (restarted without persistence)
says seq 0 and gets everything the callback still has; sequences it no longer has are counted `lost` and passed
over. The contract with the feeder: a record is kept for `since` before it is submitted, and `since` may be
called from the writer thread at any time (it must be safe to call while the engine appends). engine/mirror.py
answers it from a bounded in-memory replay log, and re-publishes every strategy's hash on each resync.

What it writes, under `<key_prefix>:<engine name>` (`<ns>` below):
    <ns>:strategy:<name>  hash, replaced whole by each StrategySnapshot: seq, ts_ns, state, version, deploy,
                          realized, unrealized, fees, and position:<symbol> = quantity in units
    <ns>:strategies       set of the strategy names that have a hash
    <ns>:events           stream (XADD MAXLEN ~ stream_max_length) of StateChange and Fill records, one entry
                          per record, fields: kind, seq and the record's fields
    <ns>:seq              the last sequence written
    <ns>:run              the run that wrote it (set with every transaction): a new engine run starts its
                          sequence at 1 again; the writer takes a seq written by another run as 0
Numbers are written as text: ints in decimal, floats as Python's repr (exact round trip).
"""
import collections
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Callable, Iterable

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from adapters.base import Host, Port

KEY_PART_PATTERN = r"^[A-Za-z0-9_.-]+$"
KeyPart = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=KEY_PART_PATTERN)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


YIELD_EVERY = 16   # records the writer prepares between two offers of the GIL to the engine's thread
IDLE_CHECK_S = 0.5  # an idle writer reads <ns>:seq back this often: a Redis restarted empty is found and refilled


class RedisMirrorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: Host = "127.0.0.1"
    port: Port = 6379
    db: Annotated[int, msgspec.Meta(ge=0, le=1 << 16)] = 0
    key_prefix: KeyPart = "orchestrator"       # keys are <key_prefix>:<engine name>:...
    queue_size: Annotated[int, msgspec.Meta(ge=1, le=1 << 22)] = 65_536  # records waiting for the writer
    stream_max_length: PositiveInt = 100_000   # XADD MAXLEN ~: the events stream keeps about this many
    backoff_min_ms: Annotated[int, msgspec.Meta(ge=1, le=600_000)] = 100   # reconnect waits: doubled per failure
    backoff_max_ms: Annotated[int, msgspec.Meta(ge=1, le=600_000)] = 5_000
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 1_000     # connect and every command
    batch_records: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 512    # records per transaction at most

    def __post_init__(self):
        if self.backoff_max_ms < self.backoff_min_ms:
            raise ValueError(f"`backoff_max_ms`: Expected int >= backoff_min_ms ({self.backoff_min_ms}), "
                             f"got {self.backoff_max_ms}")


# ---------------------------------------------------------------------------------------------- records
class StrategySnapshot(msgspec.Struct, frozen=True, kw_only=True, tag="snapshot"):
    """A strategy's state as of `seq`: replaces its hash."""
    seq: int
    ts_ns: int
    strategy: str
    state: str                  # STATE_NAMES
    version: str                # the running deploy's version label
    deploy: int                 # the running deploy's number
    positions: dict[str, int]   # symbol -> quantity in units
    realized: float
    unrealized: float
    fees: float


class StateChange(msgspec.Struct, frozen=True, kw_only=True, tag="state_change"):
    """A lifecycle transition: an entry in the events stream."""
    seq: int
    ts_ns: int
    strategy: str
    before: str                 # STATE_NAMES
    after: str
    cause: str                  # the event (EVENT_NAMES: "pause", "trip_halt", ...) or the policy that moved it


class Fill(msgspec.Struct, frozen=True, kw_only=True, tag="fill"):
    """A fill applied to a strategy's books: an entry in the events stream."""
    seq: int
    ts_ns: int
    strategy: str
    deploy: int
    instrument: str
    order_id: int
    side: int                   # 1 buy, -1 sell
    qty: int                    # units
    price: float
    fee: float


Record = StrategySnapshot | StateChange | Fill
RECORD_TYPES = (StrategySnapshot, StateChange, Fill)
_EVENT_TYPES = (StateChange, Fill)
_DECODERS = {t: msgspec.msgpack.Decoder(t) for t in RECORD_TYPES}
_ENCODER = msgspec.msgpack.Encoder()


@dataclass(slots=True)
class MirrorStats:
    # the engine's side (submit)
    submitted: int = 0          # submit() calls
    dropped: int = 0            # queue full: not queued (catch-up writes them later)
    invalid_type: int = 0       # not a StrategySnapshot, StateChange or Fill
    invalid_seq: int = 0        # seq not an int >= 1
    # the writer's side
    invalid_fields: int = 0     # a field of the wrong type (e.g. a position that is not an int): skipped
    written: int = 0            # records written (hash or stream)
    snapshots: int = 0
    events: int = 0
    skipped: int = 0            # records Redis already had (seq <= its seq): a catch-up wrote them first
    catchups: int = 0           # since() calls
    caught_up: int = 0          # records written from since()
    catchup_errors: int = 0     # since() raised, or yielded something that is not a record
    lost: int = 0               # sequences neither the queue nor since() could give (the journal lacks them)
    connects: int = 0           # connections made (the first one included)
    connect_failures: int = 0   # attempts that failed (Redis down or unreachable)
    disconnects: int = 0        # connections lost while writing
    redis_resets: int = 0       # Redis said a lower seq than the mirror had written: it lost data
    errors: int = 0             # unexpected errors in the writer (a bug): counted, the writer goes on

    def as_dict(self):
        return asdict(self)


class RedisMirror:
    """Mirror records into Redis from a writer thread. See the module docstring for what and why. `resyncs` (the
    connects plus the Redis resets seen) changes whenever Redis may have lost what was written: the engine then
    re-publishes whatever must be whole in Redis (engine/mirror.py).

        mirror = RedisMirror(config, engine_name, since=journal.since)
        mirror.open()             # starts the writer; it connects in the background
        mirror.submit(record)     # engine thread, between batches: never blocks, never raises
        mirror.flush(timeout_s)   # optional, e.g. at shutdown: True once everything submitted is in Redis
        mirror.close()
    """

    def __init__(self, config: RedisMirrorConfig, engine_name: str,
                 since: Callable[[int], Iterable[Record]], run_id: str | None = None):
        self.config = config
        self.run_id = run_id or f"{time.time_ns()}-{os.getpid()}"  # this run's sequence: see <ns>:run
        self.engine_name = msgspec.convert(engine_name, KeyPart)
        self.namespace = f"{config.key_prefix}:{self.engine_name}"
        self.keys = _Keys(self.namespace)
        self.since = since
        self.stats = MirrorStats()
        self._queue = collections.deque()
        self._size = config.queue_size
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_submitted = 0     # highest seq queued or dropped (flush waits for it)
        self._written = 0            # the seq Redis holds, as of the last transaction or connect
        self._client = None
        self._thread = None

    # ------------------------------------------------------------------------------------------- engine side
    def submit(self, record) -> bool:
        """Queue a record for the writer; False (counted) when the queue is full or the record is not valid."""
        stats = self.stats
        stats.submitted += 1
        if type(record) not in RECORD_TYPES:
            stats.invalid_type += 1
            return False
        seq = record.seq
        if type(seq) is not int or seq < 1:
            stats.invalid_seq += 1
            return False
        if len(self._queue) >= self._size:
            stats.dropped += 1
            if seq > self._last_submitted:  # the writer sees the gap and asks since() for it
                self._last_submitted = seq
            return False
        self._queue.append(record)
        if seq > self._last_submitted:  # after the append: the writer never takes a queued record for a gap
            self._last_submitted = seq
        if not self._wake.is_set():
            self._wake.set()
        return True

    @property
    def written_seq(self) -> int:
        """The last sequence Redis holds (as the writer last saw it)."""
        return self._written

    @property
    def resyncs(self) -> int:
        return self.stats.connects + self.stats.redis_resets

    @property
    def queued(self) -> int:
        """Records waiting for the writer."""
        return len(self._queue)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def flush(self, timeout_s: float) -> bool:
        """Wait up to timeout_s until everything submitted so far is in Redis; True if it is."""
        target = self._last_submitted
        deadline = time.monotonic() + timeout_s
        while self._written < target or self._queue:
            if time.monotonic() > deadline or self._thread is None:
                return False
            time.sleep(0.005)
        return True

    def open(self):
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"redis-mirror-{self.engine_name}", daemon=True)
        self._thread.start()

    def close(self):
        """Stop the writer (what is still queued stays unwritten: the journal has it) and close the connection."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._thread = None

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------------------- writer thread
    def _run(self):
        """Connect (backing off while Redis is down), then write; a lost connection goes back to connecting.
        Nothing ends this loop but close(): an unexpected error is counted and the loop goes on."""
        min_s, max_s = self.config.backoff_min_ms / 1000, self.config.backoff_max_ms / 1000
        backoff = min_s
        try:
            while not self._stop.is_set():
                try:
                    if self._client is None:
                        if not self._connect():
                            self._stop.wait(backoff)
                            backoff = min(backoff * 2, max_s)
                            continue
                        backoff = min_s
                    self._work()
                except _RedisChanged:  # resynced: the next round writes from Redis's seq (catch-up if need be)
                    pass
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    self.stats.disconnects += 1
                    self._disconnect()
                except redis.RedisError:  # Redis refused a command (e.g. out of memory): retry from its seq
                    self.stats.disconnects += 1
                    self._disconnect()
                    self._stop.wait(backoff)
                except Exception:  # a bug here must not end the mirror: count it, start over from Redis's seq
                    self.stats.errors += 1
                    self._disconnect()
                    self._stop.wait(backoff)
        finally:
            self._disconnect()

    def _connect(self):
        timeout = self.config.timeout_ms / 1000
        client = None
        try:
            client = redis.Redis(host=self.config.host, port=self.config.port, db=self.config.db,
                                 socket_timeout=timeout, socket_connect_timeout=timeout,
                                 retry=Retry(NoBackoff(), 0), single_connection_client=True)
            stored = client.mget(self.keys.seq, self.keys.run)
        except (redis.RedisError, OSError):
            if client is not None:
                client.close()
            self.stats.connect_failures += 1
            return False
        self._client = client
        self.stats.connects += 1
        self._resync(stored)
        return True

    def _ours(self, stored):
        """`stored`: Redis's (seq, run). A seq another run wrote (an earlier engine run into this namespace) is
        not ours: for this run it is 0, and its first transaction takes the namespace over."""
        seq, run = stored
        return int(seq) if seq is not None and run is not None and run.decode() == self.run_id else 0

    def _resync(self, stored):
        seq = self._ours(stored)
        if seq < self._written:
            self.stats.redis_resets += 1
        self._written = seq

    def _disconnect(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def _work(self):
        """One round: write what is queued (a jump in seq is a gap, filled from since() first); with nothing
        queued, make sure Redis has everything submitted (records dropped, or lost with a failed transaction,
        come from since()); else wait for records. The queue is used first: since() only fills gaps."""
        batch = self._take()
        if batch:
            self._write_queued(batch)
        elif self._last_submitted > self._written and not self._queue:
            self._catch_up(self._last_submitted)
        elif not self._wake.wait(IDLE_CHECK_S):  # idle: is Redis still there, and does it still hold our seq?
            self._resync(self._client.mget(self.keys.seq, self.keys.run))  # a Redis found empty is refilled
        else:
            self._wake.clear()

    def _take(self):
        queue, batch = self._queue, []
        for _ in range(self.config.batch_records):
            try:
                batch.append(queue.popleft())
            except IndexError:
                break
        return batch

    def _write_queued(self, batch):
        try:
            self._write_batch(batch)
        except _RedisChanged:  # Redis lost data: the batch goes back first in line (what it already had is skipped)
            self._queue.extendleft(reversed(batch))
            raise

    def _write_batch(self, batch):
        pending, last = [], self._written
        for k, record in enumerate(batch):
            seq = record.seq
            if seq <= last:
                self.stats.skipped += 1
                continue
            if seq > last + 1:  # a gap (dropped, or lost with a failed transaction): the journal has it
                self._transact(pending)
                pending = []
                if not self._catch_up(seq - 1):
                    self._queue.extendleft(reversed(batch[k:]))  # since() failed: keep them for the retry
                    return
                last = self._written
                if seq <= last:
                    self.stats.skipped += 1
                    continue
            pending.append(record)
            last = seq
        self._transact(pending)

    def _catch_up(self, target):
        """Write every record after Redis's seq that since() gives, in transactions of batch_records; then, if
        Redis's seq is still below `target` (a sequence known to exist), count the rest as lost and move past
        it. False when since() failed (retried later: nothing is counted lost for it)."""
        self.stats.catchups += 1
        pending = []
        try:
            records = iter(self.since(self._written))
        except Exception:
            return self._journal_failed(pending)
        while not self._stop.is_set():
            try:
                record = next(records)
            except StopIteration:
                break
            except Exception:  # the journal's callback failed: write what it gave, retry the rest later
                return self._journal_failed(pending)
            if type(record) not in RECORD_TYPES or type(record.seq) is not int:
                self.stats.catchup_errors += 1
                continue
            if record.seq <= (pending[-1].seq if pending else self._written):
                continue  # one Redis has, or out of order: never written twice
            if record.seq > target:
                break  # the rest is the queue's: taken from since() it would pass over queued records it lacks
            pending.append(record)
            if len(pending) >= self.config.batch_records:
                self.stats.caught_up += self._transact(pending)
                pending = []
        else:
            return False  # closing
        self.stats.caught_up += self._transact(pending, up_to=target)
        return True

    def _journal_failed(self, pending):
        self.stats.catchup_errors += 1
        self.stats.caught_up += self._transact(pending)
        self._stop.wait(self.config.backoff_min_ms / 1000)
        return False

    def _transact(self, records, up_to=0):
        """Write records (in seq order, all after Redis's seq) and the new seq, max(last record, up_to), in one
        MULTI/EXEC; return how many were written. Sequences skipped over are counted lost; records with a field
        of the wrong type are counted and skipped (their seq still passes)."""
        last = max(records[-1].seq if records else 0, up_to)
        if last <= self._written:
            return 0
        keys, stats = self.keys, self.stats
        pipe = self._client.pipeline(transaction=True)
        pipe.watch(keys.seq, keys.run)  # what Redis holds must still be what the writer thinks, up to EXEC
        stored = pipe.mget(keys.seq, keys.run)
        if self._ours(stored) != self._written:  # Redis lost data (or another run wrote) since the last look
            pipe.reset()
            self._resync(stored)
            raise _RedisChanged
        pipe.multi()
        written = snapshots = lost = invalid = 0
        expected = self._written + 1
        for k, record in enumerate(records):
            if k % YIELD_EVERY == YIELD_EVERY - 1:
                time.sleep(0)  # let the engine's thread have the GIL: it never waits out a whole switch interval
            lost += record.seq - expected
            expected = record.seq + 1
            fields = _fields(record)
            if fields is None:
                invalid += 1
                continue
            if type(record) is StrategySnapshot:
                key = keys.strategy(record.strategy)
                pipe.delete(key)
                pipe.hset(key, mapping=fields)
                pipe.sadd(keys.strategies, record.strategy)
                snapshots += 1
            else:
                pipe.xadd(keys.events, fields, maxlen=self.config.stream_max_length, approximate=True)
            written += 1
        lost += last + 1 - expected
        pipe.set(keys.seq, last)
        pipe.set(keys.run, self.run_id)
        try:
            pipe.execute()
        except redis.WatchError:  # changed between the look and EXEC: nothing was written; look again
            self._resync(self._client.mget(keys.seq, keys.run))
            raise _RedisChanged from None
        self._written = last
        stats.written += written
        stats.snapshots += snapshots
        stats.events += written - snapshots
        stats.lost += lost
        stats.invalid_fields += invalid
        return written


class _RedisChanged(Exception):
    """Redis's seq is not what the writer thought (it lost data while connected, e.g. FLUSHALL, or another run
    wrote): the transaction was not made, the writer resynced."""


class _Keys:
    def __init__(self, namespace):
        self.seq = f"{namespace}:seq"
        self.run = f"{namespace}:run"
        self.events = f"{namespace}:events"
        self.strategies = f"{namespace}:strategies"
        self._strategy = f"{namespace}:strategy:"

    def strategy(self, name):
        return self._strategy + name


def _fields(record):
    """The Redis fields of a record as text, or None when a field has the wrong type (checked by a msgpack round
    trip through the record's own type, which also accepts NaN and infinities, as P&L can be)."""
    try:
        record = _DECODERS[type(record)].decode(_ENCODER.encode(record))
    except (msgspec.ValidationError, msgspec.EncodeError, TypeError, ValueError):
        return None
    out = {"seq": str(record.seq)}
    if type(record) is not StrategySnapshot:
        out["kind"] = type(record).__struct_config__.tag
    for name in record.__struct_fields__:
        value = getattr(record, name)
        if name == "positions":
            for symbol, qty in value.items():
                out[f"position:{symbol}"] = str(qty)
        elif name != "seq":
            out[name] = repr(value) if type(value) is float else str(value)
    return out
