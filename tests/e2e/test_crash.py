"""The real `orchestrator run` killed with SIGKILL and restarted: it recovers from its journal (and snapshots)
and ends with the state of an engine that never died on the same input (`orchestrator replay` of the whole
journal: same state digest), its venue's fills and its books agreeing, nothing lost and nothing doubled.

The venue runs in the batch here, so what "the OMS side saw" is in the journaled stream too: its fills are the
fills the books hold. (Over a TCP OMS link, the orders and reports in flight at the kill are the reconciliation's
business: docs/design.md, "Recovery".)
"""
import json
import os
import random
import signal
import time

import pytest

from tests.e2e.e2e_kit import (
    ESZ5, assert_books_balance, assert_pnl_consistent, derive_config, free_port, market_data_frame, signal_frame,
)

FEE_PER_UNIT = 0.25
VENUE = {"fee_per_unit": FEE_PER_UNIT, "partial_fill_ratio": 0.4, "reject_ratio": 0.05, "fill_latency_us": 2000,
         "seed": 5}
PLAIN_VENUE = {"fee_per_unit": FEE_PER_UNIT}  # no random rejects or partial fills: a scenario goes as written


def crash_config(tmp_path, venue=VENUE, keep=None, snapshot_interval_s=0.3):
    """The demo on fixed ports (a feed keeps sending across restarts), snapshots often, all strategies on."""
    listen = {"udp": {"host": "127.0.0.1", "port": free_port(2)}, "tcp": {"host": "127.0.0.1", "port": free_port()}}
    return derive_config(tmp_path / "config", keep=keep, strategies={"pairs": {"enabled": True}}, engine={
        "listen": listen, "oms": {"sim": venue}, "journal": {"snapshot_interval_s": snapshot_interval_s}})


def kill(engine):
    os.kill(engine.popen.pid, signal.SIGKILL)
    assert engine.wait(10) == -signal.SIGKILL


def replayed(procs, config):
    code, out, err = procs.run("replay", str(config), "--json", name="replay")
    assert code == 0, err
    return json.loads(out)


def check_against_a_run_that_never_died(procs, config, report):
    replay = replayed(procs, config)
    assert replay["torn_tail"] is None
    assert report["state_digest"] == replay["state_digest"]
    assert report["counters"] == replay["counters"]
    venue = report["oms"]["venue"]
    assert venue["fills"] + venue["partial_fills"] == report["counters"]["fills"]  # each venue fill booked once
    assert venue["filled_qty"] == sum(s["filled_qty"] for s in report["strategies"].values())
    assert_books_balance(report)
    assert_pnl_consistent(report, FEE_PER_UNIT)


def test_crash_when_killed_at_random_points_of_one_stream_then_each_restart_recovers_all_of_it(procs, tmp_path):
    config = crash_config(tmp_path)
    rng = random.Random(20261203)
    engine = procs.engine(config, name="engine-0")
    # nothing listens while the engine restarts: the feed keeps sending (--max-send-errors 0)
    feed = procs.start_feed(engine, "udp", "--rate", 400, "--duration", 60, "--seed", 3, "--bad-ratio", 0.02,
                            "--max-send-errors", 0)
    restarts = []
    for k in range(10):
        time.sleep(rng.uniform(0.15, 0.9))
        kill(engine)
        engine = procs.engine(config, name=f"engine-{k + 1}")
        restarts.append(engine.stderr)
    time.sleep(0.3)
    feed.kill()
    report = engine.report()

    assert all("recovered from" in err for err in restarts), restarts[0]
    assert sum("snapshot at seq" in err for err in restarts) >= 5  # most restarts found a snapshot
    assert report["counters"]["signals"] > 500 and report["counters"]["fills"] > 0
    check_against_a_run_that_never_died(procs, config, report)


