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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from adapters.base import Host, Port
from kernels.dtypes import COUNTER_NAMES, COUNTER_TEXT, NO_TRIP, REASON_NAMES, STATE_NAMES, TRIP_NAMES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format every Prometheus 2.x reads

MetricPrefix = Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=64)]
IntervalMs = Annotated[int, msgspec.Meta(ge=10, le=3_600_000)]


class PrometheusConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
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
    pairs = _position_pairs(positions, config.positions)
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
