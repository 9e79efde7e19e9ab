"""`orchestrator run` with a real `orchestrator feed` process over loopback: the report accounts for every
signal the feed sent, the in-process simulated OMS fills orders, and the run ends cleanly on --duration,
SIGTERM or SIGINT, with either driver."""
import signal

import pytest

from tests.e2e.e2e_kit import (
    ORDER_FATES, assert_books_balance, assert_pnl_consistent, derive_config, market_data_frame, nonzero, reasons,
    target_frame,
)

FEE_PER_UNIT = 0.5
BAD_KINDS = "nan,stale,duplicate,price_band,garbage"  # unknown ids: see test_bad_input
EXPECTED_COUNTERS = {"frames", "signals", "signal_no_change", "market_data", "orders", "rejects", "reports",
                     "fills", "breaker_trips"} | ORDER_FATES
GARBAGE_COUNTERS = {"udp": {"frame_truncated", "frame_bad_version"}, "tcp": {"frame_malformed"}}


@pytest.fixture
def config(tmp_path):
    """The demo, with each signal id feeding exactly one strategy (so rejects per reason match what the feed
    sent) and every strategy enabled."""
    venue = {"fee_per_unit": FEE_PER_UNIT, "partial_fill_ratio": 0.3, "reject_ratio": 0.05, "seed": 3}
    return derive_config(tmp_path / "config", strategies={"index_arbitrage": {"signals": [2]},
                                                          "pairs": {"signals": [3], "enabled": True}},
                         engine={"oms": {"sim": venue}})


def feed(procs, engine, transport, count):
    summary = procs.feed(engine, transport, "--rate", 2000, "--count", count, "--duration", 0, "--seed", 1,
                         "--bad-ratio", 0.05, "--bad-kinds", BAD_KINDS)
    assert summary["send_errors"] == 0 and not summary["closed"]
    return summary


def check_report(report, summary, transport, extra_signals=0):
    counters, bad = report["counters"], summary["bad"]
    # every signal and market data update the feed sent was decoded; garbage was counted, not decoded
    assert counters["signals"] == summary["signals"] + sum(bad.values()) - bad["garbage"] + extra_signals
    assert counters["market_data"] == summary["market_data"]
    assert sum(counters[name] for name in GARBAGE_COUNTERS[transport]) == bad["garbage"] > 0
    assert nonzero(counters) <= EXPECTED_COUNTERS | GARBAGE_COUNTERS[transport], counters
    # each reaches one strategy: its reject reason is counted once
    by_reason = reasons(report)
    assert by_reason["not_finite"] == bad["nan"] > 0
    assert by_reason["stale"] == bad["stale"] > 0
    assert by_reason["duplicate"] == bad["duplicate"] > 0
    assert by_reason.get("price_collar", 0) <= bad["price_band"]  # unless the target needed no order
    assert sum(s["signals"] for s in report["strategies"].values()) == counters["signals"]
    assert counters["orders"] > 0 and counters["fills"] > 0
    assert_books_balance(report)
    assert report["oms"]["up"] and report["oms"]["orders_unsent"] == report["oms"]["orders_pending"] == 0
    assert_pnl_consistent(report, FEE_PER_UNIT)
    udp, tcp = report["transports"]["udp"], report["transports"]["tcp"]
    assert udp["kernel_drops"] == udp["oversize"] == udp["empty"] == 0
    assert tcp["oversize"] == tcp["bad_version"] == tcp["partial_discarded"] == 0
    assert tcp["connections"] == (transport == "tcp")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_run_when_feed_sends_then_report_accounts_for_every_signal(procs, config, transport):
    engine = procs.engine(config, "--duration", "4")  # the feed needs ~1.5 s, more if busy
    summary = feed(procs, engine, transport, 1000)
    assert engine.wait() == 0, engine.stderr
    report = engine.report()
    check_report(report, summary, transport)
    assert report["seconds"] >= 4


@pytest.mark.parametrize("sig, transport", [(signal.SIGTERM, "udp"), (signal.SIGINT, "tcp")],
                         ids=["sigterm-udp", "sigint-tcp"])
def test_run_when_signalled_then_drains_what_arrived_and_reports(procs, config, sig, transport):
    engine = procs.engine(config)
    summary = feed(procs, engine, transport, 300)
    # a last burst, then the signal at once: what is in the socket buffers is still read and decided
    udp = procs.udp(engine)
    udp.send(market_data_frame())
    for seq in range(1, 101):
        udp.send(target_frame(seq, 0.0, source=1, signal_id=0))  # momentum, flat: no change
    report = engine.report(sig)
    check_report(report, {**summary, "market_data": summary["market_data"] + 1}, transport, extra_signals=100)
    assert report["strategies"]["momentum"]["signals"] >= 100


def test_run_when_spin_driver_then_same_accounting(procs, config):
    engine = procs.engine(config, "--driver", "spin", "--duration", "4")
    assert engine.ready["driver"] == "spin"
    summary = feed(procs, engine, "udp", 1000)
    assert engine.wait() == 0, engine.stderr
    check_report(engine.report(), summary, "udp")


def test_run_when_demo_feed_flag_then_one_command_trades(procs, tmp_path):
    """`make run` in small: the demo config with its own feed process, for a bounded time."""
    config = derive_config(tmp_path / "demo")
    engine = procs.engine(config, "--feed", "500", "--duration", "3")
    assert engine.wait() == 0, engine.stderr
    report = engine.report()
    counters = report["counters"]
    assert counters["signals"] > 200 and counters["orders"] > 0 and counters["fills"] > 0
    assert counters["rejects"] > 0  # the demo's deliberately bad signals and tight limits show
    assert_books_balance(report)
