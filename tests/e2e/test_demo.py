"""`make run` as a new user sees it: config/demo with its own feed (`run --feed`), for a bounded time. The demo
must show a working engine: every strategy trading and still ACTIVE at the end, orders and fills far above
rejects, and the rejects the feed's deliberately bad inputs cause (config/demo/feed.toml) counted with their
reasons."""
import json
import os
import subprocess

from tests.e2e.e2e_kit import ORCHESTRATOR, READY_TIMEOUT_S, assert_books_balance, derive_config, reasons

DURATION_S = 6
CONFIG_REASONS = {"restricted", "not_tradable", "not_active", "qty_max", "notional_max", "position_max", "gross_max",
                  "net_max", "rate", "open_orders_max"}  # what a feed and limits that do not fit would cause


def test_demo_when_run_with_its_feed_then_every_strategy_trades_and_stays_active(procs, tmp_path):
    config = derive_config(tmp_path / "demo")  # the demo as it is, listening on port 0; its journal under tmp
    engine = procs.engine(config, "--feed", "1000", "--duration", str(DURATION_S), ready=False)
    assert engine.wait(DURATION_S + READY_TIMEOUT_S) == 0, engine.stderr
    report = json.loads(engine.stdout)
    counters, strategies = report["counters"], report["strategies"]
    assert {name: s["state"] for name, s in strategies.items()} == dict.fromkeys(strategies, "ACTIVE")
    for name, s in strategies.items():
        assert s["orders"] > 0 and s["fills"] > 0, (name, s)
        assert not s["breaker"]["trips"], (name, s["breaker"])
    assert counters["orders"] >= 10 * counters["rejects"], counters
    assert counters["fills"] > 0 and counters["breaker_trips"] == 0
    assert any(s["pnl"]["realized"] or s["pnl"]["unrealized"] for s in strategies.values())
    assert_books_balance(report)
    # the deliberate bad inputs show, each with its reason (nan, stale, duplicate; oversize as a frame counter); the
    # feed and the limits fit each other
    by_reason = reasons(report)
    assert all(by_reason.get(reason, 0) > 0 for reason in ("not_finite", "stale", "duplicate")), by_reason
    assert counters["frame_oversize"] > 0, counters
    assert not set(by_reason) & CONFIG_REASONS, by_reason


LONG_NAME = "index_arbitrage_with_a_name_as_long_as_a_config_allows_012345678"  # 64 characters, the most


def test_run_when_stdout_is_a_pipe_then_the_report_is_printed_full_width(procs, tmp_path):
    """Not a terminal (a log, CI): no column is cut to fit 80 columns ("inde…", "-246…")."""
    config = derive_config(tmp_path / "demo", strategies={"index_arbitrage": {"name": LONG_NAME}})
    engine = subprocess.run([*ORCHESTRATOR, "run", str(config), "--feed", "500", "--duration", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            cwd=tmp_path, timeout=READY_TIMEOUT_S + 60, env={**os.environ, "COLUMNS": "80"})
    assert engine.returncode == 0, engine.stderr
    report = engine.stdout
    assert "…" not in report, report
    rows = {cells[0]: cells for line in report.splitlines()
            if len(cells := [cell.strip() for cell in line.split("│")[1:-1]]) == 10}
    assert LONG_NAME in rows, report
    name, state, orders, fills, rejects, realized, unrealized, fees, trips, p99 = rows[LONG_NAME]
    assert state == "ACTIVE" and int(orders) > 0 and int(fills) > 0 and int(rejects) >= 0, rows[LONG_NAME]
    for number in (realized, unrealized, fees, p99):
        float(number.replace(",", ""))  # whole numbers, not "-246…"
    assert max(map(len, report.splitlines())) > 80
