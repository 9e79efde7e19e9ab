"""Monitoring of a running engine: one listener and housekeeper (engine/driver.py) that owns the metrics
exposition, execution quality, P&L attribution, alerts and the dashboard, all off the hot path.

What runs where:
- engine thread, after a batch (`on_batch`, one listener): quality and attribution copy the batch's orders and
  fills out of the rings (a few numpy copies);
- engine thread, between steps (`maintain`, every heartbeat): quality and attribution fold what was staged in
  (vectorised) and read the marks the markouts came due for; the day rolls; and at most every `interval_ns`
  one `MetricsSnapshot` (engine/exposition.py) is taken and handed to the exporter (/metrics), the alert thread
  and the dashboard thread, by reference: none of them ever reads the arena;
- their own threads: the HTTP exporter renders, the alert thread judges rules and built-in events, the
  dashboard serves JSON.

The schedule: a snapshot when the first of the enabled consumers wants one (`[metrics] interval_ms`,
`[alerts] interval_ms`, `[dashboard] refresh_ms`); each takes the latest.
"""
import logging
import time

import numpy as np

from adapters.prometheus import LATENCY_BOUNDS_S, PrometheusConfig
from engine.alerts import AlertManager, rule_series
from engine.attribution import PnlAttribution
from engine.exposition import Exposition, snapshot
from engine.quality import ExecutionQuality
from kernels.arena import S_STRATEGIES
from kernels.dtypes import ACTIVE, NO_TRIP, STATE_NAMES, TRIP_NAMES

log = logging.getLogger("orchestrator.monitor")
LATENCY_BOUNDS_NS = tuple(bound * 1e9 for bound in LATENCY_BOUNDS_S)


