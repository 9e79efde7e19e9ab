"""Compile (or load from the cache) every kernel once, at collection, before any test starts a clock: on a
clean checkout the first compile takes about a minute, which would otherwise land inside some test's timeout."""
import kernels.batch  # noqa: F401
import kernels.latency  # noqa: F401
