"""The regression gate's smoke run (issue 5), part of `make test`; the full gate is `make bench`.

Short by design (well under a minute once the kernels are compiled): the quick gate (5 repeats) of bench/gate.py.
It proves the two directions the gate must get right on this noisy shared machine, against a baseline measured
in this same session: an unchanged build is not flagged, run after run; a kernel slowed on purpose (a compiled
variant of run_batch with a busy loop worth as much as the call itself, on the one-signal path; kernels/ untouched)
is flagged, and nothing else is. The quick gate's floor is 35% (bench/gate.py says why); `make bench` runs the full
gate, whose floor is 10%.
Then it compares this build with the baseline stored for this machine class (bench/baselines/), or, where none is
stored, with the calibration (bench/baselines/calibration.json: expected ratios to the reference workload that hold
across machine classes, with a tolerance widened by the spread between classes): it never skips. The calibrated
gate is proven both ways too (an unchanged build passes, the same injected slowdown is flagged), and `make bench`'s
gate on a machine with no baseline is shown to calibrate and to write no baseline. Last, every micro bench runs once
(`--benchmark-disable`), so a kernel change that breaks a bench is caught here, not at the next `make bench`.
"""
import json
import os
import subprocess
import sys

import pytest

from bench import ROOT, gate


@pytest.fixture(scope="module")
def workloads():
    return gate.build_workloads()


@pytest.fixture(scope="module")
def session_baseline(workloads):
    return gate.measure(quick=True, workloads=workloads)


def test_gate_when_build_unchanged_then_no_regression_across_runs(session_baseline, workloads):
    for _ in range(2):
        _, verdict, _ = gate.check(session_baseline, quick=True, workloads=workloads)
        assert verdict.ok, verdict.table()


def test_gate_when_kernel_slowed_then_only_that_metric_flagged(session_baseline):
    slowed = gate.build_workloads(["one_signal", "decode_256"], inject=("one_signal", 3.0))  # far past any noise
    _, verdict, attempts = gate.check(session_baseline, quick=True, workloads=slowed)
    assert verdict.regressions == ["one_signal"], verdict.table()
    assert attempts == gate.CONFIRM  # a regression is confirmed in every session before it is reported


def test_gate_when_compared_with_stored_or_calibrated_baseline_then_no_regression(workloads):
    baseline, basis = gate.select_baseline()  # this machine class's stored baseline, else the calibration
    assert baseline is not None, basis
    _, verdict, _ = gate.check(baseline, quick=True, workloads=workloads)
    assert verdict.ok, basis + "\n" + verdict.table()


def test_gate_when_calibrated_and_build_unchanged_then_no_regression(workloads):
    calibration = gate.load_calibration()
    assert calibration is not None, f"{gate.CALIBRATION_PATH} missing or of another reference version"
    _, verdict, _ = gate.check(calibration, quick=True, workloads=workloads)
    assert verdict.ok, verdict.table()


def test_gate_when_calibrated_and_kernel_slowed_then_only_that_metric_flagged():
    slowed = gate.build_workloads(["one_signal", "decode_256"], inject=("one_signal", 3.0))
    _, verdict, attempts = gate.check(gate.load_calibration(), quick=True, workloads=slowed)
    assert verdict.regressions == ["one_signal"], verdict.table()
    assert attempts == gate.CONFIRM


def test_run_gate_when_no_class_baseline_then_calibrates_and_stores_nothing(tmp_path, monkeypatch):
    from bench.__main__ import run_gate
    monkeypatch.delenv("BENCH_INJECT", raising=False)
    monkeypatch.setattr(gate, "machine_class", lambda *a, **k: "no-such-machine-2c")
    monkeypatch.setattr(gate, "GATED", {"one_signal": gate.GATED["one_signal"]})
    before = sorted(gate.BASELINES_DIR.iterdir())
    assert run_gate(tmp_path, quick=True)
    assert sorted(gate.BASELINES_DIR.iterdir()) == before  # no baseline written
    with open(tmp_path / "gate.json") as f:
        doc = json.load(f)
    assert doc["results"][0]["calibrated"] and doc["note"].startswith("CALIBRATED")
    assert "no-such-machine-2c" in doc["note"]


def test_micro_benches_when_run_once_then_all_work():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider",
                           "--benchmark-disable"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
