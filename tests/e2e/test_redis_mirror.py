"""The Redis mirror against the real engine process and a real redis-server: signals over UDP, the hashes and the
events stream read back with redis-py and checked against the engine's own report; Redis killed mid-run and
restarted, and Redis down at start: the engine trades throughout, and the mirror catches up."""
import signal

import pytest
import redis

from tests.e2e.e2e_kit import ESZ5, derive_config, free_port, market_data_frame, signal_frame
from tests.infra.servers import RedisServer

PREFIX = "e2e"
TSLA = 5  # not tradable in the demo: an order for it is rejected


def mirror_config(tmp_path, url, **redis_keys):
    """The demo with the mirror on (fast reconnects and snapshots), and scalper halting on its first reject."""
    return derive_config(tmp_path / "config", engine={"redis": {
        "enabled": True, "url": url, "key_prefix": PREFIX, "backoff_min_ms": 20, "backoff_max_ms": 200,
        "timeout_ms": 500, "snapshot_interval_ms": 50, **redis_keys}},
        strategies={"scalper": {"breakers": {"max_consecutive_rejects": 1}}})


def trade(udp, first_seq, count):
    """Market data, then `count` buy signals for momentum and index_arbitrage (signal id 0) on ESZ5."""
    udp.send(market_data_frame(ESZ5))
    for seq in range(first_seq, first_seq + count):
        udp.send(signal_frame(seq, value=1.0, price=6000.25))


def halt_scalper(udp, seq):
    udp.send(signal_frame(seq, signal_id=4, instrument=TSLA, price=350.0))


def client(server_or_port):
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    return redis.Redis("127.0.0.1", port, decode_responses=True, socket_timeout=5)


def mirrored(r):
    """What Redis holds of the demo engine: its seq, the hashes by strategy and the events stream's entries."""
    ns = f"{PREFIX}:demo"
    names = r.smembers(f"{ns}:strategies")
    return {"seq": int(r.get(f"{ns}:seq") or 0),
            "strategies": {name: r.hgetall(f"{ns}:strategy:{name}") for name in names},
            "events": [fields for _, fields in r.xrange(f"{ns}:events")]}


def assert_mirror_matches_report(held, report):
    """Redis says what the engine's final report says: every strategy's state, deploy, positions and P&L exactly;
    every fill once, in seq order, adding up to the positions; the writer lost and dropped nothing."""
    mirror = report["mirror"]
    assert mirror["writer"]["lost"] == mirror["writer"]["dropped"] == mirror["fills_overflow"] == 0, mirror
    assert mirror["errors"] == mirror["writer"]["errors"] == 0, mirror
    assert held["seq"] == mirror["written_seq"] == mirror["last_seq"], mirror
    assert set(held["strategies"]) == set(report["strategies"])
    for name, s in report["strategies"].items():
        h = held["strategies"][name]
        assert (h["state"], h["version"], int(h["deploy"])) == (s["state"], s["version"], s["deploy"]), name
        assert {k: float(h[k]) for k in ("realized", "unrealized", "fees")} == s["pnl"], name
        assert {k.removeprefix("position:"): int(v) for k, v in h.items() if k.startswith("position:")} == \
            {symbol: p["qty"] for symbol, p in s["positions"].items()}, name
    seqs = [int(e["seq"]) for e in held["events"]]
    assert seqs == sorted(set(seqs)), "stream entries repeat or come out of order"
    fills = [e for e in held["events"] if e["kind"] == "fill"]
    assert len(fills) == report["counters"]["fills"] == mirror["fills"] > 0
    net = {}
    for f in fills:
        key = (f["strategy"], f["instrument"])
        net[key] = net.get(key, 0) + int(f["side"]) * int(f["qty"])
    for (name, symbol), qty in net.items():
        assert report["strategies"][name]["positions"][symbol]["qty"] == qty, (name, symbol)


def scalper_halted(held):
    return [e for e in held["events"] if e["kind"] == "state_change" and e["strategy"] == "scalper"]


def pnl_only(s):
    return {k: s["pnl"][k] for k in ("realized", "unrealized", "fees")}


@pytest.mark.parametrize("driver", ["event", "spin"])
def test_mirror_when_the_engine_trades_then_redis_holds_states_positions_pnl_and_the_fills(procs, tmp_path,
                                                                                          redis_server, driver):
    engine = procs.engine(mirror_config(tmp_path, redis_server.url), "--driver", driver)
    udp = procs.udp(engine)
    trade(udp, 1, 5)
    halt_scalper(udp, 100)
    engine.wait_status(lambda r: r["counters"]["fills"] >= 5 and r["strategies"]["scalper"]["state"] == "HALTED",
                       "fills and scalper halted")
    r = client(redis_server)
    try:
        engine.wait_for(lambda: scalper_halted(mirrored(r)), "scalper's state change in Redis")
        report = engine.report()
        held = mirrored(r)
    finally:
        r.close()

    for s in report["strategies"].values():
        s["pnl"] = pnl_only(s)
    assert_mirror_matches_report(held, report)
    change, = scalper_halted(held)
    assert (change["before"], change["after"], change["cause"]) == ("ACTIVE", "HALTED", "breaker:consecutive_rejects")
    assert report["mirror"]["writer"]["connects"] == 1 and report["mirror"]["connected"]


