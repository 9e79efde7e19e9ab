"""What monitoring costs a batch: two engines in one process, one with `orchestrator run`'s monitoring on (metrics
published every second of stream time, execution quality and P&L attribution listeners, alerts, the dashboard's
view; /metrics scraped and the dashboard's JSON polled every second of wall time by a scraper in a process of its
own, as Prometheus and an open browser tab would) and one without, fed the same frames at the same stream clock,
batch for batch, alternately (so both see the same machine; which goes first alternates too). Each timed round is
one batch as the driver runs it: chunks into rx, `Engine.step`, and on each 20 ms of stream time the housekeeping
(`Engine.maintain`: the monitor's fold of staged fills, markouts, and when due its snapshot and publish). The
figure is the ratio of the two distributions; the engine thread's publish cost is reported beside it. The
exporter's and the dashboard's threads render in this process: the GIL they take while a scrape is answered stalls
whichever engine runs then, so that part of the cost is shared by both sides and shows in the tails of both (an
`orchestrator run` pays it alone).

Budget (issue 15): monitoring on vs off, p50 and p99 no more than 5% apart. The listeners copy ring slices
after each batch; the arithmetic is folded once a heartbeat, not every batch; a publish stalls the engine thread
once a second of stream time (its mean is reported). `within_budget` in the results says how this run compared.

No timing is asserted; the figures are written with the machine (its load average before and after).
Run: `python -m bench.monitoring [--batches N] [--scrape-ms MS]`; results to bench/results/latest/monitoring.json.
"""
import argparse
import json
import re
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import machine
from engine import service
from engine.config import load_config
from kernels.dtypes import C_FILLS, C_ORDERS, C_SIGNALS, SIGNAL_TARGET
from wire.frames import encode_frame
from wire.schema import MarketData, Signal

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "latest" / "monitoring.json"
STEP_NS = 100_000          # stream time between batches: 10 k batches a second
HEARTBEAT_NS = 20_000_000  # engine/driver.py HEARTBEAT_NS: the housekeeping's period
SIGNALS = ((0, 0), (1, 2), (2, 4), (3, 3))  # (signal id, instrument) the demo's strategies subscribe to
MID = {0: 6000.0, 1: 21000.0, 2: 230.0, 3: 420.0, 4: 900.0, 5: 250.0}
FRAMES_PER_BATCH = len(MID) + len(SIGNALS)
ORDERS = (("on", "off"), ("off", "on"))


def configs(directory, monitoring):
    """The demo's config, on port 0, no journal (the disk is not under test); with or without monitoring."""
    directory = Path(directory)
    shutil.copytree(ROOT / "config" / "demo", directory)
    engine = (directory / "engine.toml").read_text().replace("port = 47100", "port = 0") \
        .replace("port = 47101", "port = 0")
    engine = re.sub(r"(?ms)^(\[api\][^\[]*?)^enabled = true", r"\1enabled = false", engine)  # not under test
    engine += "\n[journal]\nenabled = false\n"
    if monitoring:
        engine += ("\n[metrics]\nport = 0\ninterval_ms = 1000\n\n[dashboard]\nport = 0\nrefresh_ms = 1000\n"
                   "\n[quality]\nmarkouts_ms = [1000, 10000]\n")
    (directory / "engine.toml").write_text(engine)
    for path in (directory / "strategies").glob("*.toml"):  # all trading, breakers and rate limits out of the way
        text = path.read_text().replace("enabled = false", "enabled = true")
        text = re.sub(r"(?m)^max_consecutive_rejects = .*$", "max_consecutive_rejects = 1000000", text)
        text = re.sub(r"(?m)^max_reject_ratio = .*$", "max_reject_ratio = 1.0", text)
        text = re.sub(r"(?m)^ratio_min_orders = .*$", "ratio_min_orders = 1000000", text)
        text = re.sub(r"(?m)^rate_per_second = .*$", "rate_per_second = 100000.0", text)
        text = re.sub(r"(?m)^burst = .*$", "burst = 100000.0", text)
        text = re.sub(r"(?m)^(daily_loss_limit|max_drawdown|loss_limit) = .*$", r"\1 = 1e12", text)
        path.write_text(text)
    return load_config(directory)


def batches(n, t0):
    """n batches of frames, made as they are taken (outside the timed rounds; a long run would not fit in memory):
    market data for every instrument, then one target signal per strategy signal."""
    rng = np.random.default_rng(7)
    seq = 0
    for k in range(n):
        ts = t0 + k * STEP_NS
        frames = []
        for i, mid in MID.items():
            px = round(mid * (1 + 0.001 * float(np.sin(k / 500 + i))), 2)
            frames.append(encode_frame(MarketData(i, px - 0.25, px + 0.25, px, ts)))
        for signal_id, instrument in SIGNALS:
            seq += 1
            frames.append(encode_frame(Signal(0, seq, signal_id, instrument, SIGNAL_TARGET,
                                              float(rng.uniform(-1, 1)), MID[instrument], ts, 0)))
        yield ts, [len(f) for f in frames], b"".join(frames)