def test_crash_when_an_order_is_working_then_after_restart_it_still_works_and_fills_once(procs, tmp_path):
    config = crash_config(tmp_path, PLAIN_VENUE, keep=["momentum"])
    engine = procs.engine(config)
    udp = procs.udp(engine)
    udp.send(market_data_frame(ESZ5, bid=5999.0, ask=6001.0, last=6000.0))
    udp.send(signal_frame(1, value=2.0, price=5998.0))  # momentum buys 2 below the ask: it rests
    engine.wait_status(lambda r: r["strategies"]["momentum"]["open_orders"] == 1, "a working order")
    kill(engine)

    engine = procs.engine(config, name="engine-restarted")
    status = engine.wait_status(lambda r: True, "a status")
    assert status["strategies"]["momentum"]["open_orders"] == 1 and status["oms"]["venue"]["resting"] == 1
    udp = procs.udp(engine)
    udp.send(market_data_frame(ESZ5, bid=5997.0, ask=5998.0, last=5998.0))  # the market comes down to it
    engine.wait_status(lambda r: r["strategies"]["momentum"]["open_orders"] == 0, "the fill")
    report = engine.report()

    momentum = report["strategies"]["momentum"]
    assert momentum["positions"]["ESZ5"]["qty"] == 2 and momentum["filled_qty"] == 2
    assert momentum["positions"]["ESZ5"]["avg_price"] == 5998.0
    check_against_a_run_that_never_died(procs, config, report)


def test_crash_when_killed_between_a_partial_fill_and_its_last_fill_then_the_rest_fills_once(procs, tmp_path):
    gap_us = 2_000_000  # the parts 2 s apart: time to see the first applied and kill before the next
    venue = {**PLAIN_VENUE, "partial_fill_ratio": 1.0, "partial_fill_gap_us": gap_us, "seed": 1}
    config = crash_config(tmp_path, venue, keep=["momentum"])
    engine = procs.engine(config)
    udp = procs.udp(engine)
    udp.send(market_data_frame(ESZ5, bid=5999.75, ask=6000.25, last=6000.0))
    udp.send(signal_frame(1, value=6.0, price=6001.0))  # buy 6 at the ask: filled at once, in 2-3 parts
    before = engine.wait_status(lambda r: 0 < r["strategies"]["momentum"]["filled_qty"] < 6, "the first part")
    kill(engine)
    momentum = before["strategies"]["momentum"]
    assert momentum["open_orders"] == 1 and before["oms"]["venue"]["pending"] >= 1  # the rest still due
    partial = momentum["filled_qty"]
    assert momentum["positions"]["ESZ5"]["qty"] == partial

    engine = procs.engine(config, name="engine-restarted")
    status = engine.wait_status(lambda r: True, "a status")
    assert status["strategies"]["momentum"]["filled_qty"] >= partial  # the part applied before the kill survived
    engine.wait_status(lambda r: r["strategies"]["momentum"]["open_orders"] == 0, "the last fill")
    report = engine.report()

    momentum, venue = report["strategies"]["momentum"], report["oms"]["venue"]
    assert momentum["filled_qty"] == 6 and momentum["positions"]["ESZ5"]["qty"] == 6  # nothing lost or doubled
    assert momentum["positions"]["ESZ5"]["avg_price"] == 6000.25
    assert venue["filled_qty"] == 6 and venue["pending"] == 0 and venue["resting"] == 0  # the OMS side agrees
    assert venue["fills"] == 1 and venue["partial_fills"] == report["counters"]["fills"] - 1 >= 1
    assert momentum["pnl"]["fees"] == pytest.approx(6 * FEE_PER_UNIT)
    check_against_a_run_that_never_died(procs, config, report)


def test_crash_when_a_position_reverses_and_it_is_killed_then_the_reversal_survives(procs, tmp_path):
    config = crash_config(tmp_path, PLAIN_VENUE, keep=["momentum"])
    engine = procs.engine(config)
    udp = procs.udp(engine)
    udp.send(market_data_frame(ESZ5, bid=5999.75, ask=6000.25, last=6000.0))
    udp.send(signal_frame(1, value=3.0, price=6001.0))   # buy 3 at the ask
    engine.wait_status(lambda r: r["strategies"]["momentum"]["positions"]["ESZ5"]["qty"] == 3, "long 3")
    udp.send(signal_frame(2, value=-5.0, price=5999.0))  # sell 5: long 3 -> short 2
    engine.wait_status(lambda r: r["strategies"]["momentum"]["positions"]["ESZ5"]["qty"] == -2
                       and r["strategies"]["momentum"]["open_orders"] == 0, "the reversal")
    kill(engine)

    engine = procs.engine(config, name="engine-restarted")
    report = engine.report()

    p = report["strategies"]["momentum"]["positions"]["ESZ5"]
    assert (p["qty"], p["avg_price"]) == (-2, 5999.75)
    assert p["realized"] == pytest.approx(3 * (5999.75 - 6000.25) * 50.0)
    check_against_a_run_that_never_died(procs, config, report)


