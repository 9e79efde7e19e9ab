"""The regression gate: is the hot path slower than its baseline, by more than this machine's noise?

What is compared is a RATIO measured in one process: a gated workload's time over the time of a fixed reference
workload (bench/reference_work.py), so a busier or slower machine moves both sides. One *repeat* times a block of
K calls of the workload (each from its reset state) between two blocks of the reference and takes
ratio = median call / reference. A session takes R repeats (15; quick: 5); its figure per metric is the median
ratio, and its *spread* the interquartile range of the R ratios over their median: this session's run-to-run noise.

A metric is a REGRESSION when its median ratio is above the baseline's by more than
    tolerance = min(CAP, max(FLOOR, Z x max(spread now, spread of the baseline)))      Z = 3
so a noisy session widens its own tolerance instead of failing. FLOOR is 10% for a full session and 35% for a quick
one: the smoke gate runs beside the rest of the test suite and other work, and on this oversubscribed 2-core VM
the workloads with the larger working sets (process_batch, apply_reports) were seen to drift by up to 30% against the
reference for seconds at a time (a neighbour sharing the caches: no reference workload follows that). CAP is 60%.
A metric that fails is measured again in a fresh session, up to CONFIRM = 3 sessions a second apart, and is
reported only if it fails every one: a neighbour's burst of work passes, a slower kernel does not. Each session
records how often it was preempted (`preemptions_per_s` in its machine info), to tell a busy machine from a slow
build.

Baselines: bench/baselines/<machine class>.json (bench/machine.py: CPU model and core count), written only by
the explicit `python -m bench gate --update-baseline` (which compares nothing).

Where no baseline is stored for this machine class, the gate CALIBRATES instead of skipping: it compares with
bench/baselines/calibration.json, per metric the ratio to the reference workload expected on any machine class (the
geometric mean over the classes measured) and how far the classes measured sit from it (class_deviation). The
tolerance then adds the spread between machine classes to this session's own:
    tolerance = min(CALIBRATED_CAP, (1 + class_spread) x (1 + session tolerance) - 1)
    class_spread = max(CLASS_FLOOR, CLASS_MARGIN x class_deviation), at most 1       CLASS_FLOOR 30%, MARGIN 2
(a full session: +43% for most metrics; quick: +75%), with the same confirmation in fresh sessions. It catches a
gross slowdown (1.5-2x) on any machine, not a 10% one: for that, store the class's baseline. Each run says which it
used. `--update-calibration` records this machine class's ratios there and recomputes (bench/README.md has the
numbers and why).

The smoke test (tests/bench/test_regression_gate_smoke.py) also measures a baseline in its own session and proves
both directions: an unchanged build is not flagged, and a kernel slowed on purpose (`inject`: a compiled variant of
run_batch with a busy loop, or a compiled busy loop after the call for the other kernels; never a change to
kernels/) is; against the calibration likewise.

`python -m bench gate --help` for the command line; BENCH_INJECT=<metric>:<fraction> injects a slowdown into any
run (`BENCH_INJECT=stream_1024:0.5 make bench` must fail the gate against a stored baseline; against the
calibration, `BENCH_INJECT=stream_1024:1.5`).
"""
import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from bench import BASELINES_DIR, ROOT, reference_work
from bench import workloads as W
from bench.machine import machine_class, machine_info
from kernels._jit import entry_point
from kernels.batch import run_batch

FLOOR = 0.10   # a regression is at least this much slower than the baseline ratio (full session)
QUICK_FLOOR = 0.35  # ... and in a quick session (the smoke gate: 5 repeats, run beside whatever else is running)
Z = 3.0        # and at least Z spreads (relative interquartile range) slower
CONFIRM = 3    # a flagged metric is measured again, up to this many sessions in all: it must fail every one
TOLERANCE_CAP = 0.6  # however noisy a session, a metric 60% slower in CONFIRM sessions in a row is a regression
# calibration (no baseline for this machine class): expected ratios that hold across machine classes
CLASS_FLOOR = 0.30   # any metric may sit this far from the expected ratio on a class not seen yet (29% was seen)
CLASS_MARGIN = 2.0   # ... or twice as far as the farthest class seen so far
CALIBRATED_CAP = 1.5  # however wide, a metric 2.5x its expected ratio in CONFIRM sessions in a row is a regression

