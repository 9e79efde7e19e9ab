"""Alerts: built-in events and configured rules, judged on the snapshots the engine publishes, sent to sinks.

The engine's thread only hands over a snapshot (`offer`, one reference assignment, at most every
`[alerts] interval_ms`); a thread of the manager's own judges it, so a rule over any exported series (which
needs the whole exposition rendered: milliseconds) never stalls a batch. Sinks never block that thread either:
the log sink writes one line, the webhook sink queues (adapters/webhook.py).

Every alert is an episode with a key (its name and labels): it fires once when its condition starts to hold,
and resolves once when it stops; each of the two is one notification to every sink. Built-in alerts
(docs/alerts.md):
    breaker_tripped       strategy, cause      a strategy's circuit breaker is tripped (critical)
    strategy_state        strategy, state      a strategy is PAUSED (info), REDUCING (warning) or HALTED
                                               (critical), with the reason (an operator's command, a breaker,
                                               the OMS link policy, the journal)
    stale_feed            instrument           no market data for `stale_feed_s` for an instrument a strategy
                                               trades (counted from the engine's start until the first)
    unknown_order_reports                      execution reports for orders the engine does not know arrived;
                                               resolved after `unknown_order_quiet_s` without another
    report_mismatches                          reconciliation: reports whose strategy or deploy differ from the
                                               order's, or fills beyond its leaves; resolved after
                                               `events_quiet_s` without another
    oms_link_given_up                          lost acknowledgements: the watched OMS link given up (orders
                                               unacknowledged past `[oms] ack_timeout_ms`, or a stalled link;
                                               critical); resolved after `events_quiet_s` without another
    journal_failing                            the journal's last commit failed (critical)
    oms_link_down                              the OMS link is down (critical)
Rules ([[alerts.rules]]): `metric` `op` `threshold`, over every exported series of that name whose labels
include the rule's `labels`; a counter's value is its increase over the last `window_s`, a gauge's is its
value, held for `window_s`.
"""
import json
import logging
import operator
import threading
import time
from collections import deque
from datetime import datetime, timezone

from adapters.prometheus import PrometheusConfig, families
from adapters.webhook import DROP_CAUSES, WebhookSink
from kernels.dtypes import (
    C_REPORT_MISMATCH, C_REPORT_OVERFILL, C_REPORT_UNKNOWN_ORDER, HALTED, NO_TRIP, PAUSED, REDUCING, STATE_NAMES,
    TRIP_NAMES,
)

log = logging.getLogger("orchestrator.alerts")
BUILTIN = ("breaker_tripped", "strategy_state", "stale_feed", "unknown_order_reports", "report_mismatches",
           "oms_link_given_up", "journal_failing", "oms_link_down")
SEVERITIES = ("info", "warning", "critical")
STATE_SEVERITY = {PAUSED: "info", REDUCING: "warning", HALTED: "critical"}
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
       "!=": operator.ne}


def iso(ns):
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="milliseconds")


class LogSink:
    """Each notification as one JSON line on the `orchestrator.alerts` logger (warning, or error for critical)."""
    name = "log"

    def __init__(self):
        self.stats = {"sent": 0}

    def open(self):
        pass

    def send(self, payload):
        level = logging.ERROR if payload["severity"] == "critical" and payload["status"] == "firing" else \
            logging.WARNING
        log.log(level, "alert %s", json.dumps(payload, separators=(",", ":"), sort_keys=True))
        self.stats["sent"] += 1
        return True

    def close(self):
        pass


class Alert:
    __slots__ = ("name", "labels", "severity", "summary", "value", "started_ns")

    def __init__(self, name, labels, severity, summary, value, started_ns):
        self.name, self.labels, self.severity, self.summary = name, labels, severity, summary
        self.value, self.started_ns = value, started_ns

    def as_dict(self):
        return {"alert": self.name, "labels": dict(self.labels), "severity": self.severity, "summary": self.summary,
                "value": self.value, "started_at": iso(self.started_ns)}


def rule_series(snapshot, config=PrometheusConfig()):
    """The series names a snapshot serves, as a rule names them (counters with `_total`, histograms with their
    `_bucket`, `_sum` and `_count`) -> the family's type."""
    out = {}
    for f in families(snapshot, config):
        if f.type == "counter":
            out[f.name + "_total"] = "counter"
        elif f.type == "histogram":
            out.update({f.name + suffix: "counter" for suffix in ("_bucket", "_sum", "_count")})
        else:
            out[f.name] = "gauge"
    return out


