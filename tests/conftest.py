"""Compile (or load from the cache) every kernel once, at collection, before any test starts a clock: on a
clean checkout the first compile takes about a minute, which would otherwise land inside some test's timeout.

The real-server fixtures (redis_server, prometheus_server, chromium, static_site) are tests/infra/fixtures.py's,
imported here so that every test module can use them."""
import kernels.batch  # noqa: F401
import kernels.latency  # noqa: F401
from tests.infra.fixtures import chromium, prometheus_server, redis_server, static_site  # noqa: F401