def test_crash_when_killed_in_the_middle_of_a_snapshot_write_then_the_half_file_is_never_used(procs, tmp_path):
    config = crash_config(tmp_path, PLAIN_VENUE, keep=["momentum"], snapshot_interval_s=0.25)
    engine = procs.engine(config, env={"ORCHESTRATOR_CRASH_AT": "snapshot.write:6"})  # ~1.25 s after start
    udp = procs.udp(engine)
    for seq in range(1, 40):
        udp.send(market_data_frame(ESZ5), signal_frame(seq, value=(-1) ** seq * 1.0, price=6000.0))
    engine.wait_status(lambda r: r["counters"]["signals"] == 39, "39 signals")
    assert engine.wait(30) == -signal.SIGKILL  # the sixth snapshot killed it, half written
    snapshots = config / "var" / "journal" / "snapshots"
    assert [p.name for p in snapshots.iterdir() if p.name.endswith(".tmp")]  # the half file is there ...

    engine = procs.engine(config, name="engine-restarted")
    assert "recovered from snapshot at seq" in engine.stderr  # ... and a whole one was used instead
    report = engine.report()
    assert report["counters"]["signals"] == 39
    assert not [p.name for p in snapshots.iterdir() if p.name.endswith(".tmp")]  # cleaned up by the next one
    check_against_a_run_that_never_died(procs, config, report)


def test_run_when_fresh_over_an_existing_journal_then_refused_unless_forced(procs, tmp_path):
    config = crash_config(tmp_path)
    procs.engine(config).report()

    code, _, err = procs.run("run", str(config), "--fresh", "--duration", "0.1", "--quiet", name="fresh")
    assert code == 3 and "holds a journal: --fresh would start over it; add --force" in err
    fresh = procs.engine(config, "--fresh", "--force", name="forced")
    assert "recovered" not in fresh.stderr
    fresh.report()
    assert [p.name for p in tmp_path.joinpath("config", "var").iterdir() if p.name.endswith(".old")]


def test_run_when_the_journal_directory_cannot_be_written_then_exit_3_naming_it(procs, tmp_path):
    config = crash_config(tmp_path)
    (config / "var").mkdir()
    (config / "var" / "journal").write_text("a file where the journal directory should be")

    code, _, err = procs.run("run", str(config), "--duration", "0.1", "--quiet", name="unwritable")

    assert code == 3 and "journal" in err and str(config / "var" / "journal") in err


def test_crash_when_killed_in_the_middle_of_a_deploy_then_the_journaled_deploy_is_recovered(procs, tmp_path):
    """A deploy through the API is journaled, then the process dies before it takes effect (crash point
    command.deploy). Restarted, the engine replays it: the new version runs, positions carried over, and the
    state equals a replay of the journal."""
    config = crash_config(tmp_path, PLAIN_VENUE, keep=["momentum"])
    engine = procs.engine(config, env={"ORCHESTRATOR_CRASH_AT": "command.deploy"})
    udp = procs.udp(engine)
    udp.send(market_data_frame(ESZ5), signal_frame(1, value=2.0, price=6001.0))
    engine.wait_status(lambda r: r["strategies"]["momentum"]["positions"]["ESZ5"]["qty"] == 2, "long 2")
    file = config / "strategies" / "momentum.toml"
    file.write_text(file.read_text().replace('version = "1.2.0"', 'version = "1.3.0"'))
    code, out, err = procs.run("ctl", "deploy", "momentum", "--url", engine.ready["api"], name="ctl")
    assert code == 3, (code, out, err)  # the engine died under it: no answer
    assert engine.wait(10) == -signal.SIGKILL

    engine = procs.engine(config, name="engine-restarted")
    report = engine.report()
    momentum = report["strategies"]["momentum"]
    assert (momentum["version"], momentum["deploy"]) == ("1.3.0", 2)
    assert momentum["positions"]["ESZ5"]["qty"] == 2  # positions belong to the name, across versions
    check_against_a_run_that_never_died(procs, config, report)