# metric -> (workload factory, calls per block): a block lasts a few milliseconds
GATED = {
    "stream_1024": (lambda: W.RunBatchStream(1024), 50),
    "one_signal": (lambda: W.OneSignal(), 2000),
    "process_batch_256": (lambda: W.ProcessBatch(256), 200),
    "decode_256": (lambda: W.Decode(256), 150),
    "encode_256": (lambda: W.Encode(256), 500),
    "apply_reports_256": (lambda: W.ApplyReports(256), 100),
}
REFERENCE_CALLS = 60  # calls of each reference part per reference block (~1.5 ms)
REPEATS, QUICK_REPEATS = 15, 5


# ---------------------------------------------------------------------------------------------- slowing on purpose
@njit(nogil=True)  # compiled on first use (only when a slowdown is injected)
def slowed_run_batch(arena, layout, n_chunks, spin_iters):
    """run_batch, then a busy loop of spin_iters steps in the same compiled call: a deliberately slower kernel."""
    placed = run_batch(arena, layout, n_chunks)
    if _busy(spin_iters) == -1.0:  # never true; keeps the loop from being optimised away
        placed += 1
    return placed


@njit(nogil=True, inline="always")
def _busy(spin_iters):
    # a floating-point chain: each step waits for the last, and without fastmath LLVM may not reassociate it,
    # so a step costs the same wherever the loop is compiled (integer recurrences get unrolled algebraically)
    acc = 1.0
    for _ in range(spin_iters):
        acc = acc * 1.0000001 + 1e-9
    return acc


@njit(nogil=True)
def spin(spin_iters):
    return 1 if _busy(spin_iters) == -1.0 else 0


def _median_call_ns(workload, calls=40):
    return float(np.median([workload.time_once() for _ in range(calls)]))


def slow_down(workload, fraction):
    """Make `workload.call` slower by about `fraction` of its own time, in compiled code: for run_batch workloads
    a compiled variant of run_batch with a busy loop (called through its entry point, as the engine calls
    run_batch), for the others a compiled busy loop after the call. Calibrated on the workload itself."""
    base = _median_call_ns(workload)
    original = workload.call
    if workload.kernel is run_batch:
        slowed_run_batch(*workload.args, 0)  # compile, then skip the dispatcher like the real call does
        fn = entry_point(slowed_run_batch)

        def variant(iters):
            args = (*workload.args, iters)
            return lambda: fn(*args)
    else:
        spin(0)
        fn = entry_point(spin)

        def variant(iters):
            return lambda: (original(), fn(iters))
    probe = max(1000, int(0.2 * base))  # ~20% of the call at ~1 ns a step: well above the timer's noise
    workload.call = variant(0)
    t0 = _median_call_ns(workload)
    workload.call = variant(probe)
    per_iter = max(_median_call_ns(workload) - t0, 1.0) / probe
    iters = max(1, int((fraction * base - max(t0 - base, 0.0)) / per_iter))
    workload.call = variant(iters)
    workload.injected_spin_iters = iters
    workload.injected_fraction = round(_median_call_ns(workload) / base - 1.0, 3)
    return workload


def parse_inject(text):
    """'metric:fraction' -> (metric, fraction); None for empty."""
    if not text:
        return None
    metric, _, fraction = text.partition(":")
    if metric not in GATED:
        raise SystemExit(f"BENCH_INJECT/--inject: unknown metric {metric!r}; gated: {', '.join(GATED)}")
    return metric, float(fraction or 0.3)


# ---------------------------------------------------------------------------------------------- measuring
@dataclass
class Session:
    """One gate measurement: per metric the R ratios, their median and spread, and the raw medians (ns)."""
    metrics: dict = field(default_factory=dict)
    repeats: int = 0
    quick: bool = False
    inject: tuple | None = None
    info: dict = field(default_factory=dict)
    reference_version: int = reference_work.REFERENCE_VERSION

    def as_dict(self):
        return {"reference_version": self.reference_version, "repeats": self.repeats,
                "quick": self.quick, "inject": list(self.inject) if self.inject else None,
                "machine": self.info, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d):
        return cls(metrics=d["metrics"], repeats=d["repeats"], quick=d.get("quick", False),
                   inject=tuple(d["inject"]) if d.get("inject") else None, info=d.get("machine", {}),
                   reference_version=d.get("reference_version"))


