"""`orchestrator run` with its monitoring on, as a process: a real Prometheus scraping /metrics, headless Chromium
on the dashboard, a local webhook receiving alerts, and the faults around them (a scrape in a burst, 100 scrapes a
second, a dashboard left open)."""
import json
import os
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.e2e_kit import derive_config, orders_sent, signal_frame
from tests.infra.servers import http_get, png_pixel, png_size, wait_until

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES = ("index_arbitrage", "mean_reversion", "momentum", "pairs", "scalper")


@pytest.fixture
def config(tmp_path):
    return derive_config(tmp_path / "config", strategies={"pairs": {"enabled": True}}, engine={
        "metrics": {"port": 0, "interval_ms": 200},
        "dashboard": {"port": 0, "refresh_ms": 250},
        "oms": {"sim": {"fee_per_unit": 0.5, "partial_fill_ratio": 0.3, "seed": 3}},
        "quality": {"markouts_ms": [100, 1000]}})


def feed(procs, engine, count, rate=2000, bad=0.0, name="feed"):
    summary = procs.feed(engine, "udp", "--rate", rate, "--count", count, "--duration", 0, "--seed", 1,
                         "--bad-ratio", bad, "--bad-every", 0, name=name)  # the demo's feed.toml sends bad ones too
    assert summary["send_errors"] == 0
    return summary


def settled(engine, signals):
    """The report once the engine has decided `signals` signals and the venue has nothing due."""
    return engine.wait_status(lambda r: r["counters"]["signals"] >= signals and r["oms"]["venue"]["pending"] == 0
                              and r.get("publishes", 0) > 0, f"{signals} signals decided")


def scrape(url):
    status, body = http_get(url)
    assert status == 200, body
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


# ---------------------------------------------------------------------------------------------- prometheus
def test_run_when_metrics_are_configured_then_a_real_prometheus_scrapes_the_engine_and_agrees_with_its_report(
        procs, config, prometheus_server):
    engine = procs.engine(config)
    address = engine.ready["metrics"]
    assert f"metrics http://{address}/metrics" in engine.stderr, "the ready line gives the metrics address"
    prometheus = prometheus_server([address], "500ms")
    summary = feed(procs, engine, 1500)
    status = settled(engine, summary["signals"])

    signals = status["counters"]["signals"]
    prometheus.wait_for_series("orchestrator_engine_signals_total",
                               lambda r: float(r[0]["value"][1]) == signals)
    orders = status["counters"]["orders"]
    prometheus.wait_for_series("sum(orchestrator_quality_orders_total)", lambda r: float(r[0]["value"][1]) == orders)
    p99 = prometheus.wait_for_series("histogram_quantile(0.99, sum by (le) ("
                                     "orchestrator_strategy_signal_to_order_seconds_bucket))")
    assert 0 < float(p99[0]["value"][1]) < 10, "the signal-to-order histogram is queryable"
    assert prometheus.values("up", "instance") == {address: 1.0}
    report = status  # the engine is idle: what it reports now is what Prometheus scraped last

    by_strategy = prometheus.values("orchestrator_strategy_orders_total", "strategy")
    assert by_strategy == {name: float(s["orders"]) for name, s in report["strategies"].items()}
    assert prometheus.values("orchestrator_venue_orders_total", "job") == {"tests": float(orders_sent(report))}
    assert prometheus.values("orchestrator_engine_fills_total", "job") == {"tests": float(report["counters"]["fills"])}
    # P&L attribution: the deploys of a strategy add up to its P&L (one deploy each here)
    realized = prometheus.values("sum by (strategy) (orchestrator_pnl_realized)", "strategy")
    fees = prometheus.values("sum by (strategy) (orchestrator_pnl_fees)", "strategy")
    for name, s in report["strategies"].items():
        assert realized.get(name, 0.0) == pytest.approx(s["pnl"]["realized"], abs=1e-6), name
        assert fees.get(name, 0.0) == pytest.approx(s["pnl"]["fees"], abs=1e-6), name
    versions = {r["metric"]["version"] for r in prometheus.query("orchestrator_pnl_realized")}
    assert versions <= {s["version"] for s in report["strategies"].values()} and versions
    # execution quality, per pair: what the report says
    quality = report["quality"]
    fill_ratio = {(r["metric"]["strategy"], r["metric"]["instrument"]): float(r["value"][1])
                  for r in prometheus.query("orchestrator_quality_fill_ratio")}
    for name, q in quality.items():
        for symbol, row in q["instruments"].items():
            assert fill_ratio[name, symbol] == pytest.approx(row["fill_ratio"]), (name, symbol)
    assert sum(row["fills"] for q in quality.values() for row in q["instruments"].values()) == \
        report["counters"]["fills"]
    # the batch histogram, decode errors by cause, the journal's lag, latency
    batches = prometheus.query("orchestrator_batch_chunks_count")
    assert float(batches[0]["value"][1]) > 0
    assert set(prometheus.values("orchestrator_decode_errors_total", "cause")) == {
        "truncated", "oversize", "bad_version", "bad_type", "malformed", "invalid_market_data", "invalid_report"}
    last_seq = prometheus.values("orchestrator_journal_last_seq", "job")["tests"]
    assert last_seq > 0 and prometheus.values("orchestrator_journal_unsynced_records", "job")["tests"] >= 0
    final = engine.report()  # Prometheus marks the series stale once the target is gone: asked before this
    assert final["counters"] == status["counters"]

    def fills(report):  # (markouts still come due after the status was written)
        return {(name, symbol): (row["orders"], row["fills"], row["fill_ratio"])
                for name, q in report["quality"].items() for symbol, row in q["instruments"].items()}
    assert fills(final) == fills(status)
    assert final["metrics"]["scrapes"] > 0 and final["metrics"]["render_errors"] == 0


