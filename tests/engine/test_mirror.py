"""engine/mirror.py: mirror records built from an EngineState, and the state they describe read back from a real
redis-server through the mirror."""
from pathlib import Path

import msgspec
import numpy as np
import redis

from adapters.redis_mirror import Fill, MirrorStats, RedisMirror, RedisMirrorConfig, StateChange, StrategySnapshot
from engine.commands import CommandResult
from engine.config.schema import Redis
from engine.mirror import MirrorFeed, strategy_snapshot
from engine.state import EngineState
from kernels.dtypes import ACTIVE, FILL_T, HALTED, NO_TRIP, STATE_NAMES, TRIP_NAMES

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
MOMENTUM, PAIRS = 2, 3
ESZ5, NQZ5, TSLA = 0, 1, 5


def test_strategy_snapshot_when_built_then_it_carries_state_deploy_positions_and_pnl():
    state = EngineState.load(DEMO)
    row = state.strategies[MOMENTUM]
    row["state"], row["deploy"], row["realized"], row["unrealized"], row["fees"] = HALTED, 3, 10.5, -2.25, 0.75
    state.positions[MOMENTUM, NQZ5]["qty"] = -4
    state.positions[MOMENTUM, TSLA]["qty"] = 7  # held though not allowed: still listed

    record = strategy_snapshot(state, MOMENTUM, seq=12, ts_ns=99)

    assert record == StrategySnapshot(seq=12, ts_ns=99, strategy="momentum", state="HALTED", version="1.2.0",
                                      deploy=3, positions={"ESZ5": 0, "NQZ5": -4, "TSLA": 7}, realized=10.5,
                                      unrealized=-2.25, fees=0.75)


def test_strategy_snapshot_when_mirrored_then_redis_holds_what_the_state_report_says(redis_server):
    state = EngineState.load(DEMO)
    state.positions[PAIRS, 3]["qty"] = 5
    records = [strategy_snapshot(state, s, seq=s + 1, ts_ns=1) for s in range(len(state.strategy_names))]
    config = msgspec.convert({"host": redis_server.host, "port": redis_server.port}, RedisMirrorConfig)
    client = redis.Redis(redis_server.host, redis_server.port, decode_responses=True)
    try:
        with RedisMirror(config, state.config.engine.name, since=lambda seq: records[seq:]) as mirror:
            for record in records:
                mirror.submit(record)
            assert mirror.flush(60)

        report = state.snapshot()
        for name, expected in report.items():
            mirrored = client.hgetall(f"orchestrator:demo:strategy:{name}")
            assert mirrored["state"] == expected["state"] and int(mirrored["deploy"]) == expected["deploy"]
            assert mirrored["version"] == expected["version"]
            assert {k.removeprefix("position:"): int(v) for k, v in mirrored.items() if k.startswith("position:")} \
                == {symbol: p["qty"] for symbol, p in expected["positions"].items()}
            assert float(mirrored["realized"]) == expected["pnl"]["realized"]
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------- MirrorFeed
class FakeWriter:
    """Stands in for RedisMirror: keeps what is submitted; `resync()` plays a (re)connect."""

    def __init__(self, config, engine_name, since):
        self.config, self.engine_name, self.since = config, engine_name, since
        self.records = []
        self.stats = MirrorStats()

    @property
    def resyncs(self):
        return self.stats.connects + self.stats.redis_resets

    def submit(self, record):
        self.records.append(record)
        return True

    def take(self):
        records, self.records = self.records, []
        return records


class FakeControl:
    def __init__(self):
        self.results = {}

    def applied(self, command, **detail):
        self.results[str(len(self.results))] = CommandResult(id=str(len(self.results)), ok=True, command=command,
                                                             detail=detail)


def feed_for(state, control=None, **keys):
    settings = msgspec.convert({"enabled": True, **keys}, Redis)
    feed = MirrorFeed(state, settings, mirror_factory=FakeWriter, control=control)
    return feed, feed.mirror


def fills_of(state, *rows):
    """A fills-ring view holding (strategy, instrument, side, qty, price, fee) rows."""
    fills = np.zeros(len(rows), FILL_T)
    for f, (s, i, side, qty, price, fee) in zip(fills, rows):
        f["order_id"], f["strategy"], f["deploy"], f["instrument"] = 7, s, 1, i
        f["side"], f["qty"], f["price"], f["fee"], f["ts_ns"] = side, qty, price, fee, 55
    return (fills,)


def test_mirror_feed_when_started_then_every_strategy_gets_a_snapshot_and_nothing_else():
    state = EngineState.load(DEMO)
    feed, writer = feed_for(state)

    feed.housekeeping(1)

    records = writer.take()
    assert [r.strategy for r in records] == state.strategy_names
    assert all(type(r) is StrategySnapshot for r in records) and [r.seq for r in records] == [1, 2, 3, 4, 5]
    feed.housekeeping(2)
    assert writer.take() == [], "nothing changed: no record"


