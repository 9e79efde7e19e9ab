"""adapters/redis_mirror.py against a real redis-server: records land as hashes and stream entries; Redis killed
and restarted mid-run, frozen, or never there; a full queue; bad records; a journal that fails or lacks records.

"Never blocks" is shown by counting: every submit() returns (True or False) while Redis is down or frozen, and
the counts add up; no test measures time."""
import os
import signal
import threading

import msgspec
import pytest
import redis

from adapters.redis_mirror import Fill, RedisMirror, RedisMirrorConfig, StateChange, StrategySnapshot
from tests.infra.servers import RedisServer, free_port, wait_until

WAIT_S = 60


class Journal:
    """The engine's journal as the mirror sees it: records by seq, `since(seq)` safe while others append."""

    def __init__(self):
        self.records = []
        self.lock = threading.Lock()
        self.calls = 0

    def append(self, record):
        with self.lock:
            self.records.append(record)
        return record

    def since(self, seq):
        self.calls += 1
        with self.lock:
            return [r for r in self.records if r.seq > seq]


def snapshot(seq, strategy="momentum", qty=0, state="ACTIVE"):
    return StrategySnapshot(seq=seq, ts_ns=1_000 + seq, strategy=strategy, state=state, version="1.2.0", deploy=1,
                            positions={"ESZ5": qty, "NQZ5": -qty}, realized=seq * 1.5, unrealized=-0.25 * seq,
                            fees=0.1 * seq)


def fill(seq, strategy="momentum"):
    return Fill(seq=seq, ts_ns=1_000 + seq, strategy=strategy, deploy=1, instrument="ESZ5", order_id=(seq << 24) | 7,
                side=1 if seq % 2 else -1, qty=seq % 5 + 1, price=6000.25 + seq, fee=0.5)


def change(seq, strategy="momentum", before="ACTIVE", after="HALTED", cause="trip_halt"):
    return StateChange(seq=seq, ts_ns=1_000 + seq, strategy=strategy, before=before, after=after, cause=cause)


def mixed(seq):
    """Record seq of a run: a fill most of the time, a state change now and then, a snapshot every 10th."""
    strategy = ("momentum", "pairs")[seq % 2]
    if seq % 10 == 0:
        return snapshot(seq, strategy, qty=seq)
    return change(seq, strategy) if seq % 7 == 0 else fill(seq, strategy)


def config(server, **keys):
    return msgspec.convert({"host": server.host, "port": server.port, "backoff_min_ms": 10, "backoff_max_ms": 200,
                            "timeout_ms": 500, **keys}, RedisMirrorConfig)


@pytest.fixture
def client(redis_server):
    c = redis.Redis(redis_server.host, redis_server.port, decode_responses=True, socket_timeout=5)
    try:
        yield c
    finally:
        c.close()


def stream(client, ns="orchestrator:demo"):
    return [fields for _, fields in client.xrange(f"{ns}:events")]


def assert_mirrors(client, records, ns="orchestrator:demo"):
    """Redis holds exactly the data of `records`: every event once in seq order, each strategy's hash as its
    last snapshot, the seq of the last record."""
    events = [r for r in records if not isinstance(r, StrategySnapshot)]
    entries = stream(client, ns)
    assert [int(e["seq"]) for e in entries] == [r.seq for r in events], "every event once, in order"
    for entry, record in zip(entries, events):
        assert entry == expected_fields(record)
    last = {}
    for r in records:
        if isinstance(r, StrategySnapshot):
            last[r.strategy] = r
    assert client.smembers(f"{ns}:strategies") == set(last)
    for name, r in last.items():
        assert client.hgetall(f"{ns}:strategy:{name}") == expected_fields(r)
    assert int(client.get(f"{ns}:seq")) == max(r.seq for r in records)


def expected_fields(record):
    out = {"seq": str(record.seq)}
    if not isinstance(record, StrategySnapshot):
        out["kind"] = type(record).__struct_config__.tag
    for name in record.__struct_fields__:
        value = getattr(record, name)
        if name == "positions":
            out.update({f"position:{k}": str(v) for k, v in value.items()})
        elif name != "seq":
            out[name] = repr(value) if isinstance(value, float) else str(value)
    return out