def test_mirror_when_redis_is_killed_mid_run_then_trading_goes_on_and_redis_catches_up(procs, tmp_path,
                                                                                      redis_server):
    engine = procs.engine(mirror_config(tmp_path, redis_server.url))
    udp = procs.udp(engine)
    r = client(redis_server)
    try:
        trade(udp, 1, 3)
        engine.wait_for(lambda: len(mirrored(r)["events"]) >= 3, "the first fills in Redis")
        redis_server.kill()
        trade(udp, 10, 4)
        halt_scalper(udp, 100)
        down = engine.wait_status(lambda s: s["counters"]["signals"] == 8 and s["mirror"]["writer"]["disconnects"]
                                  + s["mirror"]["writer"]["connect_failures"] > 0, "signals decided with Redis down")
        assert down["strategies"]["scalper"]["state"] == "HALTED" and not down["mirror"]["connected"]
        redis_server.restart()  # no persistence: it comes back empty, and the mirror writes it all again
        engine.wait_status(lambda s: s["mirror"]["connected"] and s["mirror"]["written_seq"] == s["mirror"]["last_seq"],
                           "the mirror caught up")
        report = engine.report()
        held = mirrored(r)
    finally:
        r.close()

    assert report["counters"]["signals"] == 8 and report["counters"]["fills"] >= down["counters"]["fills"] > 0
    for s in report["strategies"].values():
        s["pnl"] = pnl_only(s)
    assert_mirror_matches_report(held, report)
    assert scalper_halted(held)
    writer = report["mirror"]["writer"]
    assert writer["connects"] == 2 and writer["redis_resets"] == 1 and writer["catchups"] >= 1
    assert report["mirror"]["republished"] >= 2


def test_mirror_when_redis_is_down_at_start_then_the_engine_starts_trades_and_redis_catches_up(procs, tmp_path):
    port = free_port()
    engine = procs.engine(mirror_config(tmp_path, f"redis://127.0.0.1:{port}/0"))
    udp = procs.udp(engine)
    trade(udp, 1, 4)
    halt_scalper(udp, 100)
    before = engine.wait_status(lambda s: s["counters"]["fills"] >= 4 and s["mirror"]["writer"]["connect_failures"],
                                "fills with Redis down")
    assert before["mirror"]["writer"]["connects"] == 0 and before["oms"]["up"]
    server = RedisServer(tmp_path / "redis", port=port).start()
    r = client(server)
    try:
        engine.wait_status(lambda s: s["mirror"]["connected"] and s["mirror"]["written_seq"] == s["mirror"]["last_seq"],
                           "the mirror caught up")
        report = engine.report()
        held = mirrored(r)
    finally:
        r.close()
        server.stop()

    for s in report["strategies"].values():
        s["pnl"] = pnl_only(s)
    assert_mirror_matches_report(held, report)
    assert scalper_halted(held)


def test_mirror_when_redis_comes_back_empty_beyond_the_replay_log_then_lost_is_counted_and_hashes_are_whole(
        procs, tmp_path, redis_server):
    engine = procs.engine(mirror_config(tmp_path, redis_server.url, replay_records=3))
    udp = procs.udp(engine)
    trade(udp, 1, 6)
    engine.wait_status(lambda s: s["counters"]["fills"] >= 6 and s["mirror"]["connected"]
                       and s["mirror"]["written_seq"] == s["mirror"]["last_seq"] > 3, "fills in Redis")
    redis_server.kill()
    redis_server.restart()  # empty: the stream's first records are older than the replay log reaches
    r = client(redis_server)
    try:
        engine.wait_status(lambda s: s["mirror"]["writer"]["connects"] == 2 and s["mirror"]["connected"]
                           and s["mirror"]["written_seq"] == s["mirror"]["last_seq"], "the mirror caught up")
        report = engine.report()
        held = mirrored(r)
    finally:
        r.close()

    mirror = report["mirror"]
    assert mirror["writer"]["lost"] > 0 and mirror["writer"]["redis_resets"] == 1 and mirror["writer"]["dropped"] == 0
    assert held["seq"] == mirror["last_seq"]
    assert len(held["events"]) < report["counters"]["fills"]  # the fills before the outage are gone from Redis
    assert set(held["strategies"]) == set(report["strategies"])  # but every hash was re-published on connect
    for name, s in report["strategies"].items():
        h = held["strategies"][name]
        assert (h["state"], int(h["deploy"])) == (s["state"], s["deploy"])
        assert {k: float(h[k]) for k in ("realized", "unrealized", "fees")} == pnl_only(s), name
        assert {k.removeprefix("position:"): int(v) for k, v in h.items() if k.startswith("position:")} == \
            {symbol: p["qty"] for symbol, p in s["positions"].items()}, name


