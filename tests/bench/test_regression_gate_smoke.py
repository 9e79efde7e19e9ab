"""The regression gate's smoke run (issue 5), part of `make test`; the full gate is `make bench`.

Short by design (well under a minute once the kernels are compiled): the quick gate (5 repeats) of bench/gate.py.
It proves the two directions the gate must get right on this noisy shared machine, against a baseline measured
in this same session: an unchanged build is not flagged, run after run; a kernel slowed on purpose (a compiled
variant of run_batch with a busy loop worth as much as the call itself, on the one-signal path; kernels/ untouched)
is flagged, and nothing else is. The quick gate's floor is 35% (bench/gate.py says why); `make bench` runs the full
gate, whose floor is 10%.
Then it compares this build with the baseline stored for this machine class (bench/baselines/), if there is one:
that is the check that catches a real regression of the hot path. Last, every micro bench runs once
(`--benchmark-disable`), so a kernel change that breaks a bench is caught here, not at the next `make bench`.
"""
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


def test_gate_when_compared_with_stored_baseline_then_no_regression(workloads):
    stored = gate.load_baseline()
    if stored is None:
        pytest.skip(f"no baseline stored for machine class {gate.machine_class()!r} (python -m bench gate "
                    "--update-baseline)")
    _, verdict, _ = gate.check(stored, quick=True, workloads=workloads)
    assert verdict.ok, verdict.table()


def test_micro_benches_when_run_once_then_all_work():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider",
                           "--benchmark-disable"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
