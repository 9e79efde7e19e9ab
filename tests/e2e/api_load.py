"""Requests at a fixed rate against a running engine's REST API, and how long each took: for the load test in
tests/e2e/test_api.py and the benchmark note bench/results/latest/api.json.

    python -m tests.e2e.api_load [--out bench/results/latest/api.json]

runs the real `orchestrator run` (the demo on loopback, the feed trading) once per driver and load, and writes
the API's latency (a read route and a command, p50/p99 over 2,000 requests each) and what the load did to the
engine (signal-to-order latency with no reads, 100 reads/s and 1,000 reads/s, the time reads held its thread, its
CPU).

The schedule is open loop: request k is due at start + k / rate, whatever became of the ones before it, and its
latency is counted from its due time (so a stall is not hidden by the requests it held back: coordinated
omission), beside the time from its own send. The client is Python (http.client, keep-alive connections, one
thread each), on the same 2 cores as the engine and the feed: its own time is in the figures.
"""
import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit


def paced(url, path, *, rate, count, method="GET", body=None, headers=None, connections=4, keys=None):
    """Send `count` requests at `rate` per second over `connections` keep-alive connections; `keys(k)` gives
    request k's Idempotency-Key. Return the statuses and the latency percentiles (us)."""
    parts = urlsplit(url)
    start = time.perf_counter() + 0.05
    due_lat, service_lat, statuses = [], [], Counter()
    lock = threading.Lock()
    failures = []

    def worker(first):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine_due, mine_service, mine_status = [], [], Counter()
        try:
            for k in range(first, count, connections):
                due = start + k / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                extra = {"Idempotency-Key": keys(k)} if keys else {}
                sent = time.perf_counter()
                conn.request(method, path, body=body, headers={**(headers or {}), **extra})
                response = conn.getresponse()
                response.read()
                done = time.perf_counter()
                mine_due.append(done - max(due, start))
                mine_service.append(done - sent)
                mine_status[response.status] += 1
        except Exception as e:  # the test sees it; the other workers finish
            failures.append(e)
        finally:
            conn.close()
            with lock:
                due_lat.extend(mine_due)
                service_lat.extend(mine_service)
                statuses.update(mine_status)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise failures[0]
    return {"method": method, "path": path, "count": count, "rate": rate, "connections": connections,
            "achieved_rate": round(count / elapsed, 1), "statuses": dict(statuses),
            "latency_us": _percentiles(due_lat), "service_us": _percentiles(service_lat)}


def _percentiles(seconds):
    values = sorted(seconds)
    if not values:
        return {}

    def at(pct):
        return round(values[min(len(values) - 1, int(len(values) * pct / 100))] * 1e6, 1)
    return {"p50": at(50), "p90": at(90), "p99": at(99), "p99.9": at(99.9), "max": round(values[-1] * 1e6, 1),
            "count": len(values)}


def cpu_seconds(pid):
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------- the note
FEED_RATE = 2000     # signals/s while the API is loaded
READ_RATE = 1000     # reads/s in the loaded run
POLL_RATE = 100      # reads/s of a dashboard polling (issue 11's benchmark: the API polled 100/s vs off)
LOADED_S = 4.0       # seconds of each run's feed
REQUESTS = 2000      # per latency figure


def _engine_run(procs, config, name, driver, load):
    """One engine, the feed trading for LOADED_S; `load(url)` runs meanwhile (or not). Its figures."""
    engine = procs.engine(config, "--driver", driver, name=name)
    url = engine.ready["api"]
    feed = procs.start_feed(engine, "udp", "--rate", FEED_RATE, "--duration", LOADED_S, "--bad-ratio", 0,
                            "--bad-every", 0, "--json", name=f"feed-{name}")
    cpu0, t0 = cpu_seconds(engine.popen.pid), time.perf_counter()
    loaded = load(url) if load else None
    feed.wait(60)
    cpu = (cpu_seconds(engine.popen.pid) - cpu0) / (time.perf_counter() - t0)
    sent = json.loads(feed.stdout)["signals"]
    status = engine.wait_status(lambda r: r["counters"]["signals"] >= sent, "every signal decided")
    report = engine.report()
    return {"driver": driver, "feed_signals": sent, "decided_signals": status["counters"]["signals"],
            "signal_to_order_us": report["signal_to_order_us"], "engine_cpu_cores": round(cpu, 3),
            "api": report.get("api"), "load": loaded}


def note(workdir):
    """Every run on a fresh copy of the demo (its own journal), one after the other."""
    from tests.e2e.e2e_kit import Processes, derive_config
    workdir = Path(workdir)
    procs = Processes(workdir)
    runs = []

    def config(name):
        return derive_config(workdir / name)
    try:
        for driver in ("event", "spin"):
            runs.append(_engine_run(procs, config(f"{driver}-idle"), f"{driver}-idle", driver, None))
            for rate, label in ((POLL_RATE, "polled"), (READ_RATE, "reads")):
                runs.append(_engine_run(procs, config(f"{driver}-{label}"), f"{driver}-{label}", driver,
                                        lambda url, rate=rate: paced(url, "/strategies", rate=rate,
                                                                     count=int(rate * (LOADED_S - 0.5)))))
            engine = procs.engine(config(f"{driver}-latency"), "--driver", driver, name=f"{driver}-latency")
            url = engine.ready["api"]
            read = paced(url, "/strategies/momentum", rate=500, count=REQUESTS)
            command = paced(url, "/strategies/pairs/limits", method="POST", body=b'{"max_order_qty": 10}',
                            rate=250, count=REQUESTS, keys=lambda k: f"bench-{driver}-{k}")
            report = engine.report()
            runs.append({"driver": driver, "read": read, "command": command, "api": report.get("api"),
                         "journal_last_seq": report["journal"]["last_seq"]})
    finally:
        procs.close()
    return {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "load_average_1m": os.getloadavg()[0],
                        "taken": time.strftime("%Y-%m-%d %H:%M:%S")},
            "method": __doc__.split("\n\n")[2].replace("\n", " "), "runs": runs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/latest/api.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        result = note(workdir)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
