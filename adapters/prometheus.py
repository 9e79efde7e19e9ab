"""Prometheus exposition: /metrics over HTTP, served from the latest snapshot the engine published.

Why a snapshot: the arena belongs to the batch loop. Between batches the engine copies the few regions the
metrics read into a `MetricsSnapshot` (engine/exposition.py) and calls `PrometheusExporter.publish(snapshot)`,
which is one attribute assignment: the HTTP thread only ever reads the snapshot it finds there, never the arena,
and holds no lock the engine could wait on. The HTTP thread's Python time is GIL time the engine's thread waits
for (the kernels keep the GIL: releasing it costs ~40 ns a call and buys nothing to a single-threaded engine), so
the text of a snapshot is rendered once, on its first scrape, and every later scrape of the same snapshot sends
the same bytes (100 scrapes a second of a snapshot published once a second render it once).

`families(snapshot, config)` is the mapping from engine state to metric families: plain data in (numpy copies and
name tuples), prometheus_client families out, no engine import. docs/metrics.md lists every series. Labels take
their values from the config (strategy, instrument, account names) and from kernels/dtypes.py's tables (reason,
cause, state, counter names), so every label is bounded; `positions = "allowed"` bounds the
strategy x instrument series to the pairs a strategy may trade (or holds).
"""
import socket
import threading
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Literal

import msgspec
import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from adapters.base import Host, Port
from kernels.dtypes import (
    C_FRAME_BAD_TYPE, C_FRAME_BAD_VERSION, C_FRAME_MALFORMED, C_FRAME_OVERSIZE, C_FRAME_TRUNCATED,
    C_MARKET_DATA_INVALID, C_REPORT_INVALID, COUNTER_NAMES, COUNTER_TEXT, NO_TRIP, REASON_NAMES, STATE_NAMES,
    TRIP_NAMES,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format every Prometheus 2.x reads

MetricPrefix = Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=64)]
IntervalMs = Annotated[int, msgspec.Meta(ge=10, le=3_600_000)]
# decode errors by cause: the kernels' counters of frames (and values) that could not be taken as sent
DECODE_CAUSES = (("truncated", C_FRAME_TRUNCATED), ("oversize", C_FRAME_OVERSIZE),
                 ("bad_version", C_FRAME_BAD_VERSION), ("bad_type", C_FRAME_BAD_TYPE),
                 ("malformed", C_FRAME_MALFORMED), ("invalid_market_data", C_MARKET_DATA_INVALID),
                 ("invalid_report", C_REPORT_INVALID))
# latency histogram bounds (seconds): 1-2-5 steps from 1 us to 10 s, parsed from text so they print as le="5e-06"
# (5 * 1e-06 is 4.9999999999999996e-06)
LATENCY_BOUNDS_S = tuple(float(f"{m}e{e}") for e in range(-6, 1) for m in (1, 2, 5)) + (10.0,)
VENUE_COUNTS = (("orders", "orders the venue received"), ("acks", "acks it sent"),
                ("rejects", "orders it rejected"), ("partial_fills", "partial fills it sent"),
                ("fills", "fills that completed an order"), ("canceled", "orders it canceled or expired"),
                ("filled_units", "quantity it filled"))


class PrometheusConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True  # engine.toml [metrics]: false keeps the table and serves nothing
    host: Host = "127.0.0.1"
    port: Port = 0  # 0: the OS picks one; read it back from `address`
    namespace: MetricPrefix = "orchestrator"  # the first word of every series name
    positions: Literal["allowed", "all"] = "allowed"  # strategy x instrument series: the pairs a strategy may
    #                                                   trade or holds, or every pair (strategies * instruments)
    interval_ms: IntervalMs = 1000  # how often the engine takes and publishes a snapshot (engine/exposition.py)


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Copies of the engine's tables between two batches, with the names their ids stand for. Nothing in it is
    shared with the arena, so the HTTP thread may read it while the next batch runs."""
    taken_ns: int                          # engine clock when the copy was made
    strategy_names: tuple[str, ...]        # by strategy id
    strategy_versions: tuple[str, ...]     # the running deploy's version label, by strategy id
    instrument_symbols: tuple[str, ...]    # by instrument id
    account_names: tuple[str, ...]         # by account id
    strategies: np.ndarray                 # STRATEGY_T[S]
    positions: np.ndarray                  # POSITION_T[S, I]
    accounts: np.ndarray                   # ACCOUNT_T[A]
    instruments: np.ndarray                # INSTRUMENT_T[I]
    counters: np.ndarray                   # int64[N_COUNTERS], in COUNTER_NAMES order
    reason_counts: np.ndarray              # int64[S, N_REASONS]
    trip_counts: np.ndarray                # int64[S, N_TRIPS]
    ring_names: tuple[str, ...]            # by ring id
    ring_cursors: np.ndarray               # uint64[R, 2]: (head, tail) sequences
    ring_capacities: tuple[int, ...]       # records, by ring id
    open_orders: int                       # working orders in the engine's table
    open_order_capacity: int
    oms_pending_bytes: int                 # encoded order bytes not yet taken by the OMS link
    oms_up: bool | None = None             # None: not known (no driver)
    engine_stats: dict[str, int] = field(default_factory=dict)            # the driver's counters, by name
    transports: dict[str, dict[str, int]] = field(default_factory=dict)   # stats by transport name
    # ---- the monitoring's own (engine/monitor.py); each family is served only when its data is given
    batch_chunks: tuple[int, ...] = ()   # batches by chunks decided: [b] counts 2**(b-1) .. 2**b - 1 (b=0: none)
    batch_chunks_sum: int = 0
    journal: dict | None = None          # last_seq, written_seq, synced_seq, pending_bytes, bytes_written, ...
    venue: dict | None = None            # the in-batch simulated venue's counts (oms kind "sim")
    shadows: tuple[dict, ...] | None = None  # engine/state.py shadow_report of every shadow run
    signal_to_order: tuple | None = None  # (cumulative counts [S, len(LATENCY_BOUNDS_S)], totals [S], sums_s [S])
    quality: dict | None = None          # engine/quality.py ExecutionQuality.export()
    pnl: tuple | None = None             # (strategy, instrument, deploy, version, totals, today) rows
    pnl_day_started_ns: int = 0
    alerts: dict | None = None           # engine/alerts.py AlertManager.export()
    strategy_reasons: tuple[str, ...] = ()  # why each strategy is in its state (engine/monitor.py)
    history: tuple | None = None         # (times_ns [H], net P&L [H, S]) for the dashboard's sparklines
    latency_us: dict | None = None       # {strategy: {signal_to_order: {p50, p99, p99.9}, ...}} for the dashboard


@dataclass(slots=True)
class ExporterStats:
    publishes: int = 0
    scrapes: int = 0        # /metrics answered 200
    renders: int = 0        # snapshots turned into text (once per snapshot that was scraped)
    not_ready: int = 0      # /metrics answered 503: nothing published yet
    not_found: int = 0      # requests for any other path (404)
    render_errors: int = 0  # a snapshot that could not be rendered (500); the exporter keeps serving

    def as_dict(self):
        return asdict(self)


# ---------------------------------------------------------------------------------------------- the mapping
def families(snapshot: MetricsSnapshot, config: PrometheusConfig = PrometheusConfig()):
    """Yield the metric families of one snapshot (names in docs/metrics.md)."""
    ns = config.namespace
    strategies, positions, accounts = snapshot.strategies, snapshot.positions, snapshot.accounts
    names = snapshot.strategy_names

    def counter(name, text, labels=()):
        return CounterMetricFamily(f"{ns}_{name}", text, labels=list(labels))

    def gauge(name, text, labels=()):
        return GaugeMetricFamily(f"{ns}_{name}", text, labels=list(labels))

    # ---------------------------------------------------------------- per strategy
    by_strategy = (
        ("strategy_signals", "signals", "signals routed to the strategy"),
        ("strategy_orders", "orders", "orders the strategy placed (passed pre-trade risk)"),
        ("strategy_rejects", "rejects", "orders rejected by pre-trade risk"),
        ("strategy_fills", "fills", "fills applied to the strategy's books"),
        ("strategy_filled_units", "filled_qty", "quantity filled, in instrument units"),
    )
    for name, column, text in by_strategy:
        f = counter(name, text, ["strategy"])
        for s, strategy in enumerate(names):
            f.add_metric([strategy], float(strategies[s][column]))
        yield f

    f = counter("strategy_reject_reasons", "rejections that reported the reason (one rejection may report several)",
                ["strategy", "reason"])
    for s, strategy in enumerate(names):
        for r, reason in enumerate(REASON_NAMES):
            f.add_metric([strategy, reason], float(snapshot.reason_counts[s, r]))
    yield f

    f = counter("strategy_breaker_trips", "circuit breaker trips, by cause", ["strategy", "cause"])
    for s, strategy in enumerate(names):
        for t, cause in enumerate(TRIP_NAMES):
            f.add_metric([strategy, cause], float(snapshot.trip_counts[s, t]))
    yield f

    f = gauge("strategy_breaker_tripped", "1 for the cause of the strategy's current trip, 0 for the others",
              ["strategy", "cause"])
    for s, strategy in enumerate(names):
        current = int(strategies[s]["trip_cause"])
        for t, cause in enumerate(TRIP_NAMES):
            f.add_metric([strategy, cause], 1.0 if current == t and current != NO_TRIP else 0.0)
    yield f

    f = gauge("strategy_state", "lifecycle state: 1 for the current state, 0 for the others", ["strategy", "state"])
    for s, strategy in enumerate(names):
        current = int(strategies[s]["state"])
        for st, state in enumerate(STATE_NAMES):
            f.add_metric([strategy, state], 1.0 if current == st else 0.0)
    yield f

    f = gauge("strategy_info", "always 1: the running deploy's version label and the strategy's account",
              ["strategy", "version", "account"])
    for s, strategy in enumerate(names):
        account = int(strategies[s]["account"])
        f.add_metric([strategy, snapshot.strategy_versions[s],
                      snapshot.account_names[account] if account < len(snapshot.account_names) else str(account)], 1.0)
    yield f

    by_strategy_gauges = (
        ("strategy_deploy", "deploy", "the number of the running deploy (1 at start, +1 per deploy)"),
        ("strategy_open_orders", "open_orders", "working orders"),
        ("strategy_consecutive_rejects", "consecutive_rejects", "rejections since the last accepted order"),
        ("strategy_realized_pnl", "realized", "realized P&L, in the account's currency"),
        ("strategy_unrealized_pnl", "unrealized", "unrealized P&L at the instruments' marks, in currency"),
        ("strategy_fees", "fees", "fees charged, in currency"),
    )
    for name, column, text in by_strategy_gauges:
        f = gauge(name, text, ["strategy"])
        for s, strategy in enumerate(names):
            f.add_metric([strategy], float(strategies[s][column]))
        yield f

    # ---------------------------------------------------------------- per strategy and instrument
    pairs = _position_pairs(positions[:len(names)], config.positions)  # rows in use: strategies registered
    symbols = snapshot.instrument_symbols
    by_position = (
        ("position_units", "qty", "net position, in instrument units (negative: short)"),
        ("position_open_buy_units", "open_buy", "quantity of working buy orders, in units"),
        ("position_open_sell_units", "open_sell", "quantity of working sell orders, in units"),
        ("position_realized_pnl", "realized", "realized P&L of the position, in currency"),
        ("position_unrealized_pnl", "unrealized", "unrealized P&L of the position at the mark, in currency"),
        ("position_fees", "fees", "fees charged on the position's fills, in currency"),
    )
    for name, column, text in by_position:
        f = gauge(name, text, ["strategy", "instrument"])
        for s, i in pairs:
            f.add_metric([names[s], symbols[i]], float(positions[s, i][column]))
        yield f

    # ---------------------------------------------------------------- per account
    by_account = (
        ("account_gross_exposure", "gross", "gross exposure if every working order filled, in currency"),
        ("account_net_exposure", "net", "net (signed) exposure if every working order filled, in currency"),
        ("account_realized_pnl", "realized", "realized P&L of the account's strategies, in currency"),
        ("account_unrealized_pnl", "unrealized", "unrealized P&L of the account's strategies, in currency"),
        ("account_fees", "fees", "fees of the account's strategies, in currency"),
        ("account_kill_switch", "kill", "1 while the account's kill switch is on"),
    )
    for name, column, text in by_account:
        f = gauge(name, text, ["account"])
        for a, account in enumerate(snapshot.account_names):
            f.add_metric([account], float(accounts[a][column]))
        yield f

    # ---------------------------------------------------------------- per instrument
    instruments = snapshot.instruments
    f = gauge("instrument_mark_price", "the price positions are marked at (mid, else last, else reference)",
              ["instrument"])
    for i, symbol in enumerate(symbols):
        f.add_metric([symbol], float(instruments[i]["mark_ticks"]) * float(instruments[i]["tick_size"]))
    yield f
    f = gauge("instrument_market_data_timestamp_seconds", "time of the last market data applied (0: none yet)",
              ["instrument"])
    for i, symbol in enumerate(symbols):
        f.add_metric([symbol], float(instruments[i]["md_ts_ns"]) / 1e9)
    yield f

    # ---------------------------------------------------------------- per engine
    for index, (name, text) in enumerate(zip(COUNTER_NAMES, COUNTER_TEXT)):
        if index < len(snapshot.counters):
            yield CounterMetricFamily(f"{ns}_engine_{name}", text, value=float(snapshot.counters[index]))

    f = gauge("ring_occupancy_records", "records published and not yet released (head - tail)", ["ring"])
    for r, ring in enumerate(snapshot.ring_names):
        head, tail = int(snapshot.ring_cursors[r, 0]), int(snapshot.ring_cursors[r, 1])
        f.add_metric([ring], float(head - tail))
    yield f
    f = gauge("ring_capacity_records", "ring capacity", ["ring"])
    for r, ring in enumerate(snapshot.ring_names):
        f.add_metric([ring], float(snapshot.ring_capacities[r]))
    yield f
    f = counter("ring_published_records", "records ever published to the ring (its head sequence)", ["ring"])
    for r, ring in enumerate(snapshot.ring_names):
        f.add_metric([ring], float(snapshot.ring_cursors[r, 0]))
    yield f

    yield gauge_value(f"{ns}_open_orders", "working orders in the engine's order table", snapshot.open_orders)
    yield gauge_value(f"{ns}_open_orders_capacity", "size of the engine's order table", snapshot.open_order_capacity)
    yield gauge_value(f"{ns}_oms_pending_bytes", "encoded order bytes the OMS link has not taken yet",
                      snapshot.oms_pending_bytes)
    if snapshot.oms_up is not None:
        yield gauge_value(f"{ns}_oms_up", "1 while the OMS link is up", 1.0 if snapshot.oms_up else 0.0)
    for name, value in snapshot.engine_stats.items():
        yield CounterMetricFamily(f"{ns}_driver_{name}", f"driver counter {name} (engine/driver.py EngineStats)",
                                  value=float(value))
    for stat in sorted({k for stats in snapshot.transports.values() for k in stats}):
        f = counter(f"transport_{stat}", f"transport counter {stat} (adapters/base.py TransportStats)",
                    ["transport"])
        for transport, stats in snapshot.transports.items():
            if stat in stats:
                f.add_metric([transport], float(stats[stat]))
        yield f
    yield gauge_value(f"{ns}_snapshot_timestamp_seconds", "engine clock when this snapshot was taken",
                      snapshot.taken_ns / 1e9)
    yield from _monitoring_families(snapshot, ns, counter, gauge)


def _monitoring_families(snapshot, ns, counter, gauge):
    """The series engine/monitor.py adds: batch sizes, decode errors, journal, venue, shadows, latency,
    execution quality, P&L attribution, alerts."""
    names, symbols = snapshot.strategy_names, snapshot.instrument_symbols
    f = counter("decode_errors", "frames or values that could not be taken as sent, by cause", ["cause"])
    for cause, index in DECODE_CAUSES:
        f.add_metric([cause], float(snapshot.counters[index]) if index < len(snapshot.counters) else 0.0)
    yield f

    if snapshot.batch_chunks:
        f = HistogramMetricFamily(f"{ns}_batch_chunks", "chunks (datagrams, TCP reads, ticks) decided per batch")
        cumulative, buckets = 0, []
        for b, count in enumerate(snapshot.batch_chunks):
            cumulative += count
            buckets.append((str(float((1 << b) - 1)), float(cumulative)))
        buckets.append(("+Inf", float(cumulative)))
        f.add_metric([], buckets, sum_value=float(snapshot.batch_chunks_sum))
        yield f

    journal = snapshot.journal
    if journal is not None:
        for key, text in (("last_seq", "the last record appended"), ("written_seq", "the last record written"),
                          ("synced_seq", "the last record known on disk (fdatasync)")):
            yield gauge_value(f"{ns}_journal_{key}", f"journal: {text}", journal[key])
        yield gauge_value(f"{ns}_journal_unsynced_records", "journal lag: records appended and not yet on disk",
                          journal["last_seq"] - journal["synced_seq"])
        yield gauge_value(f"{ns}_journal_pending_bytes", "journal bytes appended and not yet written",
                          journal["pending_bytes"])
        yield gauge_value(f"{ns}_journal_failing", "1 while the journal's last commit failed",
                          1.0 if journal["failing"] else 0.0)
        for key, text in (("bytes_written", "bytes written"), ("syncs", "fdatasync calls"),
                          ("errors", "commits the disk refused")):
            yield CounterMetricFamily(f"{ns}_journal_{key}", f"journal: {text}", value=float(journal[key]))

    venue = snapshot.venue
    if venue is not None:
        for key, text in VENUE_COUNTS:
            yield CounterMetricFamily(f"{ns}_venue_{key}", f"in-batch simulated venue: {text}",
                                      value=float(venue[key]))
        yield gauge_value(f"{ns}_venue_fees", "fees the venue charged, in currency", venue["fees"])
        yield gauge_value(f"{ns}_venue_pending_reports", "reports the venue has not released yet", venue["pending"])
        yield gauge_value(f"{ns}_venue_resting_orders", "orders resting on the venue's book", venue["resting"])

    if snapshot.shadows is not None:
        orders = counter("shadow_orders", "orders the shadow would have placed since it started",
                         ["strategy", "shadow", "version"])
        rejects = counter("shadow_rejects", "orders the shadow would have had rejected since it started",
                          ["strategy", "shadow", "version"])
        live_orders = counter("shadow_live_orders", "orders the live version placed over the same span",
                              ["strategy", "shadow", "version"])
        live_rejects = counter("shadow_live_rejects", "orders the live version had rejected over the same span",
                               ["strategy", "shadow", "version"])
        running = gauge("shadow_running", "1 while the shadow runs", ["strategy", "shadow", "version"])
        for run in snapshot.shadows:
            labels = [run["live_strategy"], run["strategy"], run["version"]]
            orders.add_metric(labels, float(run["shadow"]["orders"]))
            rejects.add_metric(labels, float(run["shadow"]["rejects"]))
            live_orders.add_metric(labels, float(run["live"]["orders"]))
            live_rejects.add_metric(labels, float(run["live"]["rejects"]))
            running.add_metric(labels, 1.0 if run["running"] else 0.0)
        yield from (orders, rejects, live_orders, live_rejects, running)

    if snapshot.signal_to_order is not None:
        cumulative, totals, sums = snapshot.signal_to_order
        yield _histogram(f"{ns}_strategy_signal_to_order_seconds", "signal timestamp to the order leaving for the "
                         "OMS (log buckets, ~4%)", names, cumulative, totals, sums)

    quality = snapshot.quality
    if quality is not None:
        yield from _quality_families(quality, ns, names, symbols, counter, gauge)

    if snapshot.pnl is not None:
        by_key = {}
        for measure, text in (("realized", "realized P&L"), ("unrealized", "unrealized P&L at the marks"),
                              ("fees", "fees")):
            by_key[measure] = gauge(f"pnl_{measure}", f"{text} of the position, in currency, attributed to the "
                                    f"deploy", ["strategy", "instrument", "deploy", "version"])
            by_key["day_" + measure] = gauge(f"pnl_day_{measure}", f"{text} since the trading day started, in "
                                             f"currency", ["strategy", "instrument", "deploy", "version"])
        for s, i, deploy, version, total, today in snapshot.pnl:
            labels = [_name(names, s), symbols[i], str(deploy), version]
            for measure in ("realized", "unrealized", "fees"):
                by_key[measure].add_metric(labels, total[measure])
                by_key["day_" + measure].add_metric(labels, today[measure])
        yield from by_key.values()
        yield gauge_value(f"{ns}_pnl_day_start_timestamp_seconds", "when the current trading day's figures started",
                          snapshot.pnl_day_started_ns / 1e9)

    alerts = snapshot.alerts
    if alerts is not None:
        f = gauge("alerts_firing", "alerts firing now, by severity", ["severity"])
        for severity, count in alerts["firing"].items():
            f.add_metric([severity], float(count))
        yield f
        f = counter("alerts_fired", "alert episodes started, by alert", ["alert"])
        for alert, count in alerts["fired"].items():
            f.add_metric([alert], float(count))
        yield f
        sent = counter("alert_notifications_sent", "notifications a sink delivered", ["sink"])
        dropped = counter("alert_notifications_dropped", "notifications a sink dropped, by cause",
                          ["sink", "cause"])
        retries = counter("alert_notification_retries", "delivery attempts after a failed one", ["sink"])
        for sink, stats in alerts["sinks"].items():
            sent.add_metric([sink], float(stats["sent"]))
            retries.add_metric([sink], float(stats.get("retries", 0)))
            for cause in ("queue_full", "quota", "failed", "rejected"):
                dropped.add_metric([sink, cause], float(stats.get(f"dropped_{cause}", 0)))
        yield from (sent, dropped, retries)


def _quality_families(quality, ns, names, symbols, counter, gauge):
    labels = ["strategy", "instrument"]
    by_pair = (
        (counter, "quality_orders", "orders", "orders placed (while this engine ran)"),
        (counter, "quality_ordered_units", "ordered_units", "quantity ordered"),
        (counter, "quality_orders_done", "orders_done", "orders ended: filled, canceled, expired or rejected"),
        (counter, "quality_orders_canceled", "orders_canceled", "orders that ended with quantity unfilled"),
        (gauge, "quality_fill_ratio", "fill_ratio", "filled / ordered quantity of the orders ended"),
        (gauge, "quality_cancel_ratio", "cancel_ratio", "orders ended unfilled or partly filled / orders ended"),
        (gauge, "quality_arrival_slippage_bps", "arrival_slippage_bps",
         "fill price vs the mark when the order was decided, bps, units-weighted (positive: a cost)"),
        (gauge, "quality_limit_slippage_bps", "limit_slippage_bps",
         "fill price vs the order's own price, bps, units-weighted (negative: price improvement)"),
        (gauge, "quality_shortfall", "shortfall",
         "implementation shortfall of the orders ended (fills vs arrival, unfilled at the end mark, fees), currency"),
        (gauge, "quality_shortfall_bps", "shortfall_bps", "that shortfall over the orders' notional at arrival, bps"),
    )
    pairs = quality["pairs"]
    for make, name, key, text in by_pair:
        f = make(name, text, labels)
        for s, i, row in pairs:
            f.add_metric([_name(names, s), symbols[i]], float(row[key]))
        yield f
    markout = gauge("quality_markout_bps", "mark a horizon after each fill vs the fill price, bps, units-weighted "
                    "(positive: the market moved the strategy's way)", labels + ["horizon"])
    measured = counter("quality_markout_fills", "fills whose markout at the horizon was taken", labels + ["horizon"])
    for s, i, row in pairs:
        for horizon in quality["horizons"]:
            markout.add_metric([_name(names, s), symbols[i], horizon], row["markouts_bps"][horizon])
            measured.add_metric([_name(names, s), symbols[i], horizon], float(row["markout_fills"][horizon]))
    yield markout
    yield measured
    for key, name, text in (("signal_to_fill", "signal_to_fill", "signal timestamp to the engine applying the fill"),
                            ("order_to_fill", "order_to_fill", "the order's time to the OMS's time on the fill")):
        cumulative, totals, sums = quality[key]
        yield _histogram(f"{ns}_quality_{name}_seconds", text + " (log buckets, ~4%)", names, cumulative, totals,
                         sums)


def _name(names, s):
    return names[s] if s < len(names) else str(s)


def _histogram(name, text, names, cumulative, totals, sums):
    f = HistogramMetricFamily(name, text, labels=["strategy"])
    for s in range(min(len(names), len(totals))):
        buckets = [(repr(bound), float(cumulative[s, k])) for k, bound in enumerate(LATENCY_BOUNDS_S)]
        buckets.append(("+Inf", float(totals[s])))
        f.add_metric([names[s]], buckets, sum_value=float(sums[s]))
    return f


def gauge_value(name, text, value):
    return GaugeMetricFamily(name, text, value=float(value))


def _position_pairs(positions, which):
    """(strategy id, instrument id) pairs that get position series."""
    if which == "all":
        return [(s, i) for s in range(positions.shape[0]) for i in range(positions.shape[1])]
    shown = (positions["allowed"] != 0) | (positions["qty"] != 0) | (positions["open_buy"] != 0) | \
        (positions["open_sell"] != 0)
    return [(int(s), int(i)) for s, i in zip(*np.nonzero(shown))]


def render(snapshot: MetricsSnapshot, config: PrometheusConfig = PrometheusConfig()) -> bytes:
    """The exposition text of one snapshot (Prometheus text format 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot, config))
    return generate_latest(registry)


