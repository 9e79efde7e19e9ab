"""adapters/prometheus.py: the exposition of a snapshot, scraped over real HTTP and parsed with prometheus_client's
parser for exact values; the exporter under concurrent scrapes; a real Prometheus scraping it.

The snapshots come from config/demo's EngineState (engine/exposition.py takes them) with known values written
into its tables. Demo ids: strategies index_arbitrage 0, mean_reversion 1, momentum 2, pairs 3, scalper 4;
instruments ESZ5 0, NQZ5 1, AAPL 2, MSFT 3, NVDA 4, TSLA 5; accounts futures 0, equities 1.
"""
import http.client
import socket
import threading
from pathlib import Path

import msgspec
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import adapters.prometheus as P
from adapters.prometheus import PrometheusConfig, PrometheusExporter, render
from engine.config import load_config
from engine.exposition import snapshot
from engine.state import EngineState
from kernels import arena as A
from kernels.dtypes import (
    C_FILLS,
    C_FRAMES,
    C_SIGNALS,
    COUNTER_NAMES,
    HALTED,
    N_COUNTERS,
    REASON_NAMES,
    STATE_NAMES,
    TRIP_LOSS,
    TRIP_NAMES,
)
from tests.infra.servers import http_get

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
IDX, MEANREV, MOMENTUM, PAIRS, SCALPER = range(5)
ESZ5, NQZ5, AAPL, MSFT, NVDA, TSLA = range(6)
FUTURES, EQUITIES = range(2)
T0_NS = 1_750_000_000_123_000_000


def config(**keys):
    return msgspec.convert(keys, PrometheusConfig)


@pytest.fixture(scope="module")
def demo_config():
    return load_config(DEMO)


@pytest.fixture
def state(demo_config):
    """config/demo's state with known values in every table the metrics read."""
    st = EngineState.build(demo_config)
    momentum = st.strategies[MOMENTUM]
    momentum["signals"], momentum["orders"], momentum["rejects"] = 11, 7, 4
    momentum["fills"], momentum["filled_qty"], momentum["open_orders"] = 5, 9, 2
    momentum["realized"], momentum["unrealized"], momentum["fees"] = 1250.5, -300.25, 12.75
    momentum["state"], momentum["trip_cause"], momentum["consecutive_rejects"] = HALTED, TRIP_LOSS, 3
    momentum["deploy"] = 2
    st.positions[MOMENTUM, NQZ5]["qty"] = -3
    st.positions[MOMENTUM, NQZ5]["open_buy"], st.positions[MOMENTUM, NQZ5]["open_sell"] = 2, 1
    st.positions[MOMENTUM, NQZ5]["realized"], st.positions[MOMENTUM, NQZ5]["unrealized"] = 1000.0, -300.25
    st.positions[MOMENTUM, NQZ5]["fees"] = 10.0
    st.positions[PAIRS, TSLA]["qty"] = 100  # held but not allowed: still shown
    st.accounts[FUTURES]["gross"], st.accounts[FUTURES]["net"] = 2_500_000.0, -1_200_000.0
    st.accounts[EQUITIES]["kill"] = 1
    st.instruments[NQZ5]["mark_ticks"], st.instruments[NQZ5]["md_ts_ns"] = 84_001, T0_NS
    st.counters[:] = np.arange(1, N_COUNTERS + 1) * 10
    st.reason_counts[MOMENTUM, REASON_NAMES.index("rate")] = 3
    st.reason_counts[MOMENTUM, REASON_NAMES.index("qty_max")] = 2
    st.trip_counts[MOMENTUM, TRIP_LOSS] = 1
    st.cursors[A.RING_SIGNALS] = (1000, 990)
    st.cursors[A.RING_REPORTS] = (50, 50)
    st.scalars[A.S_FREE_TOP] = len(st.open_orders) - 2
    st.scalars[A.S_TX_LEN] = 128
    return st


@pytest.fixture
def exporter():
    with PrometheusExporter(config()) as e:
        yield e