def _preemptions():
    """Involuntary context switches of this thread so far: how often the machine took the CPU away."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw


def _spread(values):
    v = np.asarray(values, np.float64)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else 0.0


def build_workloads(metrics=None, inject=None):
    out = {}
    for name in metrics or GATED:
        out[name] = GATED[name][0]()
    if inject:
        metric, fraction = inject
        if metric in out:
            slow_down(out[metric], fraction)
    return out


def _reference_block():
    times = {part: [] for part in reference_work.PARTS}
    for _ in range(REFERENCE_CALLS):
        reference_work.time_parts(times)
    return float(np.exp(np.mean([np.log(np.median(v)) for v in times.values()])))  # geometric mean of medians


def measure(metrics=None, repeats=None, quick=False, inject=None, workloads=None, progress=None):
    """Time every gated metric against the reference R times; return a Session.

    One repeat of a metric: a reference block, a block of the metric's calls (each from its reset state), another
    reference block; ratio = median call / geometric mean of the two reference figures. Blocks, not single calls,
    alternate, so each side keeps its own caches warm and both see the same few milliseconds of machine."""
    repeats = repeats or (QUICK_REPEATS if quick else REPEATS)
    workloads = workloads or build_workloads(metrics, inject)
    reference_work.warm_up()
    for w in workloads.values():
        for _ in range(5):
            w.time_once()
    raw = {m: {"ratios": [], "ns": [], "ref_ns": []} for m in workloads}
    switches, started = _preemptions(), time.perf_counter()
    for r in range(repeats):
        for name, w in workloads.items():
            before = _reference_block()
            own_ns = float(np.median([w.time_once() for _ in range(GATED[name][1])]))
            ref_ns = float(np.sqrt(before * _reference_block()))
            raw[name]["ratios"].append(own_ns / ref_ns)
            raw[name]["ns"].append(own_ns)
            raw[name]["ref_ns"].append(ref_ns)
        if progress:
            progress(r + 1, repeats)
    session = Session(repeats=repeats, quick=quick, inject=inject, info=machine_info())
    session.info["preemptions_per_s"] = round((_preemptions() - switches) / (time.perf_counter() - started), 1)
    for name, d in raw.items():
        session.metrics[name] = {
            "ratio": float(np.median(d["ratios"])),
            "spread": _spread(d["ratios"]),
            "ns": float(np.median(d["ns"])),
            "ns_spread": _spread(d["ns"]),
            "ref_ns": float(np.median(d["ref_ns"])),
            "ratios": [round(x, 6) for x in d["ratios"]],
        }
        if inject and inject[0] == name:
            session.metrics[name]["injected_spin_iters"] = getattr(workloads[name], "injected_spin_iters", None)
            session.metrics[name]["injected_fraction"] = getattr(workloads[name], "injected_fraction", None)
    return session


# ---------------------------------------------------------------------------------------------- comparing
@dataclass
class Verdict:
    rows: list
    regressions: list
    improvements: list

    @property
    def ok(self):
        return not self.regressions

    def table(self):
        lines = ["| metric | baseline ratio | now | change | tolerance | verdict |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['metric']} | {r['baseline']:.4f} | {r['now']:.4f} | {r['change']:+.1%} | "
                         f"±{r['tolerance']:.1%} | {r['verdict']} |")
        return "\n".join(lines)


def compare(now, baseline, floor=None, z=Z):
    """Verdict of Session `now` against Session `baseline`, metric by metric (metrics in both)."""
    if floor is None:
        floor = QUICK_FLOOR if now.quick else FLOOR
    rows, regressions, improvements = [], [], []
    for name, cur in now.metrics.items():
        base = baseline.metrics.get(name)
        if base is None:
            continue
        tolerance = min(TOLERANCE_CAP, max(floor, z * max(cur["spread"], base["spread"])))
        if base.get("class_spread"):  # a calibrated expectation: the spread between machine classes, then noise
            tolerance = min(CALIBRATED_CAP, (1.0 + base["class_spread"]) * (1.0 + tolerance) - 1.0)
        change = cur["ratio"] / base["ratio"] - 1.0
        if change > tolerance:
            verdict = "REGRESSION"
            regressions.append(name)
        elif change < -tolerance:
            verdict = "improved (rebaseline?)"
            improvements.append(name)
        else:
            verdict = "ok"
        rows.append({"metric": name, "baseline": base["ratio"], "now": cur["ratio"], "change": change,
                     "tolerance": tolerance, "verdict": verdict})
    return Verdict(rows, regressions, improvements)


def check(baseline, metrics=None, repeats=None, quick=False, inject=None, workloads=None, confirm=CONFIRM,
          floor=None, z=Z, pause_s=1.0):
    """Measure, compare with `baseline`, and re-measure what fails (up to `confirm` sessions in all), keeping for
    each metric its best (lowest-ratio) session. Returns (session, verdict, attempts)."""
    workloads = workloads or build_workloads(metrics, inject)
    session = measure(None, repeats, quick, inject, workloads)
    verdict = compare(session, baseline, floor, z)
    attempts = 1
    while verdict.regressions and attempts < confirm:
        time.sleep(pause_s)  # let a neighbour's burst pass
        again = measure(None, repeats, quick, inject, {m: workloads[m] for m in verdict.regressions})
        for name, m in again.metrics.items():
            if m["ratio"] < session.metrics[name]["ratio"]:
                session.metrics[name] = {**m, "confirmed_in_session": attempts + 1}
        attempts += 1
        verdict = compare(session, baseline, floor, z)
    return session, verdict, attempts


def baseline_path(klass=None):
    return BASELINES_DIR / f"{klass or machine_class()}.json"


def load_baseline(path=None):
    """The stored baseline Session for this machine class, or None (none stored, or another reference)."""
    path = path or baseline_path()
    if not os.path.exists(path):
        return None
    with open(path) as f:
        session = Session.from_dict(json.load(f))
    if session.reference_version != reference_work.REFERENCE_VERSION:
        return None
    return session


def select_baseline(path=None):
    """(baseline Session, what it is) to compare this machine with: `path` if given, else the stored baseline of
    this machine class, else the calibration; (None, why) if there is nothing."""
    klass = machine_class()
    if path:
        session = load_baseline(path)
        return session, (f"baseline {path}" if session else f"{path}: missing or of another reference version")
    session = load_baseline()
    if session is not None:
        return session, f"the stored baseline of machine class {klass!r} ({_rel(baseline_path())})"
    session = load_calibration()
    if session is not None:
        return session, (f"CALIBRATED: no baseline is stored for machine class {klass!r}, so this session is compared "
                         f"with the expected ratios to the reference workload in {_rel(CALIBRATION_PATH)} (derived "
                         f"from {', '.join(session.info['classes'])}), whose tolerance adds the spread between "
                         f"machine classes (>= {CLASS_FLOOR:.0%}) to this session's noise: it catches a gross "
                         "slowdown, not a 10% one (store a baseline: python -m bench gate --update-baseline)")
    return None, (f"no baseline for machine class {klass!r} and no calibration ({_rel(CALIBRATION_PATH)}): "
                  "nothing to compare with")


def _rel(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------- calibration
CALIBRATION_PATH = BASELINES_DIR / "calibration.json"


def calibrate(classes):
    """Per metric, from each machine class's ratio: the expected ratio (geometric mean over the classes), how far
    the farthest class is from it (class_deviation) and the spread the gate allows for a class not seen yet
    (class_spread = max(CLASS_FLOOR, CLASS_MARGIN x class_deviation), at most 1)."""
    names = sorted(set.intersection(*(set(c["ratios"]) for c in classes.values()))) if classes else []
    out = {}
    for name in names:
        ratios = np.array([c["ratios"][name] for c in classes.values()], np.float64)
        expected = float(np.exp(np.mean(np.log(ratios))))
        deviation = float(np.max(np.abs(ratios / expected - 1.0)))
        out[name] = {"expected": expected, "class_deviation": round(deviation, 4),
                     "class_spread": round(min(1.0, max(CLASS_FLOOR, CLASS_MARGIN * deviation)), 4)}
    return out


def load_calibration(path=None):
    """The calibration as a baseline Session (per metric: ratio = the expected ratio, spread 0, class_spread), or
    None if there is none or it was made against another reference workload."""
    path = path or CALIBRATION_PATH
    if not os.path.exists(path):
        return None
    with open(path) as f:
        doc = json.load(f)
    if doc.get("reference_version") != reference_work.REFERENCE_VERSION:
        return None
    metrics = {name: {"ratio": m["expected"], "spread": 0.0, "class_spread": m["class_spread"]}
               for name, m in doc["metrics"].items()}
    return Session(metrics=metrics, repeats=0, info={"basis": "calibration", "classes": sorted(doc["classes"])},
                   reference_version=doc["reference_version"])


def update_calibration(session, path=None, klass=None, how=None):
    """Record this session's ratios as its machine class's entry in the calibration and recompute it."""
    path = path or CALIBRATION_PATH
    doc = {"reference_version": reference_work.REFERENCE_VERSION, "classes": {}}
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
        if doc.get("reference_version") != reference_work.REFERENCE_VERSION:
            doc = {"reference_version": reference_work.REFERENCE_VERSION, "classes": {}}
    klass = klass or session.info.get("machine_class") or machine_class()
    doc["classes"][klass] = {"commit": session.info.get("commit"), "date": session.info.get("date"),
                             "how": how or f"measured: one session of {session.repeats} repeats",
                             "ratios": {k: round(m["ratio"], 6) for k, m in session.metrics.items()}}
    doc["metrics"] = calibrate(doc["classes"])
    doc["rule"] = (f"tolerance = min({CALIBRATED_CAP:g}, (1 + class_spread) x (1 + session tolerance) - 1); "
                   f"class_spread = max({CLASS_FLOOR:g}, {CLASS_MARGIN:g} x class_deviation), at most 1; "
                   "session tolerance as against a stored baseline (bench/gate.py)")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return path


def save_baseline(session, path=None):
    path = path or baseline_path()
    BASELINES_DIR.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(session.as_dict(), f, indent=1)
    return path


# ---------------------------------------------------------------------------------------------- command line
def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_REPEATS} repeats instead of {REPEATS} (the smoke gate)")
    p.add_argument("--repeats", type=int, default=None, help=f"repeats per session (default {REPEATS})")
    p.add_argument("--runs", type=int, default=1, help="sessions in a row, each compared with the baseline")
    p.add_argument("--metrics", default=None, help=f"comma-separated subset of {','.join(GATED)}")
    p.add_argument("--update-baseline", action="store_true",
                   help="measure and store this session as this machine class's baseline (compares nothing)")
    p.add_argument("--update-calibration", action="store_true",
                   help="measure and record this machine class's ratios in bench/baselines/calibration.json, "
                        "recomputing the expected ratios (compares nothing)")
    p.add_argument("--baseline", default=None, help="baseline JSON (default bench/baselines/<machine class>.json)")
    p.add_argument("--inject", default=os.environ.get("BENCH_INJECT"), metavar="METRIC:FRACTION",
                   help="slow METRIC down by FRACTION of its time (proves the gate; also env BENCH_INJECT)")
    p.add_argument("--json", default=None, help="write the sessions and verdicts to this file")
    return p


def main(args):
    metrics = args.metrics.split(",") if args.metrics else None
    inject = parse_inject(args.inject)
    if inject and (args.update_baseline or args.update_calibration):
        raise SystemExit("gate: storing a baseline or a calibration with a slowdown injected (--inject / "
                         "BENCH_INJECT) would store a slowed build; unset it")
    workloads = build_workloads(metrics, inject)
    if args.update_baseline or args.update_calibration:  # an explicit command: measure and store, compare nothing
        session = measure(None, args.repeats, args.quick, inject, workloads)
        _print_session(session, 1, 1, inject, 1)
        if args.update_baseline:
            print(f"baseline stored: {save_baseline(session, args.baseline)} (commit it); nothing was compared")
        if args.update_calibration:
            print(f"calibration updated with machine class {machine_class()!r}: {update_calibration(session)} "
                  "(commit it); nothing was compared")
        if args.json:
            with open(args.json, "w") as f:
                json.dump([{"session": session.as_dict()}], f, indent=1)
        return 0
    baseline, basis = select_baseline(args.baseline)
    print(f"gate: compared with {basis}")
    if baseline is None:
        return 1
    results, failed = [], False
    for run in range(args.runs):
        session, verdict, attempts = check(baseline, None, args.repeats, args.quick, inject, workloads)
        _print_session(session, run + 1, args.runs, inject, attempts)
        print(verdict.table())
        print("gate: " + ("PASS" if verdict.ok else "FAIL: " + ", ".join(verdict.regressions))
              + (" (calibrated)" if baseline.info.get("basis") == "calibration" else ""))
        failed |= not verdict.ok
        results.append({"session": session.as_dict(), "basis": basis,
                        "verdict": {"ok": verdict.ok, "rows": verdict.rows, "regressions": verdict.regressions,
                                    "sessions": attempts}})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if failed else 0


def _print_session(session, run, runs, inject, attempts):
    print(f"gate session {run}/{runs}: {session.repeats} repeats"
          f"{'; injected ' + str(inject) if inject else ''}{f'; {attempts} sessions' if attempts > 1 else ''}")
    for name, m in session.metrics.items():
        print(f"  {name:20s} ratio {m['ratio']:.4f} (spread {m['spread']:.1%})  {m['ns'] / 1000:9.2f} us  "
              f"reference {m['ref_ns'] / 1000:.2f} us")
