"""engine/alerts.py and adapters/webhook.py: episodes fire once and resolve, rules over exported series, and a
webhook sink against a real local HTTP server that hangs, answers 500, then recovers."""
import dataclasses
import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest

from adapters.webhook import WebhookConfig, WebhookSink
from engine.alerts import AlertManager, rule_series
from engine.config.schema import Alerts
from engine.exposition import snapshot
from engine.state import EngineState
from kernels.dtypes import (
    C_REJECTS, C_REPORT_MISMATCH, C_REPORT_OVERFILL, C_REPORT_UNKNOWN_ORDER, HALTED, NO_TRIP, TRIP_DRAWDOWN,
)
from tests.infra.servers import wait_until

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
S = 1_000_000_000
T0 = 1_800_000_000 * S


class Recorder:
    """A sink that keeps what it was sent."""
    name = "test"

    def __init__(self):
        self.sent = []
        self.stats = {"sent": 0}

    def open(self):
        pass

    def send(self, payload):
        self.sent.append(payload)
        self.stats["sent"] += 1

    def close(self):
        pass


@pytest.fixture
def state():
    return EngineState.load(DEMO)


def alerts(**values):
    return msgspec.convert(values, Alerts)


def manager(state, config=None, **kw):
    config = config or alerts(stale_feed_s=0)
    series = rule_series(snapshot(state, T0)) if config.rules else {}
    sink = Recorder()
    return AlertManager(config, "test", series, sinks=[sink], started_ns=T0, **kw), sink


def seconds(at):
    """Seconds after T0 of a notification's ISO time."""
    return round(datetime.fromisoformat(at).timestamp() - T0 / S)


def judge(m, state, t, **fields):
    snap = snapshot(state, t)
    m.judge(dataclasses.replace(snap, **fields) if fields else snap)


def test_alerts_when_a_breaker_trips_then_one_firing_until_it_clears_then_one_resolved(state):
    m, sink = manager(state)
    state.strategies[2]["trip_cause"], state.strategies[2]["state"] = TRIP_DRAWDOWN, HALTED

    for k in range(5):
        judge(m, state, T0 + k * S, strategy_reasons=("",) * 5)
    state.strategies[2]["trip_cause"], state.strategies[2]["state"] = NO_TRIP, 2  # reset, activated
    judge(m, state, T0 + 6 * S)

    events = [(p["alert"], p["status"], p["labels"]) for p in sink.sent]
    name = state.strategy_names[2]
    assert events == [
        ("breaker_tripped", "firing", {"cause": "drawdown", "strategy": name}),
        ("strategy_state", "firing", {"state": "HALTED", "strategy": name}),
        ("breaker_tripped", "resolved", {"cause": "drawdown", "strategy": name}),
        ("strategy_state", "resolved", {"state": "HALTED", "strategy": name}),
    ]
    assert sink.sent[-1]["duration_s"] == 6.0 and sink.sent[0]["severity"] == "critical"
    assert m.fired["breaker_tripped"] == 1 and m.active == {}


def test_alerts_when_oms_link_and_journal_fail_then_each_fires_and_resolves_with_them(state):
    m, sink = manager(state)
    journal = {"failing": True}

    judge(m, state, T0, oms_up=False, journal=journal)
    judge(m, state, T0 + S, oms_up=False, journal=journal)
    judge(m, state, T0 + 2 * S, oms_up=True, journal={"failing": False})

    assert [(p["alert"], p["status"]) for p in sink.sent] == [
        ("journal_failing", "firing"), ("oms_link_down", "firing"),
        ("journal_failing", "resolved"), ("oms_link_down", "resolved")]
    assert m.export()["firing"] == {"info": 0, "warning": 0, "critical": 0}


def test_alerts_when_reports_for_unknown_orders_arrive_then_it_fires_and_resolves_after_the_quiet_time(state):
    m, sink = manager(state, alerts(stale_feed_s=0, unknown_order_quiet_s=5))
    judge(m, state, T0)
    state.counters[C_REPORT_UNKNOWN_ORDER] = 2

    judge(m, state, T0 + S)
    judge(m, state, T0 + 4 * S)
    state.counters[C_REPORT_UNKNOWN_ORDER] = 3
    judge(m, state, T0 + 5 * S)   # moved again: the same episode goes on
    judge(m, state, T0 + 9 * S)
    judge(m, state, T0 + 10 * S)  # 5 s quiet

    assert [(p["alert"], p["status"], seconds(p["at"])) for p in sink.sent] == [
        ("unknown_order_reports", "firing", 1), ("unknown_order_reports", "resolved", 10)]


