"""The engine's side of the Prometheus exposition: which regions of the arena the metrics read, copied between
batches into a `MetricsSnapshot` (adapters/prometheus.py), and when.

Wiring (the driver's thread, never during a compiled batch; `orchestrator run` does it through engine/monitor.py,
which adds its own fields to each snapshot and shares it with the alerts and the dashboard):
    exposition = Exposition(state, PrometheusConfig(...))   # engine.toml's metrics table, decoded
    exposition.open()                                       # binds host:port, starts the HTTP thread
    exposition.maybe_publish(now_ns, engine)                # after each batch or on the heartbeat: copies and
                                                            # publishes at most once per config.interval_ms
    exposition.close()
`engine` is the driver's Engine (engine/driver.py): its stats, OMS link state and transports are read from it;
without it only the arena's tables are exported.

The copy is a handful of small numpy copies (the strategy, position, account and instrument tables, the
counters and the ring cursors): the cost grows with strategies x instruments, not with traffic.
"""
import time

import numpy as np

from adapters.prometheus import MetricsSnapshot, PrometheusConfig, PrometheusExporter
from kernels import arena as A


def snapshot(state, now_ns, engine=None, **monitoring) -> MetricsSnapshot:
    """Copy what the metrics read from `state` (an EngineState) now; with the driver's `engine`, also its
    counters, the OMS link state and every transport's stats; `monitoring`: the fields engine/monitor.py adds
    (batch sizes, journal, venue, quality, P&L, alerts...). Call it between batches only."""
    free_top = int(state.scalars[A.S_FREE_TOP])
    rows = len(state.strategy_names)
    capacity = len(state.open_orders)
    extra = {}
    if engine is not None:
        extra = {"oms_up": bool(engine.oms_up), "engine_stats": engine.stats.as_dict(),
                 "transports": transport_stats(engine)}
    return MetricsSnapshot(
        taken_ns=int(now_ns),
        strategy_names=tuple(state.strategy_names),
        strategy_versions=tuple(deploys[-1].version for deploys in state.deploys),
        instrument_symbols=state.instrument_symbols,
        account_names=state.account_names,
        strategies=state.strategies[:rows].copy(),  # the rows in use (the table has room for more)
        positions=state.positions[:rows].copy(),
        accounts=state.accounts.copy(),
        instruments=state.instruments.copy(),
        counters=state.counters.copy(),
        reason_counts=state.reason_counts[:rows].copy(),
        trip_counts=state.trip_counts[:rows].copy(),
        ring_names=A.RING_NAMES,
        ring_cursors=np.array(state.cursors, copy=True),
        ring_capacities=tuple(len(getattr(state, ring)) for ring in A.RING_NAMES),
        open_orders=capacity - free_top,
        open_order_capacity=capacity,
        oms_pending_bytes=int(state.scalars[A.S_TX_LEN]),
        **extra,
        **monitoring,
    )


def transport_stats(engine):
    """{name: stats dict} of the engine's inbound transports and its OMS link; names are the transport's kind
    ("udp", "tcp", "aeron", "oms"), numbered when a kind repeats."""
    kinds = {"UdpReceiver": "udp", "TcpServer": "tcp", "AeronReceiver": "aeron"}
    out = {}
    for transport in engine.inbound:
        kind = kinds.get(type(transport).__name__, type(transport).__name__.lower())
        name, n = kind, 1
        while name in out:
            n += 1
            name = f"{kind}{n}"
        out[name] = transport.stats.as_dict()
    oms_stats = getattr(engine.oms, "stats", None)
    if oms_stats is not None:
        out["oms"] = oms_stats.as_dict()
    return out


class Exposition:
    """The exporter plus the engine's schedule for it: a snapshot at most every `config.interval_ms`."""

    def __init__(self, state, config: PrometheusConfig = PrometheusConfig(), clock=time.time_ns):
        self.state, self.config, self.clock = state, config, clock
        self.exporter = PrometheusExporter(config)
        self.interval_ns = config.interval_ms * 1_000_000
        self._next_ns = 0

    @property
    def url(self):
        return self.exporter.url

    def open(self):
        self.exporter.open()

    def close(self):
        self.exporter.close()

    def maybe_publish(self, now_ns=None, engine=None) -> bool:
        """Publish a fresh snapshot if the interval has passed since the last one; True when it did."""
        now = self.clock() if now_ns is None else now_ns
        if now < self._next_ns:
            return False
        self.publish(now, engine)
        return True

    def publish(self, now_ns=None, engine=None):
        """Take a snapshot and publish it now, whatever the interval (e.g. once more at shutdown)."""
        now = self.clock() if now_ns is None else now_ns
        self.exporter.publish(snapshot(self.state, now, engine))
        self._next_ns = now + self.interval_ns

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()