class _Collector:
    def __init__(self, snapshot, config):
        self.snapshot, self.config = snapshot, config

    def collect(self):
        return families(self.snapshot, self.config)


# ---------------------------------------------------------------------------------------------- the server
class PrometheusExporter:
    """/metrics on `config.host:port`, served by a thread of its own from the latest published snapshot.

    `open()` binds and starts serving; `publish(snapshot)` (engine thread, between batches) swaps the snapshot
    in and never waits; `close()` stops the server (idempotent). Before the first publish /metrics answers 503,
    so Prometheus shows the target down rather than an engine with every count at 0."""

    def __init__(self, config: PrometheusConfig = PrometheusConfig()):
        self.config = config
        self.stats = ExporterStats()
        self._snapshot = None
        self._rendered = (None, b"")  # (snapshot it was rendered from, text): replaced whole, never mutated
        self._server = self._thread = None
        self._stats_lock = threading.Lock()  # the server's threads count under it; publish() never takes it

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def closed(self):
        return self._server is None

    @property
    def address(self):
        return self._server.server_address[:2]

    @property
    def url(self):
        host, port = self.address
        return f"http://{host}:{port}/metrics" if ":" not in host else f"http://[{host}]:{port}/metrics"

    def open(self):
        if self._server is not None:
            return
        server_class = _Server6 if ":" in self.config.host else _Server
        self._server = server_class((self.config.host, self.config.port), _Handler)
        self._server.exporter = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="prometheus-exporter", daemon=True)
        self._thread.start()

    def publish(self, snapshot: MetricsSnapshot) -> None:
        """Make `snapshot` the one scrapes see. One reference assignment: atomic, lock-free, O(1)."""
        self._snapshot = snapshot
        self.stats.publishes += 1

    def exposition(self):
        """(HTTP status, body) for /metrics now. Called from the server's threads."""
        snapshot = self._snapshot
        if snapshot is None:
            self._count("not_ready")
            return 503, b"no snapshot published yet\n"
        rendered_from, text = self._rendered
        if rendered_from is not snapshot:
            try:
                text = render(snapshot, self.config)
            except Exception as e:  # a bug in the mapping must not take the exporter (or the engine) down
                self._count("render_errors")
                return 500, f"cannot render the snapshot: {type(e).__name__}: {e}\n".encode()
            self._rendered = (snapshot, text)
            self._count("renders")
        self._count("scrapes")
        return 200, text

    def _count(self, name):
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def close(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.end_connections()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None


class _Server(ThreadingHTTPServer):
    """One thread per connection (Prometheus keeps its connection open between scrapes). The open connections
    are tracked so that close() can end them at once and join their threads: nothing outlives the exporter."""
    daemon_threads = False  # server_close() joins every connection's thread
    exporter = None

    def __init__(self, address, handler):
        self._connections = set()
        self._connections_lock = threading.Lock()  # the server's threads only; publish() never takes it
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def end_connections(self):
        with self._connections_lock:
            connections = list(self._connections)
        for request in connections:
            try:
                request.shutdown(socket.SHUT_RDWR)  # its thread reads EOF, finishes and closes the socket
            except OSError:
                pass


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # a client that connects and sends nothing is dropped
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        exporter = self.server.exporter
        if self.path.split("?", 1)[0] == "/metrics":
            status, body = exporter.exposition()
        else:
            exporter._count("not_found")
            status, body = 404, b"only /metrics is served here\n"
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE if status == 200 else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass  # one line per scrape on stderr would be noise; the exporter counts them