def parse(text):
    """{(sample name, sorted label items): value} of an exposition text."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


def scrape(exporter):
    status, body = http_get(exporter.url)
    assert status == 200, body
    return parse(body.decode())


def value(samples, name, **labels):
    return samples[name, tuple(sorted(labels.items()))]


# ---------------------------------------------------------------------------------------------- config
def test_config_when_decoded_empty_then_loopback_and_os_port_and_defaults():
    c = config()
    assert (c.host, c.port, c.namespace, c.positions, c.interval_ms) == ("127.0.0.1", 0, "orchestrator", "allowed",
                                                                         1000)


@pytest.mark.parametrize("keys, where", [
    ({"prot": 9464}, "prot"), ({"namespace": "bad-name"}, "namespace"), ({"positions": "some"}, "positions"),
    ({"interval_ms": 0}, "interval_ms"), ({"port": 70000}, "port")])
def test_config_when_a_key_is_unknown_or_out_of_range_then_decoding_names_it(keys, where):
    with pytest.raises(msgspec.ValidationError, match=where):
        config(**keys)


# ---------------------------------------------------------------------------------------------- over HTTP
def test_exporter_when_nothing_published_then_metrics_is_503_and_other_paths_404(exporter):
    assert http_get(exporter.url)[0] == 503
    assert http_get(exporter.url.replace("/metrics", "/"))[0] == 404
    assert (exporter.stats.not_ready, exporter.stats.not_found, exporter.stats.scrapes) == (1, 1, 0)


def test_exporter_when_a_snapshot_is_published_then_scrape_shows_its_exact_strategy_values(exporter, state):
    exporter.publish(snapshot(state, T0_NS))

    m = scrape(exporter)

    ns = "orchestrator_strategy"
    assert value(m, f"{ns}_signals_total", strategy="momentum") == 11
    assert value(m, f"{ns}_orders_total", strategy="momentum") == 7
    assert value(m, f"{ns}_rejects_total", strategy="momentum") == 4
    assert value(m, f"{ns}_fills_total", strategy="momentum") == 5
    assert value(m, f"{ns}_filled_units_total", strategy="momentum") == 9
    assert value(m, f"{ns}_open_orders", strategy="momentum") == 2
    assert value(m, f"{ns}_consecutive_rejects", strategy="momentum") == 3
    assert value(m, f"{ns}_deploy", strategy="momentum") == 2
    assert value(m, f"{ns}_realized_pnl", strategy="momentum") == 1250.5
    assert value(m, f"{ns}_unrealized_pnl", strategy="momentum") == -300.25
    assert value(m, f"{ns}_fees", strategy="momentum") == 12.75
    assert value(m, f"{ns}_info", strategy="momentum", version="1.2.0", account="futures") == 1
    assert value(m, f"{ns}_signals_total", strategy="pairs") == 0
    for state_name in STATE_NAMES:
        assert value(m, f"{ns}_state", strategy="momentum", state=state_name) == (state_name == "HALTED")
    pairs_state = STATE_NAMES[state.strategies[PAIRS]["state"]]  # as configured
    assert [st for st in STATE_NAMES if value(m, f"{ns}_state", strategy="pairs", state=st)] == [pairs_state]
    for reason in REASON_NAMES:
        assert value(m, f"{ns}_reject_reasons_total", strategy="momentum", reason=reason) == \
            {"rate": 3, "qty_max": 2}.get(reason, 0)
    for cause in TRIP_NAMES:
        assert value(m, f"{ns}_breaker_trips_total", strategy="momentum", cause=cause) == (cause == "loss")
        assert value(m, f"{ns}_breaker_tripped", strategy="momentum", cause=cause) == (cause == "loss")
        assert value(m, f"{ns}_breaker_tripped", strategy="pairs", cause=cause) == 0


def test_exporter_when_a_snapshot_is_published_then_positions_accounts_and_instruments_are_exact(exporter, state):
    exporter.publish(snapshot(state, T0_NS))

    m = scrape(exporter)

    pos = {"strategy": "momentum", "instrument": "NQZ5"}
    assert value(m, "orchestrator_position_units", **pos) == -3
    assert value(m, "orchestrator_position_open_buy_units", **pos) == 2
    assert value(m, "orchestrator_position_open_sell_units", **pos) == 1
    assert value(m, "orchestrator_position_realized_pnl", **pos) == 1000.0
    assert value(m, "orchestrator_position_unrealized_pnl", **pos) == -300.25
    assert value(m, "orchestrator_position_fees", **pos) == 10.0
    assert value(m, "orchestrator_position_units", strategy="pairs", instrument="TSLA") == 100
    assert value(m, "orchestrator_account_gross_exposure", account="futures") == 2_500_000.0
    assert value(m, "orchestrator_account_net_exposure", account="futures") == -1_200_000.0
    assert value(m, "orchestrator_account_kill_switch", account="equities") == 1
    assert value(m, "orchestrator_account_kill_switch", account="futures") == 0
    tick = float(state.instruments[NQZ5]["tick_size"])
    assert value(m, "orchestrator_instrument_mark_price", instrument="NQZ5") == 84_001 * tick
    assert value(m, "orchestrator_instrument_market_data_timestamp_seconds", instrument="NQZ5") == T0_NS / 1e9
    assert value(m, "orchestrator_instrument_market_data_timestamp_seconds", instrument="ESZ5") == 0


def test_exporter_when_a_snapshot_is_published_then_every_engine_counter_and_ring_is_exact(exporter, state):
    exporter.publish(snapshot(state, T0_NS))

    m = scrape(exporter)

    for index, name in enumerate(COUNTER_NAMES):
        assert value(m, f"orchestrator_engine_{name}_total") == (index + 1) * 10, name
    assert value(m, "orchestrator_ring_occupancy_records", ring="signals") == 10
    assert value(m, "orchestrator_ring_occupancy_records", ring="reports") == 0
    assert value(m, "orchestrator_ring_published_records_total", ring="signals") == 1000
    assert value(m, "orchestrator_ring_capacity_records", ring="signals") == 8192
    assert value(m, "orchestrator_ring_capacity_records", ring="orders") == 4096
    assert value(m, "orchestrator_open_orders") == 2
    assert value(m, "orchestrator_open_orders_capacity") == 4096
    assert value(m, "orchestrator_oms_pending_bytes") == 128
    assert value(m, "orchestrator_snapshot_timestamp_seconds") == T0_NS / 1e9
    assert not any(name.startswith("orchestrator_oms_up") for name, _ in m), "no driver: OMS state unknown"


def test_families_when_kernels_gain_a_counter_then_it_is_exported_without_code_changes(state, monkeypatch):
    monkeypatch.setattr(P, "COUNTER_NAMES", COUNTER_NAMES + ("widgets_lost",))
    monkeypatch.setattr(P, "COUNTER_TEXT", P.COUNTER_TEXT + ("widgets lost in transit",))
    snap = snapshot(state, T0_NS)
    snap = P.MetricsSnapshot(**{**{f: getattr(snap, f) for f in P.MetricsSnapshot.__slots__},
                                "counters": np.append(snap.counters, 77)})

    m = parse(render(snap).decode())

    assert value(m, "orchestrator_engine_widgets_lost_total") == 77
    assert value(m, "orchestrator_engine_signals_total") == (C_SIGNALS + 1) * 10


def test_families_when_positions_allowed_then_only_allowed_or_held_pairs_else_every_pair(state):
    allowed = parse(render(snapshot(state, T0_NS), config(positions="allowed")).decode())
    every = parse(render(snapshot(state, T0_NS), config(positions="all")).decode())

    def pairs(m):
        return {(dict(labels)["strategy"], dict(labels)["instrument"]) for name, labels in m
                if name == "orchestrator_position_units"}
    expected = {(state.strategy_names[s], state.instrument_symbols[i]) for s, i in zip(*np.nonzero(
        state.positions["allowed"]))} | {("momentum", "NQZ5"), ("pairs", "TSLA")}
    assert pairs(allowed) == expected and len(expected) < 30
    assert len(pairs(every)) == 5 * 6


def test_families_when_namespace_is_set_then_every_series_starts_with_it(state):
    m = parse(render(snapshot(state, T0_NS), config(namespace="desk7")).decode())

    assert m and all(name.startswith("desk7_") for name, _ in m)
    assert value(m, "desk7_engine_frames_total") == (C_FRAMES + 1) * 10


def test_exporter_when_the_snapshot_cannot_be_rendered_then_500_is_counted_and_the_next_publish_serves(exporter,
                                                                                                     state):
    good = snapshot(state, T0_NS)
    broken = P.MetricsSnapshot(**{**{f: getattr(good, f) for f in P.MetricsSnapshot.__slots__},
                                  "strategy_versions": ()})  # fewer labels than strategies: a bug upstream
    exporter.publish(broken)
    status, body = http_get(exporter.url)
    assert status == 500 and b"IndexError" in body and exporter.stats.render_errors == 1

    exporter.publish(good)

    assert value(scrape(exporter), "orchestrator_engine_fills_total") == (C_FILLS + 1) * 10


def test_exporter_when_scraped_again_without_a_publish_then_the_text_is_rendered_once(exporter, state):
    exporter.publish(snapshot(state, T0_NS))
    bodies = {http_get(exporter.url)[1] for _ in range(5)}

    assert len(bodies) == 1 and exporter.stats.renders == 1 and exporter.stats.scrapes == 5


def test_exporter_when_scraped_hard_while_publishing_then_every_scrape_is_one_whole_snapshot(exporter, state):
    """Two scrapers (about 100 scrapes a second each, bounded) while the engine thread publishes 300
    snapshots: every scrape answers 200 with the values of a single snapshot, and the publisher never waits."""
    n_scrapes, n_publishes = 150, 300

    def publish(k):  # three fields of one snapshot carry the same k
        state.counters[C_FRAMES] = state.strategies[MOMENTUM]["signals"] = state.scalars[A.S_TX_LEN] = k
        exporter.publish(snapshot(state, T0_NS + k))
    publish(0)
    seen, failures = [], []

    def scraper():
        for _ in range(n_scrapes):
            status, body = http_get(exporter.url)
            if status != 200:
                failures.append(status)
                continue
            m = parse(body.decode())
            seen.append((value(m, "orchestrator_engine_frames_total"),
                         value(m, "orchestrator_strategy_signals_total", strategy="momentum"),
                         value(m, "orchestrator_oms_pending_bytes")))
            threading.Event().wait(0.01)
    threads = [threading.Thread(target=scraper) for _ in range(2)]
    for t in threads:
        t.start()
    published = 0
    try:
        for k in range(1, n_publishes + 1):
            publish(k)
            published += 1
            if k % 10 == 0:
                threading.Event().wait(0.01)  # the engine's batches in between
    finally:
        for t in threads:
            t.join()

    assert published == n_publishes and exporter.stats.publishes == n_publishes + 1
    assert not failures and len(seen) == 2 * n_scrapes
    assert all(frames == signals == pending for frames, signals, pending in seen), "a scrape mixed two snapshots"
    assert exporter.stats.renders <= exporter.stats.publishes
    assert value(scrape(exporter), "orchestrator_engine_frames_total") == n_publishes


def test_exporter_when_closed_with_a_keep_alive_connection_open_then_it_ends_it_and_its_thread(state):
    exporter = PrometheusExporter(config())
    exporter.open()
    exporter.publish(snapshot(state, T0_NS))
    host, port = exporter.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200 and response.read()
        threads_before = threading.active_count()

        exporter.close()

        assert exporter.closed and threading.active_count() < threads_before
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.request("GET", "/metrics")
            conn.getresponse()
    finally:
        conn.close()
        exporter.close()  # idempotent


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_exporter_when_host_is_ipv6_loopback_then_it_serves_there(state):
    with PrometheusExporter(config(host="::1")) as exporter:
        exporter.publish(snapshot(state, T0_NS))

        assert exporter.url.startswith("http://[::1]:")
        assert value(scrape(exporter), "orchestrator_open_orders") == 2


# ---------------------------------------------------------------------------------------------- real Prometheus
def test_exporter_when_a_real_prometheus_scrapes_it_then_queries_return_the_published_values(
        exporter, state, prometheus_server):
    exporter.publish(snapshot(state, T0_NS))
    prometheus = prometheus_server(["%s:%d" % exporter.address], scrape_interval="500ms")

    prometheus.wait_for_series("orchestrator_engine_frames_total")

    assert prometheus.values("orchestrator_engine_frames_total", "job") == {"tests": (C_FRAMES + 1) * 10}
    assert prometheus.values('orchestrator_strategy_signals_total{strategy="momentum"}', "strategy") == \
        {"momentum": 11}
    assert prometheus.values('orchestrator_strategy_state{strategy="momentum"} == 1', "state") == {"HALTED": 1}
    assert prometheus.values('orchestrator_position_units{strategy="momentum"}', "instrument") == \
        {"ESZ5": 0, "NQZ5": -3}
    assert prometheus.values("orchestrator_account_net_exposure", "account") == \
        {"futures": -1_200_000.0, "equities": 0.0}
    assert prometheus.values('orchestrator_strategy_reject_reasons_total{strategy="momentum"} > 0', "reason") == \
        {"rate": 3, "qty_max": 2}
    assert prometheus.values("sum(orchestrator_ring_occupancy_records)", "") == {"": 10}
    assert [t["health"] for t in prometheus.targets()] == ["up"]

    state.counters[C_FRAMES] = 123_456  # the next publish is what the next scrape sees
    exporter.publish(snapshot(state, T0_NS + 1))

    prometheus.wait_for_series("orchestrator_engine_frames_total == 123456")