def test_mirror_when_the_engine_restarts_into_a_namespace_redis_kept_then_the_new_run_takes_it_over(
        procs, tmp_path, redis_server):
    config = mirror_config(tmp_path, redis_server.url)
    r = client(redis_server)
    try:
        first = procs.engine(config, name="first")
        trade(procs.udp(first), 1, 3)
        first.wait_status(lambda s: s["counters"]["fills"] >= 3, "the first run's fills")
        first_report = first.report()
        first_run, first_seq = r.get(f"{PREFIX}:demo:run"), int(r.get(f"{PREFIX}:demo:seq"))
        assert first_seq == first_report["mirror"]["last_seq"]

        second = procs.engine(config, name="second")  # recovers the first run's state from its journal
        trade(procs.udp(second), 10, 2)
        second.wait_status(lambda s: s["counters"]["fills"] >= 2, "the second run's fills")
        report = second.report()
        held = mirrored(r)
        second_run = r.get(f"{PREFIX}:demo:run")
    finally:
        r.close()

    assert second_run != first_run and held["seq"] == report["mirror"]["last_seq"]
    assert report["mirror"]["writer"]["skipped"] == 0, "nothing of the new run was taken for the old one's"
    for name, s in report["strategies"].items():  # the recovered positions plus the new fills
        h = held["strategies"][name]
        assert {k.removeprefix("position:"): int(v) for k, v in h.items() if k.startswith("position:")} == \
            {symbol: p["qty"] for symbol, p in s["positions"].items()}, name
        assert {k: float(h[k]) for k in ("realized", "unrealized", "fees")} == pnl_only(s), name
    fills = [e for e in held["events"] if e["kind"] == "fill"]
    # both runs' fills, once each (the counters are recovered with the state: the second report's are the total)
    assert len(fills) == first_report["mirror"]["fills"] + report["mirror"]["fills"] == report["counters"]["fills"]


def test_mirror_when_redis_freezes_then_trading_goes_on_and_redis_catches_up_once_it_thaws(procs, tmp_path,
                                                                                          redis_server):
    engine = procs.engine(mirror_config(tmp_path, redis_server.url))
    udp = procs.udp(engine)
    r = client(redis_server)
    frozen = False
    try:
        trade(udp, 1, 2)
        engine.wait_status(lambda s: s["mirror"]["connected"] and s["mirror"]["writer"]["events"] >= 2,
                           "the first fills in Redis")
        redis_server.process.popen.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
        frozen = True
        trade(udp, 10, 3)
        stuck = engine.wait_status(lambda s: s["counters"]["signals"] == 5 and s["mirror"]["writer"]["disconnects"],
                                   "signals decided while Redis hangs")
        assert stuck["counters"]["fills"] >= 10 and stuck["mirror"]["written_seq"] < stuck["mirror"]["last_seq"]
        redis_server.process.popen.send_signal(signal.SIGCONT)
        frozen = False
        engine.wait_status(lambda s: s["mirror"]["connected"] and s["mirror"]["written_seq"] == s["mirror"]["last_seq"],
                           "the mirror caught up")
        report = engine.report()
        held = mirrored(r)
    finally:
        if frozen:
            redis_server.process.popen.send_signal(signal.SIGCONT)
        r.close()

    for s in report["strategies"].values():
        s["pnl"] = pnl_only(s)
    assert_mirror_matches_report(held, report)


def test_mirror_when_redis_never_comes_then_the_engine_trades_and_stops_cleanly_on_time(procs, tmp_path):
    engine = procs.engine(mirror_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0", shutdown_flush_ms=200))
    trade(procs.udp(engine), 1, 3)
    engine.wait_status(lambda s: s["counters"]["fills"] >= 3 and s["mirror"]["writer"]["connect_failures"] >= 2,
                       "fills with no Redis")
    report = engine.report()

    mirror = report["mirror"]
    assert report["counters"]["fills"] >= 3 and report["oms"]["up"]
    assert not mirror["connected"] and mirror["writer"]["connects"] == mirror["written_seq"] == 0
    assert mirror["last_seq"] == mirror["records"] == mirror["queued"] > 0  # all still waiting, none dropped