# ---------------------------------------------------------------------------------------------- config
def test_config_when_decoded_empty_then_loopback_defaults():
    c = msgspec.convert({}, RedisMirrorConfig)
    assert (c.host, c.port, c.db, c.key_prefix, c.queue_size, c.stream_max_length) == \
        ("127.0.0.1", 6379, 0, "orchestrator", 65_536, 100_000)
    assert (c.backoff_min_ms, c.backoff_max_ms, c.timeout_ms, c.batch_records) == (100, 5_000, 1_000, 512)


@pytest.mark.parametrize("keys, where", [
    ({"hots": "x"}, "hots"), ({"queue_size": 0}, "queue_size"), ({"key_prefix": "a b"}, "key_prefix"),
    ({"backoff_min_ms": 500, "backoff_max_ms": 100}, "backoff_max_ms"), ({"db": -1}, "db")])
def test_config_when_a_key_is_unknown_or_out_of_range_then_decoding_names_it(keys, where):
    with pytest.raises(msgspec.ValidationError, match=where):
        msgspec.convert(keys, RedisMirrorConfig)


def test_mirror_when_engine_name_cannot_be_a_key_part_then_it_is_refused():
    with pytest.raises(msgspec.ValidationError):
        RedisMirror(msgspec.convert({}, RedisMirrorConfig), "demo engine", since=lambda seq: [])


# ---------------------------------------------------------------------------------------------- what it writes
def test_mirror_when_records_are_submitted_then_hashes_stream_entries_and_seq_appear(redis_server, client):
    journal = Journal()
    records = [journal.append(r) for r in (snapshot(1, qty=3), change(2), fill(3), snapshot(4, "pairs", qty=-2),
                                           fill(5, "pairs"))]
    with RedisMirror(config(redis_server), "demo", since=journal.since) as mirror:
        assert all(mirror.submit(r) for r in records)
        assert mirror.flush(WAIT_S)

        assert_mirrors(client, records)
        assert client.hgetall("orchestrator:demo:strategy:momentum") == {
            "seq": "1", "ts_ns": "1001", "strategy": "momentum", "state": "ACTIVE", "version": "1.2.0",
            "deploy": "1", "position:ESZ5": "3", "position:NQZ5": "-3", "realized": "1.5", "unrealized": "-0.25",
            "fees": "0.1"}
        assert stream(client)[0] == {"kind": "state_change", "seq": "2", "ts_ns": "1002", "strategy": "momentum",
                                     "before": "ACTIVE", "after": "HALTED", "cause": "trip_halt"}
        assert mirror.written_seq == 5
        s = mirror.stats
        assert (s.written, s.snapshots, s.events, s.dropped, s.lost, s.connects) == (5, 2, 3, 0, 0, 1)


def test_mirror_when_a_later_snapshot_arrives_then_the_hash_is_replaced_whole(redis_server, client):
    journal = Journal()
    first = journal.append(snapshot(1, qty=3))
    later = journal.append(StrategySnapshot(seq=2, ts_ns=9, strategy="momentum", state="PAUSED", version="1.3.0",
                                            deploy=2, positions={"ESZ5": 1}, realized=float("nan"),
                                            unrealized=float("inf"), fees=0.0))
    with RedisMirror(config(redis_server), "demo", since=journal.since) as mirror:
        mirror.submit(first)
        mirror.submit(later)
        assert mirror.flush(WAIT_S)

    hash_ = client.hgetall("orchestrator:demo:strategy:momentum")
    assert "position:NQZ5" not in hash_, "a position the later snapshot does not list is gone"
    assert (hash_["state"], hash_["version"], hash_["deploy"], hash_["position:ESZ5"]) == ("PAUSED", "1.3.0", "2",
                                                                                          "1")
    assert (hash_["realized"], hash_["unrealized"]) == ("nan", "inf")


