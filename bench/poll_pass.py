"""What one pass of the spin driver costs in reading, before any batch: an empty pass, and the pass that finds one
signal datagram. Issue 14 item 2 (one epoll over every descriptor, poll only the ready transports).

The engine is bench/test_service_loopback's (engine.service.build of bench/config: a UDP and a TCP listener and a
TCP OMS link to this process), so the transports are the production ones. Two passes are timed:
- `each`: Engine.poll(), every transport asked in turn (one readiness syscall or more apiece);
- `epoll` (where engine/wait.py exists): what run_spin does, one epoll_wait(0) over every descriptor, then
  poll_ready of the ready transports (and a poll of those without a descriptor).
The one-datagram figure: a datagram is sent and seen readable (untimed), then the pass that reads it is timed and
rx is emptied again without a batch. One process, one thread: the scheduler is out of the figures, the machine's
load is not; the medians of ROUNDS passes (and the best of REPEATS for the empty pass) are printed with the load.

Budget: none asserted (figures). Run: `PYTHONPATH=. python -m bench.poll_pass [--json FILE]`; the before figure
comes from running the same file against the tree before the change.
"""
import argparse
import json
import os
import select
import statistics
import time
import timeit

from bench.test_service_loopback import Loopback

ROUNDS = 20_000
REPEATS = 7


def _passes(engine):
    passes = {"each": engine.poll}
    try:
        from engine.wait import Readiness
    except ImportError:
        return passes, None
    readiness = Readiness(engine.sources)
    ready, always, poll_one = readiness.ready, readiness.always, engine.poll_one

    def epoll_pass():
        waiting = 0
        for transport, source in ready():
            waiting = poll_one(transport, source, True)
        for transport, source in always:
            waiting = poll_one(transport, source)
        return waiting
    passes["epoll"] = epoll_pass
    return passes, readiness


def measure():
    loopback = Loopback("udp")
    engine = loopback.engine
    passes, readiness = _passes(engine)
    udp = next(t for t in engine.inbound if type(t).__name__ == "UdpReceiver")
    seen = select.poll()
    seen.register(udp.fileno(), select.POLLIN)
    clock = time.perf_counter_ns
    loopback.setup()  # a signal frame of the bench workload (never decided here: no batch runs)
    frame = loopback.frame
    results = {}
    try:
        for name, one_pass in passes.items():
            for _ in range(1000):  # warm
                one_pass()
            runs = timeit.repeat(one_pass, number=ROUNDS // 4, repeat=REPEATS)
            empty = [r / (ROUNDS // 4) * 1e9 for r in runs]
            found = []
            for _ in range(ROUNDS // 4):
                loopback.sender.send(frame)
                while not seen.poll(0):
                    pass
                t0 = clock()
                n = one_pass()
                t1 = clock()
                assert n == 1, n
                engine._chunks = engine._offset = 0  # rx emptied without a batch: only the read is measured
                found.append(t1 - t0)
            results[name] = {"empty_pass_ns_median": statistics.median(empty), "empty_pass_ns_best": min(empty),
                             "one_datagram_pass_ns_median": statistics.median(found),
                             "one_datagram_pass_ns_p90": sorted(found)[int(len(found) * 0.9)]}
    finally:
        if readiness is not None:
            readiness.close()
        loopback.close()
    results["transports"] = [type(t).__name__ for t, _ in getattr(engine, "sources", None) or engine._sources]
    results["load_average"] = os.getloadavg()
    results["cpus"] = os.cpu_count()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    results = measure()
    results["label"] = args.label
    for name in ("each", "epoll"):
        if name in results:
            r = results[name]
            print(f"{args.label} {name:5}: empty pass {r['empty_pass_ns_median'] / 1e3:.2f} us (best "
                  f"{r['empty_pass_ns_best'] / 1e3:.2f}), the pass that reads one datagram "
                  f"{r['one_datagram_pass_ns_median'] / 1e3:.2f} us (p90 {r['one_datagram_pass_ns_p90'] / 1e3:.2f})")
    print(f"transports {results['transports']}; load average {results['load_average']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