def test_alerts_when_reports_disagree_with_orders_then_report_mismatches_fires_and_resolves_after_quiet(state):
    m, sink = manager(state, alerts(stale_feed_s=0, events_quiet_s=5))
    state.counters[C_REPORT_MISMATCH] = 4  # counts from before the first look are no episode
    judge(m, state, T0)
    state.counters[C_REPORT_OVERFILL] = 1

    judge(m, state, T0 + S)
    judge(m, state, T0 + 5 * S)
    judge(m, state, T0 + 6 * S)  # 5 s quiet

    assert [(p["alert"], p["status"], seconds(p["at"]), p["value"]) for p in sink.sent] == [
        ("report_mismatches", "firing", 1, 5.0), ("report_mismatches", "resolved", 6, 5.0)]
    assert sink.sent[0]["severity"] == "warning"


def test_alerts_when_the_oms_link_is_given_up_for_lost_acks_then_a_critical_alert_fires_beside_link_down(state):
    m, sink = manager(state, alerts(stale_feed_s=0, events_quiet_s=30))
    judge(m, state, T0, oms_up=True, engine_stats={"oms_given_up": 0})

    judge(m, state, T0 + S, oms_up=False, engine_stats={"oms_given_up": 1})
    judge(m, state, T0 + 2 * S, oms_up=True, engine_stats={"oms_given_up": 1})  # reconnected
    judge(m, state, T0 + 31 * S, oms_up=True, engine_stats={"oms_given_up": 1})

    assert [(p["alert"], p["status"], seconds(p["at"])) for p in sink.sent] == [
        ("oms_link_given_up", "firing", 1), ("oms_link_down", "firing", 1), ("oms_link_down", "resolved", 2),
        ("oms_link_given_up", "resolved", 31)]
    assert sink.sent[0]["severity"] == "critical" and "unacknowledged" in sink.sent[0]["summary"]


def test_alerts_when_an_instrument_a_strategy_trades_gets_no_market_data_then_stale_feed_fires(state):
    m, sink = manager(state, alerts(stale_feed_s=10))
    traded = {state.instrument_symbols[i] for i in range(len(state.instrument_symbols))
              if state.positions["allowed"][:, i].any()}

    judge(m, state, T0 + 5 * S)
    assert sink.sent == []
    judge(m, state, T0 + 11 * S)  # 11 s since the start, no market data at all
    assert {p["labels"]["instrument"] for p in sink.sent} == traded
    state.instruments["md_ts_ns"] = T0 + 10 * S
    judge(m, state, T0 + 12 * S)
    assert {p["labels"]["instrument"] for p in sink.sent if p["status"] == "resolved"} == traded


def test_alerts_when_a_counter_rule_moves_within_its_window_then_it_fires_once_and_resolves_when_quiet(state):
    rule = {"name": "rejects_burst", "metric": "orchestrator_engine_rejects_total", "threshold": 5, "window_s": 10,
            "severity": "warning"}
    m, sink = manager(state, alerts(stale_feed_s=0, rules=[rule]))

    for t, rejects in ((0, 100), (2, 103), (4, 110), (8, 120), (12, 121), (20, 121)):
        state.counters[C_REJECTS] = rejects
        judge(m, state, T0 + t * S)

    assert [(p["status"], p["value"], seconds(p["at"])) for p in sink.sent] == [
        ("firing", 10.0, 4), ("resolved", 18.0, 20)]  # the last value while firing (121 - 103, at 12 s)
    assert "orchestrator_engine_rejects_total = 10 > 5 (over 10 s)" in sink.sent[0]["summary"]


def test_alerts_when_a_gauge_rule_holds_for_its_window_then_it_fires_per_matching_series(state):
    rule = {"name": "deep_loss", "metric": "orchestrator_strategy_realized_pnl", "op": "<", "threshold": -1000,
            "window_s": 3, "labels": {"strategy": "momentum"}}
    m, sink = manager(state, alerts(stale_feed_s=0, rules=[rule]))
    momentum, other = state.strategy_ids["momentum"], state.strategy_ids["pairs"]
    state.strategies[momentum]["realized"] = state.strategies[other]["realized"] = -5000.0

    for t in (0, 1, 2):
        judge(m, state, T0 + t * S)
    assert sink.sent == [], "held for 2 s only"
    judge(m, state, T0 + 3 * S)
    assert [(p["alert"], p["labels"]) for p in sink.sent] == [("deep_loss", {"strategy": "momentum"})]


def test_alerts_when_a_rule_names_a_series_nobody_exports_then_the_engine_refuses_to_start(state):
    config = alerts(rules=[{"name": "typo", "metric": "orchestrator_strategy_rejekts_total", "threshold": 1}])

    with pytest.raises(ValueError, match="rules\\[0\\] \\(typo\\): no series 'orchestrator_strategy_rejekts_total'"):
        AlertManager(config, "test", rule_series(snapshot(state, T0)))


