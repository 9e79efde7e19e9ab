"""pytest-benchmark plumbing for the micro benches: machine info in every JSON, one way to time a workload.

Run: `python -m pytest bench --benchmark-disable-gc --benchmark-json=bench/results/micro.json` (`python -m bench
micro` does it for you); `python -m pytest bench --benchmark-disable` runs every bench once, as a quick check that
they all still work. bench/ is not under `testpaths`, so the plain `pytest` of `make test` never
collects it; its smoke gate lives in tests/bench/.
"""
import os
from pathlib import Path

import pytest

from bench import BENCH_DIR, hist, machine


def pytest_collection_modifyitems(config, items):
    """`slow` benches (the million-event loop, bench/test_loop.py) run only when asked for, with BENCH_SLOW=1 or a
    -m expression that names them, so the quick runs (`python -m bench micro`, the smoke gate's run-once) stay
    quick."""
    if os.environ.get("BENCH_SLOW") or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow bench: BENCH_SLOW=1 runs it")
    for item in items:
        if item.get_closest_marker("slow") and BENCH_DIR in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["bench"] = _machine()


_cached = None


def _machine():
    global _cached
    if _cached is None:
        _cached = machine.machine_info()
    return _cached


def run(benchmark, workload, *, rounds, warmup_rounds=20, unit="signal", budget_ns=None, **extra):
    """Time `workload.call()` for `rounds` rounds after `warmup_rounds` untimed ones (compilation and first-touch
    never land in a timed round), each round starting from `workload.setup()` (untimed). Records the figure per
    item (ns per `unit` and `unit`s per second, from the median round) and the budget beside it."""
    benchmark.pedantic(workload.call, setup=workload.setup, rounds=rounds, warmup_rounds=warmup_rounds)
    if benchmark.disabled:  # --benchmark-disable: each bench runs once, as a test that it still works
        return None
    stats = benchmark.stats.stats
    per_item_ns = stats.median * 1e9 / workload.items
    info = benchmark.extra_info
    info["items_per_round"] = workload.items
    info["unit"] = unit
    info[f"ns_per_{unit}"] = round(per_item_ns, 2)
    info[f"{unit}s_per_s"] = round(1e9 / per_item_ns)
    info["min_ns_per_item"] = round(stats.min * 1e9 / workload.items, 2)
    if budget_ns is not None:
        info["budget_ns_per_item"] = budget_ns
        info["budget"] = "met" if per_item_ns <= budget_ns else "MISSED"
    info.update(extra)
    return per_item_ns


def record_latency(benchmark, interval_ns, budget_us=None):
    """HdrHistogram of the timed rounds (ns), corrected for coordinated omission at the pacing interval; the
    percentiles (and the encoded histogram) go to extra_info. Returns the summary."""
    if benchmark.disabled:
        return {"count": float("inf")}
    samples = [round(t * 1e9) for t in benchmark.stats.stats.data]
    h = hist.of(samples, interval_ns)
    s = hist.summary(h)
    info = benchmark.extra_info
    info["latency_ns"] = s
    info["interval_ns"] = interval_ns
    info["histogram"] = hist.encode(h)
    if budget_us:
        info["budget_us"] = budget_us
        info["budget"] = {k: ("met" if s[k] <= v * 1000 else "MISSED") for k, v in budget_us.items()}
    return s


@pytest.fixture(scope="session")
def workloads():
    """Workloads are built once per session (an arena and its snapshot each) and shared by the benches."""
    cache = {}

    def get(cls, *args, **kw):
        key = (cls, args, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = cls(*args, **kw)
        return cache[key]
    return get
