"""A live run journals every arrival and command; `orchestrator replay` feeds that journal through a fresh engine:
the same orders (digest), counters and books as the live run, every time, also when the run lost its OMS (the
link policy and the local cancels are journaled commands)."""
import json
import time
from collections import Counter

from tests.e2e.e2e_kit import derive_config, market_data_frame
from tests.e2e.test_bad_input import Source
from tests.e2e.test_oms_faults import sells, tcp_oms_config


def replay_twice(procs, config):
    results = []
    for attempt in range(2):
        code, out, err = procs.run("replay", str(config), "--json", name=f"replay-{attempt}")
        assert code == 0, err
        results.append(json.loads(out))
    return results


def without_latency(strategies):
    return {name: {k: v for k, v in s.items() if k != "signal_to_order_us"} for name, s in strategies.items()}


def test_replay_when_run_twice_then_same_orders_as_the_live_run(procs, tmp_path):
    venue = {"fee_per_unit": 0.25, "partial_fill_ratio": 0.3, "reject_ratio": 0.05}
    config = derive_config(tmp_path / "config", strategies={"pairs": {"enabled": True}},
                           engine={"oms": {"sim": venue}})
    engine = procs.engine(config)
    procs.feed(engine, "udp", "--rate", 2000, "--count", 2000, "--duration", 0, "--seed", 11, "--bad-ratio", 0.05)
    live = engine.report()
    first, second = replay_twice(procs, config)
    assert first["orders_digest"] == second["orders_digest"]
    assert first["counters"] == second["counters"] and first["records"] == second["records"] > 0
    assert first["orders"] == live["counters"]["orders"] > 0
    # the journal holds the venue's clock too: the replay ends with the live run's books, not just its orders
    assert first["counters"] == live["counters"]
    assert first["strategies"] == without_latency(live["strategies"])
    assert first["torn_tail"] is None


def test_replay_when_there_is_no_journal_then_exits_1_naming_it(procs, tmp_path):
    code, out, err = procs.run("replay", str(derive_config(tmp_path / "config")), "--journal",
                               str(tmp_path / "none"))
    assert code == 1 and out == "" and "cannot replay" in err and "none" in err


def test_replay_when_live_run_lost_its_oms_then_same_orders(procs, tmp_path):
    oms = procs.sim_oms("--drop-after", "3")
    config = tcp_oms_config(tmp_path, oms.port, "reduce", backoff_ms=(1500, 3000))
    engine = procs.engine(config)
    udp, s = procs.udp(engine), Source(0, Counter())
    udp.send(market_data_frame())
    for _ in range(3):
        udp.send(s.good())
        time.sleep(0.02)
    engine.wait_status(lambda r: not r["oms"]["up"], "the OMS link to drop")
    udp.send(sells(s, 2), s.good(2))
    engine.wait_status(lambda r: r["counters"]["signals"] == 7, "7 signals")
    live = engine.report()
    first, _ = replay_twice(procs, config)
    assert first["orders"] == live["counters"]["orders"]
    assert first["counters"] == live["counters"]
    assert first["strategies"] == without_latency(live["strategies"])
    assert first["strategies"]["momentum"]["state"] == "REDUCING"