def test_alerts_when_running_as_a_thread_then_offered_snapshots_are_judged_off_the_callers_thread(state):
    m, sink = manager(state)
    m.open()
    try:
        state.strategies[0]["trip_cause"] = TRIP_DRAWDOWN
        m.offer(snapshot(state, T0))
        wait_until(lambda: sink.sent, "a notification", timeout=10)
    finally:
        m.close()
    assert sink.sent[0]["alert"] == "breaker_tripped" and m.judged >= 1


# ---------------------------------------------------------------------------------------------- the webhook
class Webhook:
    """A real HTTP server on loopback whose answer the test sets: "ok" (204), "error" (500), "hang" (reads the
    request, answers nothing until released), "reject" (400)."""

    def __init__(self):
        self.mode, self.received, self.attempts = "ok", [], 0
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.attempts += 1
                mode = hook.mode
                if mode == "hang":
                    hook.release.wait(10)
                    return
                status = {"ok": 204, "error": 500, "reject": 400}[mode]
                if status == 204:
                    hook.received.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def sink_for(hook, **values):
    return WebhookSink(msgspec.convert({"url": hook.url, "timeout_ms": 300, "backoff_min_ms": 20,
                                        "backoff_max_ms": 100, **values}, WebhookConfig))


def test_webhook_when_the_receiver_answers_500_then_recovers_then_the_notification_arrives_after_retries(webhook):
    webhook.mode = "error"
    sink = sink_for(webhook, retries=20)
    sink.open()
    try:
        assert sink.send({"n": 1}) is True
        wait_until(lambda: webhook.attempts >= 3, "three attempts", timeout=10)
        webhook.mode = "ok"
        wait_until(lambda: webhook.received, "the delivery", timeout=10)
    finally:
        sink.close()
    assert webhook.received == [{"n": 1}]
    assert sink.stats.sent == 1 and sink.stats.retries >= 2 and sink.stats.dropped_failed == 0


def test_webhook_when_the_receiver_hangs_then_send_never_blocks_and_the_attempt_times_out_and_retries(webhook):
    webhook.mode = "hang"
    sink = sink_for(webhook, retries=1, queue=4)
    sink.open()
    try:
        start = time.monotonic()
        accepted = [sink.send({"n": k}) for k in range(10)]
        took = time.monotonic() - start
        assert accepted.count(True) >= 4 and sink.stats.dropped_queue_full == accepted.count(False) > 0
        assert took < 1.0, "send() only queues"  # a generous bound: it never waits for the receiver
        wait_until(lambda: sink.stats.dropped_failed >= 1, "a delivery given up", timeout=10)
        webhook.mode = "ok"
        webhook.release.set()
        wait_until(lambda: webhook.received, "a delivery once the receiver answers", timeout=15)
    finally:
        sink.close(timeout_s=5)
    stats = sink.stats
    assert stats.sent >= 1 and stats.sent + stats.dropped_failed + stats.dropped_queue_full == 10


def test_webhook_when_over_quota_then_notifications_are_dropped_and_counted_not_queued(webhook):
    sink = sink_for(webhook, quota_per_minute=3)
    sink.open()
    try:
        for k in range(8):
            sink.send({"n": k})
        wait_until(lambda: sink.stats.sent + sink.stats.dropped_quota == 8, "all eight judged", timeout=10)
    finally:
        sink.close()
    assert [p["n"] for p in webhook.received] == [0, 1, 2] and sink.stats.dropped_quota == 5


def test_webhook_when_the_receiver_rejects_with_400_then_no_retry_and_it_is_counted(webhook):
    webhook.mode = "reject"
    sink = sink_for(webhook, retries=5)
    sink.open()
    try:
        sink.send({"n": 1})
        wait_until(lambda: sink.stats.dropped_rejected == 1, "the rejection", timeout=10)
    finally:
        sink.close()
    assert webhook.attempts == 1 and sink.stats.retries == 0


def test_webhook_when_closed_with_a_backlog_behind_a_hung_receiver_then_close_ends_and_counts_what_was_left(
        webhook):
    webhook.mode = "hang"
    sink = sink_for(webhook, retries=0, timeout_ms=2000)
    sink.open()
    for k in range(5):
        sink.send({"n": k})
    start = time.monotonic()
    sink.close(timeout_s=0.2)
    assert time.monotonic() - start < 5
    assert sink.stats.sent == 0 and sink.stats.dropped_failed == 5