def scrape(urls, interval_s):
    """The scraper process: GET every url every interval_s until stdin closes; print the counts as JSON."""
    import select
    import urllib.request
    counts = {url: {"ok": 0, "failed": 0, "bytes": 0} for url in urls}
    while True:
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    counts[url]["bytes"] += len(response.read())
                    counts[url]["ok"] += 1
            except OSError:
                counts[url]["failed"] += 1
        if select.select([sys.stdin], [], [], interval_s)[0] and not sys.stdin.read(1):
            break
    print(json.dumps(counts))


def start_scraper(addresses, interval_s):
    urls = [f"http://{addresses['metrics']}/metrics", f"http://{addresses['dashboard']}/api/view"]
    return subprocess.Popen([sys.executable, "-m", "bench.monitoring", "--scrape", *urls,
                             "--scrape-ms", str(int(interval_s * 1000))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def stop_scraper(scraper):
    out, _ = scraper.communicate(timeout=30)  # closes its stdin: it finishes its round and reports
    counts = json.loads(out)
    return {url.rsplit("/", 1)[-1] or url: value for url, value in counts.items()}


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def run(n_batches, scrape_s=1.0):
    t0 = time.time_ns()
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        clocks = {name: Clock(t0) for name in ("on", "off")}
        services = {
            "on": service.build(configs(Path(tmp) / "on", True), clock=clocks["on"]),
            "off": service.build(configs(Path(tmp) / "off", False), clock=clocks["off"], monitoring=False),
        }
        scraper = None
        try:
            frames = batches(n_batches, t0 + STEP_NS)
            scraper = start_scraper(services["on"].monitoring_addresses(), scrape_s)
            time.sleep(0.5)  # its interpreter up and its first round done before the timed batches
            timings = {name: np.zeros(n_batches, np.int64) for name in services}
            maintains = {name: [] for name in services}
            dues = np.zeros(n_batches, bool)
            next_maintain = t0 + HEARTBEAT_NS
            wall = time.perf_counter_ns()
            for k, (ts, sizes, data) in enumerate(frames):
                due = dues[k] = ts >= next_maintain
                for name in ORDERS[k & 1]:  # which goes first alternates: the first finds the new frames cold
                    svc = services[name]
                    engine = svc.engine
                    clocks[name].t = ts
                    start = time.perf_counter_ns()
                    engine.feed(ts, 1, sizes, data)
                    engine.step(ts)
                    if due:
                        engine.maintain(ts)
                    timings[name][k] = time.perf_counter_ns() - start
                    if due:
                        maintains[name].append(timings[name][k])
                if due:
                    next_maintain += HEARTBEAT_NS
            wall_s = (time.perf_counter_ns() - wall) / 1e9
            scrapes, scraper = stop_scraper(scraper), None
            result = {"batches": n_batches, "wall_s": round(wall_s, 2), "scrape_interval_s": scrape_s,
                      "scrapes": scrapes, "frames_per_batch": FRAMES_PER_BATCH, "stream_step_us": STEP_NS / 1000,
                      "heartbeat_ms": HEARTBEAT_NS / 1e6}
            for name, svc in services.items():
                t = timings[name] / 1000
                counters = svc.engine.state.counters
                result[name] = {
                    "p50_us": round(float(np.percentile(t, 50)), 2), "p99_us": round(float(np.percentile(t, 99)), 2),
                    "p99.9_us": round(float(np.percentile(t, 99.9)), 2), "max_us": round(float(t.max()), 1),
                    "mean_us": round(float(t.mean()), 2),
                    "heartbeat_batch_p50_us": round(float(np.percentile(np.array(maintains[name]) / 1000, 50)), 2),
                    # the batches with no housekeeping after them: what the listeners cost the batch itself
                    "between_heartbeats_p50_us": round(float(np.percentile(t[~dues], 50)), 2),
                    "between_heartbeats_p99_us": round(float(np.percentile(t[~dues], 99)), 2),
                    "signals": int(counters[C_SIGNALS]), "orders": int(counters[C_ORDERS]),
                    "fills": int(counters[C_FILLS])}
            monitor = services["on"].monitor
            result["on"]["publishes"] = monitor.publishes
            result["on"]["publish_mean_us"] = round(monitor.publish_ns / max(monitor.publishes, 1) / 1000, 1)
            result["ratio"] = {key: round(result["on"][key] / result["off"][key], 3)
                               for key in ("p50_us", "p99_us", "p99.9_us", "mean_us")}
            result["budget"] = "p50 and p99 on/off no more than 1.05 apart (issue 15)"
            result["within_budget"] = all(result["ratio"][key] <= 1.05 for key in ("p50_us", "p99_us"))
        finally:
            if scraper is not None:
                scraper.kill()
                scraper.wait()
            for svc in services.values():
                svc.close()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.monitoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=600_000,
                        help="batches per engine (default 600000: ~20 s here, ~20 scrapes)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--scrape-ms", type=int, default=1000, help="the scraper's period (default 1000)")
    parser.add_argument("--scrape", nargs="+", metavar="URL", help=argparse.SUPPRESS)  # the scraper process
    args = parser.parse_args(argv)
    if args.scrape:
        return scrape(args.scrape, args.scrape_ms / 1000)
    load_before = os.getloadavg()
    result = run(args.batches, args.scrape_ms / 1000)
    result["load_average"] = {"before": [round(x, 2) for x in load_before],
                              "after": [round(x, 2) for x in os.getloadavg()]}
    result["machine"] = machine.machine_info()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