def test_mirror_when_two_engines_share_a_redis_then_their_keys_are_apart(redis_server, client):
    journals = {"alpha": Journal(), "beta": Journal()}
    mirrors = [RedisMirror(config(redis_server, key_prefix="desk"), name, since=j.since)
               for name, j in journals.items()]
    try:
        for mirror, (name, journal) in zip(mirrors, journals.items()):
            mirror.open()
            for seq in range(1, 4):
                mirror.submit(journal.append(fill(seq, strategy=name)))
        assert all(m.flush(WAIT_S) for m in mirrors)
    finally:
        for m in mirrors:
            m.close()

    for name, journal in journals.items():
        assert [int(e["seq"]) for e in stream(client, f"desk:{name}")] == [1, 2, 3]
        assert {e["strategy"] for e in stream(client, f"desk:{name}")} == {name}
    assert sorted(client.keys("*")) == ["desk:alpha:events", "desk:alpha:run", "desk:alpha:seq", "desk:beta:events",
                                      "desk:beta:run", "desk:beta:seq"]


def test_mirror_when_events_exceed_stream_max_length_then_the_stream_is_capped(redis_server, client):
    journal = Journal()
    with RedisMirror(config(redis_server, stream_max_length=100), "demo", since=journal.since) as mirror:
        for seq in range(1, 1001):
            mirror.submit(journal.append(fill(seq)))
        assert mirror.flush(WAIT_S)

    length = client.xlen("orchestrator:demo:events")
    assert 100 <= length < 1000, "MAXLEN ~ trims whole nodes: about 100 kept, never all 1000"
    assert int(stream(client)[-1]["seq"]) == 1000 and mirror.stats.events == 1000


# ---------------------------------------------------------------------------------------------- outages
@pytest.mark.parametrize("persistence", [False, True], ids=["no-persistence", "append-only-file"])
def test_mirror_when_redis_is_killed_and_restarted_then_it_keeps_accepting_and_catches_up_without_doubles(
        tmp_path, persistence):
    server = RedisServer(tmp_path / "redis", persistence=persistence).start()
    journal = Journal()
    mirror = RedisMirror(config(server, queue_size=64, batch_records=16), "demo", since=journal.since)
    client = redis.Redis(server.host, server.port, decode_responses=True, socket_timeout=5)
    try:
        mirror.open()
        for seq in range(1, 101):  # faster than the writer: some may be dropped, and caught up
            mirror.submit(journal.append(mixed(seq)))
        assert mirror.flush(WAIT_S)
        dropped_before = mirror.stats.dropped

        server.kill()
        accepted = refused = 0
        for seq in range(101, 401):  # Redis is down: every call returns, the queue takes 64, the rest is counted
            if mirror.submit(journal.append(mixed(seq))):
                accepted += 1
            else:
                refused += 1
        assert accepted + refused == 300 and refused == mirror.stats.dropped - dropped_before > 0
        wait_until(lambda: mirror.stats.connect_failures >= 2, "the writer counting the outage")
        assert not mirror.connected and mirror.stats.disconnects >= 1
        for seq in range(401, 411):  # still down, still accepting (the queue is full: these are dropped)
            mirror.submit(journal.append(mixed(seq)))
        assert mirror.stats.submitted == 410

        server.restart()
        assert mirror.flush(WAIT_S), mirror.stats

        assert_mirrors(client, journal.records)
        s = mirror.stats
        assert s.lost == 0 and s.catchups >= 1 and s.caught_up >= refused and s.connects >= 2
        assert s.redis_resets == (0 if persistence else 1), "without persistence Redis comes back empty"
    finally:
        mirror.close()
        client.close()
        server.stop()


