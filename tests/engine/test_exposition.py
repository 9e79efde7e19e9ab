"""engine/exposition.py: what a snapshot copies out of the arena, the publish schedule, and a real engine's
metrics after real traffic, scraped over HTTP."""
import dataclasses
import socket
from pathlib import Path

import msgspec
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.base import TransportStats
from adapters.prometheus import PrometheusConfig, families
from engine import service
from engine.config import load_config
from engine.driver import EngineStats
from engine.exposition import Exposition, snapshot
from engine.journal import EngineJournal
from engine.metrics import LatencyRecorder
from engine.monitor import Monitor
from engine.state import EngineState
from kernels import arena as A
from kernels.dtypes import C_FILLS, C_MARKET_DATA, C_ORDERS, C_SIGNALS, COUNTER_NAMES
from tests.e2e.e2e_kit import derive_config, market_data_frame, signal_frame
from tests.infra.servers import http_get

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
MS = 1_000_000


@pytest.fixture
def state():
    return EngineState.load(DEMO)


def samples(url):
    status, body = http_get(url)
    assert status == 200, body
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def test_snapshot_when_taken_then_it_is_a_copy_the_next_batch_cannot_change(state):
    state.counters[C_SIGNALS] = 5
    state.positions[0, 0]["qty"] = 7
    snap = snapshot(state, 42)

    state.counters[C_SIGNALS] = 6  # the next batch writes the arena
    state.positions[0, 0]["qty"] = 8
    state.cursors[A.RING_ORDERS] = (9, 9)

    assert snap.counters[C_SIGNALS] == 5 and snap.positions[0, 0]["qty"] == 7
    assert snap.ring_cursors[A.RING_ORDERS].tolist() == [0, 0]
    for name in ("strategies", "positions", "accounts", "instruments", "counters", "reason_counts", "trip_counts",
                 "ring_cursors"):
        assert not np.shares_memory(getattr(snap, name), state.arena), name


def test_snapshot_when_taken_then_names_versions_rings_and_order_table_come_from_the_state(state):
    state.scalars[A.S_FREE_TOP] = len(state.open_orders) - 3

    snap = snapshot(state, 42)

    assert snap.taken_ns == 42 and snap.strategy_names == tuple(state.strategy_names)
    assert snap.strategy_versions == tuple(d[-1].version for d in state.deploys)
    assert (snap.instrument_symbols, snap.account_names) == (state.instrument_symbols, state.account_names)
    assert A.RING_NAMES[A.RING_SIGNALS] == "signals" and A.RING_NAMES[A.RING_FILLS] == "fills"
    assert snap.ring_capacities == tuple(len(getattr(state, ring)) for ring in A.RING_NAMES)
    assert (snap.open_orders, snap.open_order_capacity) == (3, len(state.open_orders))
    assert snap.oms_up is None and snap.engine_stats == {} and snap.transports == {}


def test_exposition_when_called_after_every_batch_then_it_publishes_once_per_interval(state):
    config = msgspec.convert({"interval_ms": 250}, PrometheusConfig)
    exposition = Exposition(state, config, clock=lambda: 0)

    published = [exposition.maybe_publish(now) for now in range(0, 1000 * MS, 10 * MS)]  # a batch every 10 ms

    assert sum(published) == 4 and [i for i, p in enumerate(published) if p] == [0, 25, 50, 75]
    assert exposition.exporter.stats.publishes == 4
    exposition.publish(now_ns=995 * MS)  # at shutdown, whatever the interval
    assert exposition.exporter.stats.publishes == 5 and not exposition.maybe_publish(1000 * MS)


def test_exposition_when_a_real_engine_trades_then_scrape_shows_its_counters_link_and_transports(tmp_path):
    config = load_config(derive_config(tmp_path / "config", keep=["momentum"]))
    svc = service.build(config)
    try:
        engine = svc.engine
        with Exposition(engine.state, PrometheusConfig()) as exposition, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            host, port = svc.addresses()["udp"].rsplit(":", 1)
            udp.connect((host, int(port)))
            udp.send(market_data_frame(0) + market_data_frame(1, bid=21_000.0, ask=21_000.5, last=21_000.25))
            for seq in range(1, 6):
                udp.send(signal_frame(seq, signal_id=config.strategies[0].signals[0], value=1.0))
            counters = engine.state.counters
            for _ in range(2000):  # until every datagram is read and the simulated OMS has filled
                engine.poll()
                engine.step()
                if counters[C_SIGNALS] == 5 and counters[C_FILLS] >= counters[C_ORDERS] > 0:
                    break
            assert counters[C_SIGNALS] == 5 and counters[C_MARKET_DATA] == 2 and counters[C_ORDERS] > 0

            exposition.publish(engine=engine)
            m = samples(exposition.url)

            for index, name in enumerate(COUNTER_NAMES):
                assert m[f"orchestrator_engine_{name}_total", ()] == counters[index], name
            momentum = engine.state.strategies[0]
            assert m["orchestrator_strategy_orders_total", (("strategy", "momentum"),)] == momentum["orders"]
            assert m["orchestrator_oms_up", ()] == 1
            assert m["orchestrator_driver_batches_total", ()] == engine.stats.batches
            assert m["orchestrator_transport_chunks_total", (("transport", "udp"),)] == 6
            assert m["orchestrator_transport_bytes_in_total", (("transport", "udp"),)] == \
                engine.inbound[0].stats.bytes_in
            assert engine.oms is None  # the demo's venue runs in the batch: no OMS link to export
            assert ("orchestrator_transport_sent_total", (("transport", "oms"),)) not in m
    finally:
        svc.close()


def monitored_snapshot(state, tmp_path):
    """A snapshot with every field the monitoring adds (engine/monitor.py), as `orchestrator run` publishes it."""
    config = load_config(DEMO)
    journal = EngineJournal(config.engine.journal, tmp_path / "journal")
    monitor = Monitor(state, config, latency=LatencyRecorder(state, lambda: 1), journal=journal, clock=lambda: 1)
    snap = monitor._snapshot(1, None)
    return dataclasses.replace(snap, oms_up=True, engine_stats=EngineStats().as_dict(),
                               transports={"udp": TransportStats().as_dict()}, batch_chunks=(0, 1),
                               batch_chunks_sum=1)


def test_docs_when_metrics_md_is_read_then_it_lists_exactly_the_series_the_exporter_serves(state, tmp_path):
    """docs/metrics.md names every series (first column of its tables) and nothing else, with its type."""
    documented = {}
    for line in (DEMO.parents[1] / "docs" / "metrics.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `orchestrator_") and len(cells) >= 2:
            documented[cells[0].strip("`")] = cells[1]
    snap = monitored_snapshot(state, tmp_path)

    served = {f.name + ("_total" if f.type == "counter" else ""): f.type for f in families(snap)}

    assert sorted(set(served) - set(documented)) == [], "served but not in docs/metrics.md"
    assert sorted(set(documented) - set(served)) == [], "in docs/metrics.md but not served"
    assert {name: documented[name] for name in served} == served, "type in docs/metrics.md differs"