def test_mirror_feed_when_a_batch_fills_then_housekeeping_makes_fill_records_and_a_snapshot_of_the_strategy():
    state = EngineState.load(DEMO)
    feed, writer = feed_for(state)
    feed.housekeeping(1)
    writer.take()

    feed.on_batch((), (), fills_of(state, (MOMENTUM, NQZ5, -1, 3, 21000.5, 0.25)), 2)
    assert writer.take() == [], "the batch listener only copies"
    state.positions[MOMENTUM, NQZ5]["qty"] = -3
    feed.housekeeping(3)

    fill, snapshot = writer.take()
    assert fill == Fill(seq=6, ts_ns=55, strategy="momentum", deploy=1, instrument="NQZ5", order_id=7, side=-1,
                        qty=3, price=21000.5, fee=0.25)
    assert snapshot.strategy == "momentum" and snapshot.positions["NQZ5"] == -3 and snapshot.seq == 7


def test_mirror_feed_when_more_fills_than_the_staging_array_holds_then_the_rest_are_counted_overflow():
    state = EngineState.load(DEMO)
    feed, writer = feed_for(state, queue_size=2)

    feed.on_batch((), (), fills_of(state, *[(MOMENTUM, NQZ5, 1, 1, 1.0, 0.0)] * 3), 1)
    feed.housekeeping(2)

    assert feed.stats.fills == 2 and feed.stats.fills_overflow == 1


def test_mirror_feed_when_strategies_move_then_each_state_change_names_its_cause():
    state = EngineState.load(DEMO)
    control = FakeControl()
    feed, writer = feed_for(state, control)
    rows = state.strategies
    pairs_before = STATE_NAMES[int(rows[PAIRS]["state"])]  # as the demo starts it
    rows[MOMENTUM]["state"] = HALTED
    control.applied("transition", strategy="momentum", **{"from": "ACTIVE", "to": "HALTED"})
    rows[PAIRS]["state"], rows[PAIRS]["trip_cause"] = HALTED, TRIP_NAMES.index("drawdown")
    feed.housekeeping(1)
    rows[PAIRS]["state"], rows[PAIRS]["trip_cause"] = ACTIVE, NO_TRIP  # the breaker's cool-down
    feed.housekeeping(2)

    changes = [(r.strategy, r.before, r.after, r.cause) for r in writer.take() if type(r) is StateChange]
    assert changes == [("momentum", "ACTIVE", "HALTED", "command:transition"),
                       ("pairs", pairs_before, "HALTED", "breaker:drawdown"),
                       ("pairs", "HALTED", "ACTIVE", "cooldown")]


def test_mirror_feed_when_the_writer_resyncs_then_every_strategy_is_published_again():
    state = EngineState.load(DEMO)
    feed, writer = feed_for(state, snapshot_interval_ms=10**6)
    feed.housekeeping(1)
    writer.take()

    writer.stats.connects += 1
    feed.housekeeping(2)
    assert len(writer.take()) == len(state.strategy_names) and feed.stats.republished == 2
    writer.stats.redis_resets += 1
    feed.housekeeping(3)
    assert len(writer.take()) == len(state.strategy_names) and feed.stats.republished == 3


def test_mirror_feed_when_pnl_moves_then_the_snapshot_waits_for_the_interval():
    state = EngineState.load(DEMO)
    feed, writer = feed_for(state, snapshot_interval_ms=100)
    feed.housekeeping(0)
    writer.take()

    state.strategies[MOMENTUM]["unrealized"] = 12.5
    feed.housekeeping(50_000_000)
    assert writer.take() == []
    feed.housekeeping(100_000_000)
    snapshot, = writer.take()
    assert (snapshot.strategy, snapshot.unrealized) == ("momentum", 12.5)


def test_mirror_feed_since_when_asked_then_the_records_after_seq_the_replay_log_still_has():
    state = EngineState.load(DEMO)
    feed, writer = feed_for(state, replay_records=3)
    feed.housekeeping(1)  # seq 1..5

    assert [r.seq for r in writer.since(0)] == [3, 4, 5]
    assert [r.seq for r in writer.since(4)] == [5]
    assert writer.since(5) == []


def test_mirror_feed_when_housekeeping_fails_then_it_is_counted_and_nothing_raises():
    state = EngineState.load(DEMO)
    feed, writer = feed_for(state)
    state.deploys[MOMENTUM] = []  # a broken registry: building its snapshot raises

    feed.housekeeping(1)

    assert feed.stats.errors == 1