def test_mirror_when_redis_freezes_and_the_queue_overflows_then_drops_are_counted_and_caught_up(redis_server,
                                                                                               client):
    journal = Journal()
    mirror = RedisMirror(config(redis_server, queue_size=32, batch_records=8), "demo", since=journal.since)
    with mirror:
        mirror.submit(journal.append(fill(1)))
        assert mirror.flush(WAIT_S)
        os.kill(redis_server.process.popen.pid, signal.SIGSTOP)  # alive, accepting connections, answering nothing
        try:
            results = [mirror.submit(journal.append(fill(seq))) for seq in range(2, 202)]
            assert len(results) == 200 and results.count(False) == mirror.stats.dropped
            assert mirror.stats.dropped >= 200 - 32 - 8, "at most the queue and one batch in flight are taken"
        finally:
            os.kill(redis_server.process.popen.pid, signal.SIGCONT)
        assert mirror.flush(WAIT_S), mirror.stats

    assert_mirrors(client, journal.records)
    assert mirror.stats.lost == 0 and mirror.stats.caught_up >= mirror.stats.dropped


def test_mirror_when_the_queue_is_full_before_the_writer_runs_then_catch_up_fills_the_gap(redis_server, client):
    journal = Journal()
    mirror = RedisMirror(config(redis_server, queue_size=8), "demo", since=journal.since)
    results = [mirror.submit(journal.append(mixed(seq))) for seq in range(1, 21)]  # writer not started yet
    assert results == [True] * 8 + [False] * 12 and mirror.stats.dropped == 12

    with mirror:
        assert mirror.flush(WAIT_S)

    assert_mirrors(client, journal.records)
    s = mirror.stats
    assert (s.written, s.caught_up, s.skipped, s.lost) == (20, 12, 0, 0), "the queue first, since() for the gap"


def test_mirror_when_redis_is_never_there_then_submit_never_blocks_and_failures_are_counted(tmp_path):
    unreachable = msgspec.convert({"port": free_port(), "backoff_min_ms": 5, "backoff_max_ms": 20,
                                   "queue_size": 100}, RedisMirrorConfig)
    journal = Journal()
    with RedisMirror(unreachable, "demo", since=journal.since) as mirror:
        wait_until(lambda: mirror.stats.connect_failures >= 3, "connect failures counted")
        results = [mirror.submit(journal.append(fill(seq))) for seq in range(1, 1001)]

        assert results.count(True) == 100 and results.count(False) == 900 == mirror.stats.dropped
        assert not mirror.flush(0.05) and mirror.written_seq == 0 and mirror.stats.connects == 0
        assert journal.calls == 0, "no catch-up without a connection"


# ---------------------------------------------------------------------------------------------- bad input
def test_mirror_when_records_are_bad_then_each_is_counted_by_reason_and_the_rest_is_written(redis_server, client):
    journal = Journal()
    good = [journal.append(fill(1)), None, journal.append(snapshot(3))]
    bad_positions = journal.append(StrategySnapshot(seq=2, ts_ns=1, strategy="pairs", state="ACTIVE", version="1",
                                                    deploy=1, positions={"ESZ5": "many"}, realized=0.0,
                                                    unrealized=0.0, fees=0.0))
    bad_qty = journal.append(Fill(seq=4, ts_ns=1, strategy="pairs", deploy=1, instrument="ESZ5", order_id=1, side=1,
                                  qty=1.5, price=1.0, fee=0.0))
    last = journal.append(change(5))
    with RedisMirror(config(redis_server), "demo", since=journal.since) as mirror:
        outcomes = [mirror.submit(r) for r in (good[0], None, "fill", 42, bad_positions, good[2], bad_qty,
                                               Fill(seq="6", ts_ns=1, strategy="x", deploy=1, instrument="y",
                                                    order_id=1, side=1, qty=1, price=1.0, fee=0.0),
                                               change(0), last)]
        assert mirror.flush(WAIT_S)

    assert outcomes == [True, False, False, False, True, True, True, False, False, True]
    s = mirror.stats
    assert (s.invalid_type, s.invalid_seq, s.invalid_fields) == (3, 2, 2)
    assert (s.written, s.lost) == (3, 0), "bad fields are skipped, their seq passes: no catch-up loop"
    assert_mirrors(client, [good[0], good[2], last])
    assert not client.exists("orchestrator:demo:strategy:pairs")


