"""tests/infra/servers.py: each real-server helper does what the other tests rely on, shown against the server."""
import threading

import pytest
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from tests.infra.servers import RedisServer, http_get, png_pixel, png_size


# ---------------------------------------------------------------------------------------------- redis
def test_redis_server_when_started_then_it_answers_on_its_own_loopback_port(redis_server):
    client = redis.Redis(redis_server.host, redis_server.port)
    try:
        assert redis_server.host == "127.0.0.1" and redis_server.port != 6379
        assert client.ping() is True
        client.set("infra:key", "value")
        assert client.get("infra:key") == b"value"
        assert client.config_get("save") == {"save": ""} and client.config_get("appendonly")["appendonly"] == "no"
    finally:
        client.close()


def test_redis_server_when_killed_then_clients_fail_and_restart_serves_the_same_port_empty(redis_server):
    client = redis.Redis(redis_server.host, redis_server.port, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.set("infra:key", "before")
        port = redis_server.port

        redis_server.kill()
        assert not redis_server.ping()
        with pytest.raises(redis.ConnectionError):
            client.get("infra:key")

        redis_server.restart()
        assert redis_server.port == port and redis_server.process.starts == 2
        assert client.get("infra:key") is None, "no persistence: a killed server comes back empty"
    finally:
        client.close()


def test_redis_server_when_persistent_then_data_survives_a_sigkill(tmp_path):
    server = RedisServer(tmp_path / "redis", persistence=True).start()
    client = redis.Redis(server.host, server.port, socket_timeout=2)
    try:
        client.set("infra:key", "kept")
        server.kill()
        server.restart()
        assert client.get("infra:key") == b"kept"
    finally:
        client.close()
        server.stop()


# ---------------------------------------------------------------------------------------------- prometheus
@pytest.fixture
def probe_target():
    """A real exporter independent of ours (prometheus_client's own server) with one gauge and one counter."""
    registry = CollectorRegistry()
    Gauge("infra_probe_value", "a known value", ["side"], registry=registry).labels("left").set(42)
    Counter("infra_probe_events", "a known count", registry=registry).inc(7)
    server, thread = start_http_server(0, "127.0.0.1", registry)
    try:
        yield "127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_prometheus_server_when_it_scrapes_a_target_then_query_returns_the_target_values(prometheus_server,
                                                                                         probe_target):
    prometheus = prometheus_server([probe_target], scrape_interval="500ms")

    prometheus.wait_for_series('infra_probe_value{side="left"}')

    assert prometheus.values("infra_probe_value", "side") == {"left": 42.0}
    assert prometheus.values("infra_probe_events_total", "job") == {"tests": 7.0}
    assert prometheus.values("up", "instance") == {probe_target: 1.0}
    assert [t["health"] for t in prometheus.targets()] == ["up"]
    assert http_get(prometheus.url + "/-/ready")[0] == 200


def test_prometheus_server_when_query_is_invalid_then_the_error_names_prometheus_reason(prometheus_server):
    prometheus = prometheus_server([])

    with pytest.raises(AssertionError, match="parse error"):
        prometheus.query("rate(")


def test_prometheus_server_when_series_never_appears_then_wait_fails_with_target_health(prometheus_server):
    prometheus = prometheus_server(["127.0.0.1:9"], scrape_interval="200ms")  # discard port: nothing listens
    prometheus.wait_for_series("up")  # the first scrape has failed: up is 0

    with pytest.raises(AssertionError, match=r"targets: \[\('http://127.0.0.1:9/metrics', 'down'"):
        prometheus.wait_for_series("up == 1", timeout=1)
    assert prometheus.values("up", "instance") == {"127.0.0.1:9": 0.0}


# ---------------------------------------------------------------------------------------------- chromium
PAGE = """<!doctype html>
<html><head><style>body { margin: 0; background: rgb(255, 255, 255); }</style></head>
<body><div id="out">written by html</div>
<script>
  setTimeout(function () {
    document.getElementById("out").textContent = "written by js " + (6 * 7);
    document.body.style.background = "rgb(0, 128, 255)";
  }, 500);
</script></body></html>
"""


def test_chromium_when_dom_is_dumped_then_it_holds_what_the_script_wrote(chromium, static_site):
    url = static_site.add("page.html", PAGE)

    dom = chromium.dom(url)

    assert '<div id="out">written by js 42</div>' in dom
    assert "written by html" not in dom


def test_chromium_when_screenshot_is_taken_then_it_is_a_png_of_the_window_after_the_script_ran(chromium,
                                                                                               static_site, tmp_path):
    url = static_site.add("page.html", PAGE)

    path = chromium.screenshot(url, tmp_path / "page.png", width=320, height=200)

    assert png_size(path) == (320, 200)
    assert png_pixel(path, 300, 180) == (0, 128, 255), "the background the script set, not the page's white"


def test_chromium_when_two_calls_run_at_once_then_each_has_its_own_profile(chromium, static_site):
    url = static_site.add("page.html", PAGE)
    doms = []
    threads = [threading.Thread(target=lambda: doms.append(chromium.dom(url))) for _ in range(2)]

    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(doms) == 2 and all("written by js 42" in d for d in doms)
    assert sorted(p.name for p in chromium.dir.glob("profile-*")) == ["profile-1", "profile-2"]