# ---------------------------------------------------------------------------------------------- scrapes under load
def test_run_when_scraped_100_times_a_second_through_a_burst_then_every_scrape_is_whole_and_nothing_is_lost(
        procs, config):
    engine = procs.engine(config)
    url = f"http://{engine.ready['metrics']}/metrics"
    results, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():  # 100 a second, bounded by the test's own end
            start = time.monotonic()
            status, body = http_get(url)
            assert status == 200 and body.endswith(b"\n"), body[-200:]
            line = re.search(rb"^orchestrator_engine_signals_total ([0-9.e+]+)$", body, re.M)
            results.append(float(line[1]))
            time.sleep(max(0.0, 0.01 - (time.monotonic() - start)))

    scraper = threading.Thread(target=hammer, daemon=True)
    scraper.start()
    try:
        summary = feed(procs, engine, 40_000, rate=20_000)  # the burst: scrapes land in the middle of it
        status = settled(engine, summary["signals"])
        time.sleep(0.5)
    finally:
        stop.set()
        scraper.join(30)
    report = engine.report()

    assert report["counters"]["signals"] == summary["signals"] == status["counters"]["signals"]
    assert report["transports"]["udp"]["kernel_drops"] == 0, "the engine kept up: no datagram dropped"
    assert len(results) > 100
    assert results == sorted(results), "a counter never goes back: each scrape is one whole snapshot"
    assert results[-1] == summary["signals"]
    metrics = report["metrics"]
    assert metrics["scrapes"] >= len(results) and metrics["render_errors"] == 0
    assert metrics["renders"] <= metrics["publishes"] < metrics["scrapes"], "a snapshot is rendered once"