class Monitor:
    def __init__(self, state, config, *, latency=None, journal=None, clock=time.time_ns, started_ns=None):
        self.state, self.config, self.latency, self.journal, self.clock = state, config, latency, journal, clock
        engine_config = config.engine
        now = clock() if started_ns is None else started_ns
        self.started_ns = now
        self.quality = ExecutionQuality(state, engine_config.quality) if engine_config.quality.enabled else None
        self.pnl = PnlAttribution(state, engine_config.pnl, now)
        metrics = engine_config.metrics
        self.prometheus = metrics if metrics is not None else PrometheusConfig()
        self.exposition = Exposition(state, self.prometheus, clock=clock) if metrics and metrics.enabled else None
        dashboard = engine_config.dashboard
        self.dashboard_config = dashboard if dashboard is not None and dashboard.enabled else None
        self.dashboard = None  # engine/dashboard.py DashboardServer, opened by open()
        self.latest = None     # the last snapshot published (the dashboard reads it)
        self.reasons = [""] * len(state.strategies)
        self._seen_states = state.strategies["state"].copy()
        self._seen_results = 0
        history = dashboard.history if self.dashboard_config else 2
        self._history_t = np.zeros(history, np.int64)
        self._history = np.zeros((history, len(state.strategies)))
        self._history_n = 0
        alerts = engine_config.alerts
        self.alerts = None
        if alerts.enabled:
            series = rule_series(self._snapshot(now, None)) if alerts.rules else {}
            self.alerts = AlertManager(alerts, engine_config.name, series, self.prometheus, started_ns=now)
        intervals = [m for m, on in ((self.prometheus.interval_ms, self.exposition is not None),
                                     (alerts.interval_ms, self.alerts is not None),
                                     (dashboard.refresh_ms if dashboard else 0, self.dashboard_config is not None))
                     if on]
        self.interval_ns = min(intervals) * 1_000_000 if intervals else None
        self._next_ns = 0
        self.publishes = 0
        self.publish_ns = 0  # engine-thread time spent taking snapshots, in total

    # ------------------------------------------------------------------------------------------ lifecycle
    def open(self, service=None):
        """Bind the exporter and the dashboard, start the alert thread. Raises OSError (an address in use)."""
        try:
            if self.exposition is not None:
                self.exposition.open()
            if self.dashboard_config is not None:
                from engine.dashboard import DashboardServer
                self.dashboard = DashboardServer(service, self.dashboard_config)
                self.dashboard.open()
            if self.alerts is not None:
                self.alerts.open()
            if self.interval_ns is not None:  # once ready, /metrics and the dashboard serve (never a 503)
                self.maintain(self.clock(), service.engine if service is not None else None, force=True)
        except BaseException:
            self.close(final=False)
            raise

    def close(self, engine=None, final=True):
        """A last fold and publish (so the last scrape and the report agree), then every thread stopped."""
        if final:
            self.maintain(self.clock(), engine, force=True)
        if self.alerts is not None:
            self.alerts.close()
        if self.dashboard is not None:
            self.dashboard.close()
            self.dashboard = None
        if self.exposition is not None:
            self.exposition.close()

    def addresses(self):
        """{"metrics": "host:port", "dashboard": "host:port"} of what is served."""
        out = {}
        if self.exposition is not None and not self.exposition.exporter.closed:
            out["metrics"] = "%s:%d" % tuple(self.exposition.exporter.address)
        if self.dashboard is not None:
            out["dashboard"] = "%s:%d" % self.dashboard.address
        return out

    # ------------------------------------------------------------------------------------------ engine thread
    @property
    def listeners(self):
        return [x for x in (self.quality, self.pnl) if x is not None]

    def on_batch(self, orders, rejects, fills, now_ns):
        """The monitoring's one engine listener: quality and attribution copy the batch's orders and fills; a
        batch with neither (only rejects) costs one call and one test."""
        if orders or fills:
            for part in self.listeners:
                part.on_batch(orders, rejects, fills, now_ns)

    def maintain(self, now_ns, engine=None, force=False):
        for part in self.listeners:
            part.maintain(now_ns)
        if self.interval_ns is None or (not force and now_ns < self._next_ns):
            return
        self._next_ns = now_ns + self.interval_ns
        self.publish(now_ns, engine)

    def publish(self, now_ns, engine=None):
        """Take one snapshot and hand it to every consumer."""
        start = time.perf_counter_ns()
        self._watch_states(engine)
        self._record_history(now_ns)
        snap = self._snapshot(now_ns, engine)
        self.latest = snap
        if self.exposition is not None:
            self.exposition.exporter.publish(snap)
        if self.alerts is not None:
            self.alerts.offer(snap)
        self.publishes += 1
        self.publish_ns += time.perf_counter_ns() - start
        return snap

    def _snapshot(self, now_ns, engine):
        state = self.state
        n = len(state.strategy_names)
        extra = {"shadows": tuple(self._shadows()), "strategy_reasons": tuple(self.reasons[:n]),
                 "pnl": tuple(self.pnl.rows_for_export()), "pnl_day_started_ns": self.pnl.day_started_ns}
        if engine is not None:
            extra["batch_chunks"] = tuple(engine.batch_chunks)
            extra["batch_chunks_sum"] = engine.batch_chunks_sum
        if self.journal is not None:
            extra["journal"] = journal_stats(self.journal)
        if state.venue[0]["on"]:
            extra["venue"] = venue_stats(state)
        if self.latency is not None:
            recorder = self.latency.signal_to_order
            cumulative, totals = recorder.cumulative(LATENCY_BOUNDS_NS, slice(0, n))
            sums = (recorder.counts[:n] * _UPPERS).sum(axis=1) / 1e9  # by the buckets' upper bounds
            extra["signal_to_order"] = (cumulative, totals, sums)
        if self.quality is not None:
            extra["quality"] = self.quality.export(LATENCY_BOUNDS_NS)
        if self.alerts is not None:
            extra["alerts"] = self.alerts.export()
        if self.dashboard_config is not None:
            extra["latency_us"] = self._latency_us(n)
        if self._history_n:
            k = min(self._history_n, len(self._history_t))
            order = (np.arange(self._history_n - k, self._history_n)) % len(self._history_t)
            extra["history"] = (self._history_t[order].copy(), self._history[order][:, :n].copy())
        return snapshot(state, now_ns, engine, **extra)

    def _latency_us(self, n):
        out = {}
        recorder = self.latency.signal_to_order if self.latency is not None else None
        for s in range(n):
            row = {}
            if recorder is not None:
                row["signal_to_order"] = {f"p{p:g}": recorder.percentile(p, s) / 1000 for p in (50, 99, 99.9)}
            if self.quality is not None:
                row.update({k.removesuffix("_us"): v for k, v in self.quality.latency_us(s).items()})
            out[self.state.strategy_names[s]] = row
        return out

    def _shadows(self):
        state = self.state
        for run in state.shadows:
            yield {**state.shadow_report(run), "live_strategy": state.strategy_names[run.live]}

    def _record_history(self, now_ns):
        rows = self.state.strategies
        k = self._history_n % len(self._history_t)
        self._history_t[k] = now_ns
        self._history[k] = rows["realized"] + rows["unrealized"] - rows["fees"]
        self._history_n += 1

    def _watch_states(self, engine):
        """Why each strategy is in its state: the last command that moved it, its breaker, or the config."""
        state = self.state
        if engine is not None:
            results = engine.control.results
            if len(results) != self._seen_results:
                for result in list(results.values())[self._seen_results:]:
                    self._note(result)
                self._seen_results = len(results)
        rows = state.strategies
        n = int(state.scalars[S_STRATEGIES])
        states = rows["state"]
        for s in np.nonzero(states[:n] != self._seen_states[:n])[0]:
            s = int(s)
            cause = int(rows[s]["trip_cause"])
            if cause != NO_TRIP:
                self.reasons[s] = f"breaker: {TRIP_NAMES[cause]}"
            elif int(states[s]) == ACTIVE:
                self.reasons[s] = ""
            elif not self.reasons[s]:
                self.reasons[s] = f"{STATE_NAMES[int(self._seen_states[s])]} -> {STATE_NAMES[int(states[s])]}"
            log.info("strategy %s: %s -> %s%s", state.strategy_names[s], STATE_NAMES[int(self._seen_states[s])],
                     STATE_NAMES[int(states[s])], f" ({self.reasons[s]})" if self.reasons[s] else "")
        self._seen_states[:] = states

    def _note(self, result):
        if not result.ok:
            return
        detail, ids = result.detail, self.state.strategy_ids
        if result.command == "transition" and detail.get("strategy") in ids:
            self.reasons[ids[detail["strategy"]]] = f"operator: {detail['from']} -> {detail['to']}"
        elif result.command == "halt_all":
            for name in detail.get("moved", ()):
                if name in ids:
                    self.reasons[ids[name]] = f"engine: {detail['policy']} ({detail['reason']})"
        elif result.command == "kill_switch" and detail.get("on") and detail.get("scope") == "strategy":
            if detail.get("name") in ids:
                self.reasons[ids[detail["name"]]] = "kill switch on"

    # ------------------------------------------------------------------------------------------ reading
    def report(self):
        """The monitoring's part of the final report."""
        out = {"pnl": self.pnl.report()}
        if self.quality is not None:
            out["quality"] = self.quality.report()
        if self.alerts is not None:
            out["alerts"] = self.alerts.report()
        if self.exposition is not None:
            out["metrics"] = {"address": self.addresses().get("metrics"), **self.exposition.exporter.stats.as_dict()}
        if self.dashboard is not None:
            out["dashboard"] = {"address": self.addresses().get("dashboard"), **self.dashboard.stats}
        out["publishes"] = self.publishes
        out["publish_us_mean"] = round(self.publish_ns / max(self.publishes, 1) / 1000, 1)
        return out


def journal_stats(journal):
    writer = journal.writer
    return {"last_seq": journal.last_seq, "written_seq": writer.written_seq, "synced_seq": writer.synced_seq,
            "pending_bytes": writer.pending, "bytes_written": writer.bytes_written, "syncs": writer.syncs,
            "errors": journal.errors, "failing": journal.failing}


def venue_stats(state):
    v = state.venue[0]
    out = {key: int(v[key]) for key in ("orders", "acks", "rejects", "partial_fills", "fills", "canceled",
                                        "pending")}
    out["filled_units"] = int(v["filled_qty"])
    out["fees"] = float(v["fees"])
    out["resting"] = int(state.venue_orders["resting"].sum())
    return out


def _uppers():
    from engine.metrics import LogHistogram
    from kernels.latency import N_BUCKETS
    return np.array([LogHistogram.upper_bound(k) for k in range(N_BUCKETS)], np.float64)


_UPPERS = _uppers()
