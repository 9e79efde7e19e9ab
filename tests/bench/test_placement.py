"""bench/placement.py: where processes may run and were seen, and the warning when spinning ones share a core."""
import os

from bench.placement import Monitor, cores_for, shared_core_warnings, udp_drops


def _proc(pid, cpus, spinning=True):
    return {"pid": pid, "spinning": spinning, "affinity": {pid: sorted(cpus)}}


def test_shared_core_warnings_when_two_spinners_pinned_to_one_core_then_warned():
    warnings = shared_core_warnings({"engine": _proc(1, {1}), "peer": _proc(2, {1})})
    assert len(warnings) == 1 and "share core 1" in warnings[0]


def test_shared_core_warnings_when_spinners_on_own_cores_or_one_sleeps_then_quiet():
    assert shared_core_warnings({"engine": _proc(1, {1}), "peer": _proc(2, {0})}) == []
    assert shared_core_warnings({"engine": _proc(1, {1}, spinning=False), "peer": _proc(2, {1})}) == []


def test_shared_core_warnings_when_unpinned_then_warned_that_the_scheduler_decides():
    assert "scheduler decides" in shared_core_warnings({"a": _proc(1, {0, 1}), "b": _proc(2, {0, 1})})[0]


def test_cores_for_when_pinned_then_engine_alone_on_the_last_core():
    assert cores_for("pinned", [0, 1]) == ({1}, {0})
    assert cores_for("pinned", [0, 1, 2, 3]) == ({3}, {0, 1, 2})
    assert cores_for("unpinned", [0, 1]) == (None, None)


def test_monitor_when_run_then_process_placement_and_load_recorded():
    out = Monitor({"me": (os.getpid(), False)}, interval_s=0.01).start()
    sum(range(200_000))
    out = out.stop()
    me = out["processes"]["me"]
    assert me["affinity"][os.getpid()] == sorted(os.sched_getaffinity(0))
    assert 0 <= me["cpu_share"] and 0 <= me["wait_share"] and out["cores"] and out["loadavg_before"]
    assert out["warnings"] == [] or all(isinstance(w, str) for w in out["warnings"])


def test_udp_drops_when_no_such_socket_then_none():
    assert udp_drops(1) is None
