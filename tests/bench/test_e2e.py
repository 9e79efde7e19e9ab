"""bench/e2e.py over real processes: a group runs, every run carries its placement and load, and engine runs are
put beside the floor of their transport and rate. No timing is asserted (a shared 2-core machine)."""
import pytest

from bench import e2e
from bench.placement import cores_for


@pytest.mark.parametrize("engine,transport,driver", [("floor", "udp", "spin"), ("orchestrator", "udp", "spin"),
                                                     ("orchestrator", "tcp", "event"), ("plain", "tcp", "asyncio"),
                                                     ("floor", "aeron", "spin"), ("orchestrator", "aeron", "spin")])
def test_run_group_when_low_rate_then_every_signal_answered_and_placement_recorded(tmp_path, engine, transport,
                                                                                   driver):
    runs, report = e2e.run_group(engine, transport, driver, [2_000], 0.3, tmp_path, log=lambda *_: None)
    (run,) = runs
    assert run.sent == 600 and run.received == run.sent and run.lost == 0
    assert run.latency_ns["p50"] > 0 and run.latency_sent_ns["p50"] > 0
    procs = run.placement["processes"]
    name = "floor" if engine == "floor" else "engine"
    assert set(procs) == {name, "peer"} | ({"aeron driver"} if transport == "aeron" else set())
    engine_cpus, peer_cpus = cores_for("pinned")
    if engine_cpus:  # pinned: the engine alone on its core, the peer elsewhere, and no shared-core warning
        assert procs[name]["affinity"][procs[name]["pid"]] == sorted(engine_cpus)
        assert procs["peer"]["affinity"][procs["peer"]["pid"]] == sorted(peer_cpus)
        assert not any("share" in w for w in run.warnings)
    assert run.placement["loadavg_before"] and run.placement["cores"]
    assert report and (report.get("floor") or report.get("counters"))
    assert list(tmp_path.iterdir()) == []  # the per-run files are gone once analysed


def test_attach_floor_when_engine_and_floor_ran_then_ratios_at_the_same_transport_and_rate():
    def run(engine, rate, p50, p99, thr):
        r = e2e.Run(engine, "udp", "spin", rate, 1.0, 1)
        r.latency_ns = {"p50": p50, "p99": p99, "p99.9": p99 * 2}
        r.throughput = thr
        return r
    floor, other_rate = run("floor", 10_000, 10_000, 40_000, 10_000), run("floor", 0, 1, 1, 800_000)
    engine = run("orchestrator", 10_000, 15_000, 60_000, 10_000)
    sat = run("orchestrator", 0, 5, 5, 760_000)
    e2e.attach_floor([floor, other_rate, engine, sat])
    assert engine.vs_floor["p50"] == 1.5 and engine.vs_floor["p99"] == 1.5 and engine.floor["p50"] == 10_000
    assert sat.vs_floor["throughput"] == 0.95
    assert any("within 10% of the floor" in w for w in sat.warnings)
    assert floor.vs_floor == {}


def test_disturbed_when_a_process_waited_or_others_ran_then_says_so():
    calm = {"processes": {"engine": {"wait_share": 0.001}, "peer": {"wait_share": 0.005}}, "others_share": 0.01}
    busy = {"processes": {"engine": {"wait_share": 0.30}, "peer": {"wait_share": 0.005}}, "others_share": 0.35}
    assert e2e.disturbed(calm) == ""
    assert e2e.disturbed(busy) == "engine waited 30.0% for its CPU, other processes used 35% of the machine"
    assert e2e._disturbance(busy) > e2e._disturbance(calm)


def test_run_all_when_aeron_then_only_the_spin_driver_and_the_floor_and_the_rest_listed_as_skipped(tmp_path):
    logged = []
    runs, _, skipped = e2e.run_all(tmp_path, engines=("plain",), transports=("aeron",), floor=False,
                                   log=logged.append)
    assert runs == [] and logged == []
    assert skipped == ["plain aeron: no aeron adapter in this engine"]
    assert e2e.AERON_DRIVERS == {"orchestrator": ("spin",), "floor": ("spin",)}
