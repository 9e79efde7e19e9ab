"""`python -m bench` (what `make bench` runs): the whole benchmark suite, one results directory, one report.

    python -m bench                      micro benches, regression gate, end to end, report (~4-5 minutes)
    python -m bench --quick              the same with short end-to-end runs (~2-3 minutes)
    python -m bench micro [PYTEST ARGS]  only the pytest-benchmark micro benches
    python -m bench gate [--help]        only the regression gate (bench/gate.py)
    python -m bench e2e [--help]         only the end-to-end harness (bench/e2e.py)
    python -m bench report DIR           rebuild DIR/report.md and DIR/latency.png from DIR/*.json

Results go to bench/results/<UTC date-time>/ (machine.json, micro.json, gate.json, e2e.json, report.md,
latency.png); a complete run (nothing skipped, nothing injected) is also copied to bench/results/latest/ and its
figures written into bench/README.md. The exit status is 1 when the regression gate flags a
regression or a micro bench fails, 0 otherwise: budgets are reported, never enforced.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import RESULTS_DIR, ROOT


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_micro(out_dir, extra=()):
    argv = [sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", "--benchmark-disable-gc",
            "--benchmark-sort=name", "--benchmark-columns=min,median,max,rounds",
            f"--benchmark-json={Path(out_dir) / 'micro.json'}", *extra]
    print("micro benches:", " ".join(argv[1:]), flush=True)
    code = subprocess.run(argv, cwd=ROOT, env=_env()).returncode
    _strip_raw_rounds(Path(out_dir) / "micro.json")
    return code


def _strip_raw_rounds(path):
    """pytest-benchmark writes every round's time (MBs for the latency benches); the stats and the encoded
    HdrHistograms in extra_info keep what the report needs."""
    if not path.exists():
        return
    with open(path) as f:
        doc = json.load(f)
    for bench in doc.get("benchmarks", []):
        bench.get("stats", {}).pop("data", None)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def run_gate(out_dir, quick=False):
    """The regression gate against this machine class's stored baseline, else the calibration. Writes nothing but
    gate.json: storing a baseline is its own command (python -m bench gate --update-baseline)."""
    from bench import gate
    baseline, basis = gate.select_baseline()
    print(f"regression gate: measuring; compared with {basis}", flush=True)
    results, note = [], basis
    if baseline is None:
        ok = False
    else:
        session, verdict, attempts = gate.check(baseline, quick=quick, inject=gate.parse_inject(
            os.environ.get("BENCH_INJECT")))
        print(verdict.table())
        ok = verdict.ok
        results.append({"session": session.as_dict(), "basis": basis,
                        "calibrated": baseline.info.get("basis") == "calibration",
                        "verdict": {"ok": ok, "rows": verdict.rows, "regressions": verdict.regressions,
                                    "sessions": attempts}})
        if os.environ.get("BENCH_INJECT"):
            note += f". BENCH_INJECT={os.environ['BENCH_INJECT']}: a slowdown was injected on purpose."
    with open(Path(out_dir) / "gate.json", "w") as f:
        json.dump({"results": results, "note": note}, f, indent=1)
    print("gate:", "PASS" if ok else "FAIL", flush=True)
    return ok


def run_e2e(out_dir, args):
    from bench import e2e
    rates = [int(float(r)) for r in args.rates.split(",")] if args.rates else None
    plain_rates = [int(float(r)) for r in args.plain_rates.split(",")] if args.plain_rates else None
    if args.quick and not args.rates:
        rates = [10_000, 100_000, 0]
    duration = args.duration or (1.5 if args.quick else 2.0)
    engines = ("orchestrator",) if args.no_plain else ("orchestrator", "plain")
    t0 = time.monotonic()
    runs, reports, skipped = e2e.run_all(out_dir, engines, args.transports.split(","),
                                         args.drivers.split(",") if args.drivers else None, rates, plain_rates,
                                         duration, floor=not args.no_floor, placement=args.placement,
                                         peer=args.peer, wait=args.wait, loop=args.loop, retries=args.retries)
    with open(Path(out_dir) / "e2e.json", "w") as f:
        json.dump({"runs": runs, "engine_reports": reports, "skipped": skipped,
                   "settings": {"placement": args.placement, "peer": args.peer, "wait": args.wait, "loop": args.loop,
                                "retries": args.retries, "floor": not args.no_floor, "duration_s": duration},
                   "seconds": time.monotonic() - t0}, f, indent=1)


def add_e2e_arguments(p):
    p.add_argument("--rates", default=None, help="signals/s, comma-separated; 0 = saturation "
                                                 "(default 10000,100000,500000,0; quick 10000,100000,0)")
    p.add_argument("--plain-rates", default=None, help="rates for the plain-Python engine (default 10000,0)")
    p.add_argument("--duration", type=float, default=None, help="seconds per rate (default 2; quick 1.5)")
    p.add_argument("--transports", default="udp,tcp,aeron",
                   help="udp,tcp,aeron (aeron: IPC, the spin driver and the floor)")
    p.add_argument("--drivers", default=None, help="spin,event (default both)")
    p.add_argument("--no-plain", action="store_true", help="skip the plain-Python engine")
    p.add_argument("--no-floor", action="store_true", help="skip the floor (bench/floor.py): no engine/floor ratios")
    p.add_argument("--placement", choices=("pinned", "unpinned"), default="pinned",
                   help="pinned (default): the engine alone on the last core, the peer on the others")
    p.add_argument("--peer", choices=("one", "split"), default="one",
                   help="load generator and receiver in one process (default) or two on the same core")
    p.add_argument("--wait", choices=("spin", "block"), default="spin",
                   help="the peer spins between events (default) or blocks in select()")
    p.add_argument("--retries", type=int, default=2,
                   help="run a rate again up to this many times while the rest of the machine disturbs it (default 2)")
    p.add_argument("--loop", choices=("compiled", "python"), default="compiled",
                   help="the peer's busy loop compiled (bench/peer_loop.py, default) or in Python")
    return p


def new_run_dir():
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / stamp
    path.mkdir(parents=True, exist_ok=True)
    return path


def publish(run_dir):
    """Copy a run's files to bench/results/latest/, over the last run's. Only those: the other benches (loop,
    persistence, monitoring, api) keep their own files there, and a `make bench` does not measure them."""
    latest = RESULTS_DIR / "latest"
    latest.mkdir(parents=True, exist_ok=True)
    for path in run_dir.iterdir():
        shutil.copy2(path, latest / path.name)
    return latest


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "gate":
        from bench import gate
        return gate.main(gate.add_arguments(argparse.ArgumentParser(prog="python -m bench gate")).parse_args(argv[1:]))
    if argv and argv[0] == "micro":
        out = new_run_dir()
        return run_micro(out, argv[1:])
    if argv and argv[0] == "report":
        from bench import report
        print(report.build(argv[1]).read_text())
        return 0
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    if argv and argv[0] == "e2e":
        argv = argv[1:]
        p.add_argument("--quick", action="store_true")
        args = add_e2e_arguments(p).parse_args(argv)
        from bench import report
        from bench.machine import machine_info
        out = new_run_dir()
        (out / "machine.json").write_text(json.dumps(machine_info(), indent=1))
        run_e2e(out, args)
        print(report.build(out).read_text())
        return 0
    p.add_argument("--quick", action="store_true", help="short end-to-end runs")
    p.add_argument("--skip-micro", action="store_true")
    p.add_argument("--skip-gate", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    args = add_e2e_arguments(p).parse_args(argv)

    from bench import report
    from bench.machine import machine_info
    started = time.monotonic()
    out = new_run_dir()
    (out / "machine.json").write_text(json.dumps(machine_info(), indent=1))
    status = 0
    phases = {}
    t = time.monotonic()
    if not args.skip_micro and run_micro(out) != 0:
        status = 1
    phases["micro"], t = time.monotonic() - t, time.monotonic()
    if not args.skip_gate and not run_gate(out, quick=args.quick):
        status = 1
    phases["gate"], t = time.monotonic() - t, time.monotonic()
    if not args.skip_e2e:
        run_e2e(out, args)
    phases["e2e"] = time.monotonic() - t
    path = report.build(out)
    complete = not (args.skip_micro or args.skip_gate or args.skip_e2e or os.environ.get("BENCH_INJECT"))
    if complete:  # only a whole, honest run becomes `latest` and the README's figures
        publish(out)
        report.update_readme(out)
    print(path.read_text())
    print(f"results: {out.relative_to(ROOT)}{' (copied to bench/results/latest)' if complete else ''}; "
          f"{time.monotonic() - started:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
          + f"); exit {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