class AlertManager:
    """`open()` starts the judging thread and the sinks; `offer(snapshot)` (engine thread) hands over the latest
    snapshot; `close()` judges the last one offered, stops the thread and closes the sinks."""

    def __init__(self, config, engine_name, series, prometheus=PrometheusConfig(), sinks=None, started_ns=None):
        self.config, self.engine_name, self.prometheus = config, engine_name, prometheus
        unknown = [(k, r.metric) for k, r in enumerate(config.rules) if r.metric not in series]
        if unknown:
            k, metric = unknown[0]
            raise ValueError(f"[alerts] rules[{k}] ({config.rules[k].name}): no series {metric!r} is exported; "
                             f"see docs/metrics.md")
        self.rules = [r for r in config.rules if r.enabled]
        self.kinds = {r.name: series[r.metric] for r in self.rules}
        if sinks is None:
            sinks = ([LogSink()] if config.log else []) + ([WebhookSink(config.webhook)] if config.webhook else [])
        self.sinks = sinks
        self.active: dict[tuple, Alert] = {}
        self.recent = deque(maxlen=50)  # the last notifications, for the dashboard
        self.fired = {name: 0 for name in BUILTIN + tuple(r.name for r in self.rules)}
        self.notifications = 0
        self.started_ns = started_ns or time.time_ns()
        self._pending = None  # the snapshot offered and not judged yet
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self._history = {}  # counter rules: series key -> deque of (t, value)
        self._since = {}    # gauge rules: series key -> when the condition started to hold
        self._counted = {}  # built-ins over counts: name -> (count, when it last moved)
        self.judged = 0
        self.errors = 0

    # ------------------------------------------------------------------------------------------ threads
    def open(self):
        for sink in self.sinks:
            sink.open()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    def offer(self, snapshot):
        """Engine thread: the latest snapshot, judged soon. Never waits."""
        self._pending = snapshot
        self._wake.set()

    def _run(self):
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            self._judge_pending()

    def _judge_pending(self):
        snapshot, self._pending = self._pending, None
        if snapshot is None:
            return
        try:
            self.judge(snapshot)
        except Exception:  # a bug in a rule must not end the alerting
            self.errors += 1
            log.exception("alerts: judging a snapshot failed")

    def close(self):
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
            self._judge_pending()
        for sink in self.sinks:
            sink.close()

    # ------------------------------------------------------------------------------------------ judging
    def judge(self, snapshot):
        """Every alert's condition on this snapshot; notify what started and what stopped."""
        now = snapshot.taken_ns
        holding = {}  # key -> (severity, summary, value)
        self._builtin(snapshot, now, holding)
        if self.rules:
            self._rules(snapshot, now, holding)
        for key in [k for k in self.active if k not in holding]:
            alert = self.active.pop(key)
            self._notify("resolved", alert, now)
        for key, (severity, summary, value) in holding.items():
            if key not in self.active:
                name, labels = key
                alert = self.active[key] = Alert(name, labels, severity, summary, value, now)
                self.fired[name] = self.fired.get(name, 0) + 1
                self._notify("firing", alert, now)
            else:
                self.active[key].value = value
        self.judged += 1

    def _builtin(self, snap, now, holding):
        names = snap.strategy_names
        reasons = snap.strategy_reasons
        for s, name in enumerate(names):
            row = snap.strategies[s]
            cause = int(row["trip_cause"])
            if cause != NO_TRIP:
                holding["breaker_tripped", (("cause", TRIP_NAMES[cause]), ("strategy", name))] = (
                    "critical", f"{name}: circuit breaker tripped ({TRIP_NAMES[cause]})", 1.0)
            state = int(row["state"])
            if state in STATE_SEVERITY:
                reason = reasons[s] if s < len(reasons) else ""
                holding["strategy_state", (("state", STATE_NAMES[state]), ("strategy", name))] = (
                    STATE_SEVERITY[state], f"{name} is {STATE_NAMES[state]}" + (f": {reason}" if reason else ""),
                    float(state))
        if self.config.stale_feed_s > 0:
            traded = snap.positions["allowed"].any(axis=0) if len(snap.positions) else ()
            limit_ns = self.config.stale_feed_s * 1e9
            for i, symbol in enumerate(snap.instrument_symbols):
                if not traded[i]:
                    continue
                last = int(snap.instruments[i]["md_ts_ns"]) or self.started_ns
                age = now - last
                if age > limit_ns:
                    holding["stale_feed", (("instrument", symbol),)] = (
                        "warning", f"{symbol}: no market data for {age / 1e9:.1f} s", age / 1e9)
        counted = (  # name, count since start, quiet time, severity, what
            ("unknown_order_reports", int(snap.counters[C_REPORT_UNKNOWN_ORDER]), self.config.unknown_order_quiet_s,
             "warning", "execution reports for unknown orders"),
            ("report_mismatches", int(snap.counters[C_REPORT_MISMATCH]) + int(snap.counters[C_REPORT_OVERFILL]),
             self.config.events_quiet_s, "warning",
             "execution reports that disagree with the engine's order (strategy, deploy, or more than its leaves)"),
            ("oms_link_given_up", int(snap.engine_stats.get("oms_given_up", 0)), self.config.events_quiet_s,
             "critical", "the OMS link given up (orders unacknowledged past ack_timeout_ms, or a stalled link)"))
        for name, count, quiet_s, severity, what in counted:
            seen = self._counted.get(name)
            if seen is None or count < seen[0]:
                self._counted[name] = seen = (count, None)  # the first look (or a restarted count): no episode
            elif count > seen[0]:
                self._counted[name] = seen = (count, now)
            moved = seen[1]
            if moved is not None and now - moved < quiet_s * 1e9:
                holding[name, ()] = (severity, f"{what} ({count} since start)", float(count))
        if snap.journal is not None and snap.journal["failing"]:
            holding["journal_failing", ()] = ("critical", "the journal cannot be written", 1.0)
        if snap.oms_up is False:
            holding["oms_link_down", ()] = ("critical", "the OMS link is down", 1.0)

    def _rules(self, snap, now, holding):
        wanted = {r.metric for r in self.rules}
        values = {}  # metric -> [(labels dict, value)]
        for f in families(snap, self.prometheus):
            for sample in f.samples:
                if sample.name in wanted:
                    values.setdefault(sample.name, []).append((sample.labels, sample.value))
        for rule in self.rules:
            check = OPS[rule.op]
            for labels, value in values.get(rule.metric, ()):
                if any(labels.get(k) != v for k, v in rule.labels.items()):
                    continue
                key = (rule.name, tuple(sorted(labels.items())))
                if self.kinds[rule.name] == "counter":
                    value = self._increase(key, now, value, rule.window_s)
                    holds = check(value, rule.threshold)
                else:
                    holds = check(value, rule.threshold)
                    if holds:
                        since = self._since.setdefault(key, now)
                        holds = now - since >= rule.window_s * 1e9
                    else:
                        self._since.pop(key, None)
                if holds:
                    holding[key] = (rule.severity, f"{rule.metric}{_labels_text(labels)} = {value:g} "
                                    f"{rule.op} {rule.threshold:g}" + (f" (over {rule.window_s:g} s)"
                                                                        if rule.window_s else ""), float(value))

    def _increase(self, key, now, value, window_s):
        history = self._history.setdefault(key, deque())
        history.append((now, value))
        horizon = now - window_s * 1e9
        while len(history) > 1 and history[1][0] <= horizon:
            history.popleft()
        return value - history[0][1]

    def _notify(self, status, alert, now):
        payload = {"engine": self.engine_name, "status": status, **alert.as_dict(), "at": iso(now)}
        if status == "resolved":
            payload["duration_s"] = round((now - alert.started_ns) / 1e9, 3)
        self.notifications += 1
        self.recent.append(payload)
        for sink in self.sinks:
            try:
                sink.send(payload)
            except Exception:
                self.errors += 1
                log.exception("alerts: sink %s failed", sink.name)

    # ------------------------------------------------------------------------------------------ reading
    def export(self):
        """Counts for the metrics (plain data; read from any thread)."""
        firing = {severity: 0 for severity in SEVERITIES}
        for alert in list(self.active.values()):
            firing[alert.severity] += 1
        sinks = {}
        for sink in self.sinks:
            stats = sink.stats if isinstance(sink.stats, dict) else sink.stats.as_dict()
            sinks[sink.name] = {"sent": stats["sent"], "retries": stats.get("retries", 0),
                                **{f"dropped_{c}": stats.get(f"dropped_{c}", 0) for c in DROP_CAUSES}}
        return {"firing": firing, "fired": dict(self.fired), "sinks": sinks}

    def view(self):
        """Active alerts and the last notifications, for the dashboard and the report."""
        return {"active": [a.as_dict() for a in list(self.active.values())], "recent": list(self.recent)[::-1]}

    def report(self):
        return {**self.export(), **self.view(), "notifications": self.notifications, "judged": self.judged,
                "errors": self.errors}


def _labels_text(labels):
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