# ---------------------------------------------------------------------------------------------- dashboard
def test_run_when_the_dashboard_is_opened_in_chromium_then_it_shows_strategies_rejects_latency_and_alerts(
        procs, config, chromium):
    engine = procs.engine(config)
    url = f"http://{engine.ready['dashboard']}/"
    assert f"dashboard {url}" in engine.stderr
    summary = feed(procs, engine, 1500, bad=0.05)
    status = settled(engine, summary["signals"])

    view = json.loads(http_get(url + "api/view")[1])
    dom = chromium.dom(url, budget_ms=3000)
    shot = chromium.screenshot(url, chromium.dir / "dashboard.png", width=1280, height=900, budget_ms=3000)

    assert [s["name"] for s in view["strategies"]] == list(STRATEGIES)
    for name in STRATEGIES:  # the table the script drew, not the page's skeleton
        assert f"<td>{name}</td>" in dom, name
    states = {s["state"] for s in status["strategies"].values()}
    assert any(f'class="{state}">{state}</td>' in dom for state in states)
    top_reason = max(view["rejects_by_reason"], key=view["rejects_by_reason"].get)
    assert f"<td>{top_reason}</td>" in dom
    assert "<polyline" in dom, "P&L sparklines"
    assert "as of 20" in dom and "loading" not in dom
    assert view["strategies"][0]["latency_us"]["signal_to_order"]["p99"] > 0
    if view["alerts"]["active"]:
        assert view["alerts"]["active"][0]["summary"] in dom.replace("&gt;", ">")
    assert png_size(shot) == (1280, 900)
    header, body = png_pixel(shot, 4, 4), png_pixel(shot, 640, 880)
    assert header == (0x1D, 0x23, 0x30) and header != body, "not blank: the header bar over the page"
    if os.environ.get("UPDATE_SCREENSHOT") == "1":  # the README shows docs/dashboard.png; a run leaves it alone
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")
    report = engine.report()
    assert report["dashboard"]["requests"] >= 3 and report["dashboard"]["views"] >= 1


@pytest.mark.slow
def test_run_when_the_dashboard_stays_open_under_traffic_then_the_engines_memory_stays_flat(procs, config):
    engine = procs.engine(config)
    url = f"http://{engine.ready['dashboard']}/api/view"
    pid = engine.ready["pid"]
    stop, polls = threading.Event(), []

    def poll():
        while not stop.is_set():
            status, _ = http_get(url)
            polls.append(status)
            time.sleep(0.05)

    def rss_kb():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        feed(procs, engine, 4000, rate=2000, name="warm-up")  # every path and buffer touched once
        time.sleep(1)
        before = rss_kb()
        samples = []
        for k in range(4):
            feed(procs, engine, 4000, rate=2000, name=f"feed-{k}")
            samples.append(rss_kb())
    finally:
        stop.set()
        poller.join(30)
    engine.report()

    assert polls.count(200) > 50
    growth_kb = max(samples) - before
    assert growth_kb < 16 * 1024, f"RSS grew {growth_kb} kB over the soak: {before} -> {samples}"


# ---------------------------------------------------------------------------------------------- alerts
class Receiver:
    """A local webhook: records every JSON body it accepts."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d/alerts" % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_run_when_a_breaker_trips_then_the_webhook_and_the_log_hear_it_once_with_the_reason(procs, tmp_path):
    receiver = Receiver()
    try:
        config = derive_config(tmp_path / "config", keep=["momentum"], engine={
            "alerts": {"interval_ms": 100, "webhook": {"url": receiver.url}, "stale_feed_s": 0,
                       "rules": [{"name": "momentum_rejecting", "metric": "orchestrator_strategy_rejects_total",
                                  "labels": {"strategy": "momentum"}, "threshold": 0, "window_s": 60,
                                  "severity": "info"}]}},
            strategies={"momentum": {"enabled": True, "breakers": {"max_consecutive_rejects": 3}}})
        engine = procs.engine(config)
        udp = procs.udp(engine)
        for seq in range(1, 10):  # prices far outside the collar: every order rejected, the breaker trips at 3
            udp.send(signal_frame(seq, price=9000.0))
        wait_until(lambda: any(a["alert"] == "breaker_tripped" for a in receiver.received), "breaker alert",
                   timeout=30)
        time.sleep(0.5)
        firing = [a for a in receiver.received if a["status"] == "firing"]
        names = sorted(a["alert"] for a in firing)
        assert names.count("breaker_tripped") == 1 and names.count("strategy_state") == 1
        assert "momentum_rejecting" in names
        state = next(a for a in firing if a["alert"] == "strategy_state")
        assert state["labels"] == {"strategy": "momentum", "state": "HALTED"} and state["severity"] == "critical"
        assert "breaker: consecutive_rejects" in state["summary"]
        report = engine.report()
    finally:
        receiver.close()
    alerts = report["alerts"]
    assert alerts["sinks"]["webhook"]["sent"] == len(receiver.received) >= 3
    assert alerts["fired"]["breaker_tripped"] == 1 and alerts["firing"]["critical"] == 2
    assert 'alert {"alert":"breaker_tripped"' in engine.stderr, "the log sink: one JSON line per notification"
