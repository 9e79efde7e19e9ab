"""pytest fixtures over tests/infra/servers.py, available to every test module (tests/conftest.py imports them).

    def test_x(redis_server):              # a started redis-server; .host .port .kill() .restart()
    def test_y(prometheus_server):         # a factory: prometheus_server(["127.0.0.1:9464"], "1s") -> started
    def test_z(chromium):                  # .screenshot(url, path, width, height) .dom(url)
    def test_w(static_site):               # .add("page.html", html) -> its URL on 127.0.0.1

Each server is ended when its test ends, passed or not.
"""
import pytest

from tests.infra.servers import Chromium, PrometheusServer, RedisServer, StaticSite


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of this test's own on a free loopback port, no persistence, answering PING."""
    server = RedisServer(tmp_path / "redis")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def prometheus_server(tmp_path):
    """A factory: `prometheus_server(scrape_targets, scrape_interval="1s")` starts a Prometheus scraping those
    "host:port" targets and waits until it is ready; every one started is stopped at the end of the test."""
    started = []

    def start(scrape_targets, scrape_interval="1s"):
        server = PrometheusServer(tmp_path / f"prometheus-{len(started)}", scrape_targets, scrape_interval)
        started.append(server)
        return server.start()
    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def chromium(tmp_path):
    """Headless chromium with a fresh profile per call, its files under this test's tmp dir."""
    return Chromium(tmp_path / "chromium")


@pytest.fixture
def static_site(tmp_path):
    """A directory of pages served on 127.0.0.1 for this test."""
    with StaticSite(tmp_path / "site") as site:
        yield site