def test_mirror_when_the_journal_fails_then_it_is_counted_and_retried(redis_server, client):
    journal = Journal()
    failures = [2]

    def since(seq):
        if failures[0]:
            failures[0] -= 1
            raise OSError("journal file busy")
        return journal.since(seq)
    mirror = RedisMirror(config(redis_server, queue_size=4), "demo", since=since)
    for seq in range(1, 11):
        mirror.submit(journal.append(mixed(seq)))  # 6 dropped before the writer starts

    with mirror:
        assert mirror.flush(WAIT_S), mirror.stats

    assert_mirrors(client, journal.records)
    assert mirror.stats.catchup_errors == 2 and mirror.stats.lost == 0


def test_mirror_when_the_journal_lacks_records_then_they_are_counted_lost_and_passed_over(redis_server, client):
    journal = Journal()
    records = [journal.append(mixed(seq)) for seq in range(1, 21)]
    mirror = RedisMirror(config(redis_server, queue_size=2), "demo",
                         since=lambda seq: [r for r in journal.since(seq) if r.seq >= 10])  # truncated before 10
    for r in records:
        mirror.submit(r)

    with mirror:
        assert mirror.flush(WAIT_S)

    assert mirror.stats.lost == 9 - 2, "1 and 2 came from the queue, 3..9 from nowhere"
    kept = records[:2] + records[9:]
    assert_mirrors(client, kept)


def test_mirror_when_redis_comes_back_empty_and_the_log_is_shorter_than_the_queue_then_the_queue_is_written(
        redis_server, client):
    journal = Journal()
    mirror = RedisMirror(config(redis_server), "demo",
                         since=lambda seq: [r for r in journal.since(seq) if r.seq > 7])  # keeps only 8 on
    with mirror:
        first = [journal.append(mixed(seq)) for seq in range(1, 6)]
        for r in first:
            mirror.submit(r)
        assert mirror.flush(WAIT_S)
        redis_server.kill()
        wait_until(lambda: mirror.stats.disconnects == 1, "the idle writer to find Redis gone")
        later = [journal.append(mixed(seq)) for seq in range(6, 11)]
        for r in later:  # queued while Redis is down
            mirror.submit(r)
        redis_server.restart()  # empty: seq 0, and the log (8 on) cannot give 1..7
        assert mirror.flush(WAIT_S)

    assert mirror.stats.lost == 5, "1..5 are gone with Redis's data; 6 and 7 came from the queue, not the log"
    assert mirror.stats.skipped == 0 and mirror.stats.redis_resets == 1
    assert_mirrors(client, later)


def test_mirror_when_redis_loses_its_data_while_connected_then_the_writer_resyncs_and_writes_all_once(
        redis_server, client):
    journal = Journal()
    records = [journal.append(mixed(seq)) for seq in range(1, 41)]
    with RedisMirror(config(redis_server), "demo", since=journal.since) as mirror:
        for r in records[:20]:
            mirror.submit(r)
        assert mirror.flush(WAIT_S)
        client.flushall()  # the connection stays up; the next transaction finds seq and run gone
        for r in records[20:]:
            mirror.submit(r)
        assert mirror.flush(WAIT_S)

    assert mirror.stats.redis_resets == 1 and mirror.stats.lost == 0 and mirror.stats.disconnects == 0
    assert_mirrors(client, records)


def test_mirror_when_db_is_set_then_keys_land_in_that_database_only(redis_server):
    journal = Journal()
    with RedisMirror(config(redis_server, db=3), "demo", since=journal.since) as mirror:
        mirror.submit(journal.append(fill(1)))
        assert mirror.flush(WAIT_S)
    clients = [redis.Redis(redis_server.host, redis_server.port, db=db, decode_responses=True) for db in (0, 3)]
    try:
        assert clients[0].dbsize() == 0
        assert [int(e["seq"]) for e in stream(clients[1])] == [1]
    finally:
        for c in clients:
            c.close()
