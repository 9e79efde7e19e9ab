"""What the REST API costs the hot path: the engine's service loop with the API polled 100 times a second beside
it, against the same loop with no API, in one run (issue 11's benchmark, the API's half; the Redis mirror is its
own issue's).

    python -m bench.api_overhead [--out bench/results/latest/api_overhead.json] [--blocks 10] [--rounds 3000]

In one process, two engines built alike from bench/config (bench/test_service_loopback.py's Loopback: a signal
frame sent on UDP -> Engine.poll + Engine.step, what the spin driver runs -> the order frame read at the OMS end
of its TCP link, paced at one signal every 100 us, each order answered with a fill untimed). One has the API
(engine/api: its own thread and loop beside the spin driver, reads served between steps with Engine.read);
the other has none. Blocks of rounds alternate between them (on, off, off, on, ...: drift cancels), and during
each block of the API engine a poller in another process (so its own work is not on this process's GIL, as a
dashboard's is not) sends GET /strategies at 100/s, open loop. The loop serves the API's reads wherever the spin
driver would: while it waits for the next signal and while it polls for one. Latency per round from the
send to the order frame read, corrected for coordinated omission at the pacing interval (HdrHistogram
record_corrected_value, as bench/test_service_loopback.py), p50/p99/p99.9 per side. No figure is asserted: the
machine is shared.
"""
import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from bench import ROOT, hist
from bench.frames import fill_signals
from bench.test_service_loopback import INTERVAL_NS, POOL, Loopback
from bench.workloads import SOURCE
from engine.api import ApiServer
from engine.config.schema import Api, Redis
from engine.driver import HEARTBEAT_NS
from engine.mirror import MirrorFeed

POLL_RATE = 100     # reads/s while the API engine runs a block
POLL_PATH = "/strategies"


class ApiLoopback(Loopback):
    """The Loopback with (`api`) or without the REST API, and with the Redis mirror writing to `redis_url` (or
    none); reads served between steps as run_spin serves them, the mirror fed every HEARTBEAT_NS as the spin
    driver's housekeeping feeds it."""

    def __init__(self, api, redis_url=None):
        super().__init__("udp")
        self.api = api
        if api:
            self.svc.api = ApiServer(msgspec.convert({"enabled": True, "host": "127.0.0.1", "port": 0}, Api))
            self.svc.api.start_thread(self.svc)
        self.mirror = None
        if redis_url:
            settings = msgspec.convert({"enabled": True, "url": redis_url}, Redis)
            self.mirror = self.engine.mirror = MirrorFeed(self.engine.state, settings, control=self.engine.control)
            self.engine.listeners.append(self.mirror)  # its on_batch runs inside step: timed
            self.mirror.open()
        self.fed = 0

    def setup(self):
        """Untimed (Loopback.setup, with the reads served while it waits): the last order filled, the next
        signal ready, the wait for its due time."""
        if self.pending:
            self.answer()
            self.pending = False
        if self.k % POOL == 0:
            fill_signals(self.pool, self.instruments, self.k, self.k + 1, SOURCE, 0, ttl_ns=0)
            self.frames = [f.tobytes() for f in self.pool]
        self.frame = self.frames[self.k % POOL]
        now = time.perf_counter_ns()
        if self.next == 0 or now - self.next > 1_000_000_000:
            self.next = now
        engine = self.engine
        if self.mirror is not None and now - self.fed >= HEARTBEAT_NS:  # housekeeping, between steps (untimed)
            self.mirror.housekeeping(now)
            self.fed = now
        while time.perf_counter_ns() < self.next:
            if engine.reads:
                engine.serve_reads()
        self.due = self.next
        self.next += INTERVAL_NS

    def call(self):
        self.sender.send(self.frame)
        engine = self.engine
        while not engine.poll():
            if engine.reads:
                engine.serve_reads()
        engine.step()
        engine.serve_reads()
        view, got = memoryview(self.buf), 0
        while got < len(self.buf):
            got += self.oms.recv_into(view[got:])
        self.k += 1
        self.pending = True

    def close(self):
        if self.api:
            self.svc.api.stop_thread()
        super().close()  # the service closes the mirror


def block(loopback, rounds, samples):
    """`rounds` timed rounds (send -> order frame read), each after its untimed setup."""
    clock = time.perf_counter_ns
    for _ in range(rounds):
        loopback.setup()
        start = clock()
        loopback.call()
        samples.append(clock() - start)


def poller_main(url):
    """The poller process: for each line N on stdin, N reads at POLL_RATE; one JSON line of figures back."""
    from tests.e2e.api_load import paced
    for line in sys.stdin:
        count = int(line)
        print(json.dumps(paced(url, POLL_PATH, rate=POLL_RATE, count=count, connections=1)), flush=True)


def measure(blocks, rounds, warmup, redis_url=None):
    """`redis_url`: the API engine also mirrors to that Redis (issue 11's "API and mirror on vs both off")."""
    on, off = ApiLoopback(True, redis_url), ApiLoopback(False)
    poller = subprocess.Popen([sys.executable, "-m", "bench.api_overhead", "--poller", on.svc.api.url],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    samples = {"on": [], "off": []}
    reads = []
    try:
        for loopback in (on, off):
            block(loopback, warmup, [])
        gc.collect()
        gc.disable()  # as the spin driver does
        order = []
        for b in range(blocks):
            order += [on, off] if b % 2 == 0 else [off, on]
        for loopback in order:
            if loopback.api:
                poller.stdin.write(f"{max(1, rounds * INTERVAL_NS * POLL_RATE // 1_000_000_000)}\n")
                poller.stdin.flush()
                block(loopback, rounds, samples["on"])
                while True:  # the poller's last reads are served (untimed) until it says it is done
                    ready = _line_ready(poller.stdout)
                    if ready:
                        reads.append(json.loads(poller.stdout.readline()))
                        break
                    loopback.engine.serve_reads()
            else:
                block(loopback, rounds, samples["off"])
            gc.collect()
        stats = on.svc.api.stats.as_dict()
        if on.mirror is not None:
            stats = {**stats, "mirror": on.mirror.report()}
    finally:
        gc.enable()
        poller.stdin.close()
        poller.wait(10)
        poller.stdout.close()
        on.close()
        off.close()
    return samples, reads, stats


def _line_ready(stream):
    import select
    return bool(select.select([stream], [], [], 0.0001)[0])


def summarize(samples, reads, stats):
    # corrected at the pacing interval, as bench/test_service_loopback.py is (a stalled round adds the samples
    # the rounds it held back would have had)
    sides = {name: hist.summary(hist.of(values, INTERVAL_NS)) for name, values in samples.items()}
    us = {name: {k: round(v / 1000, 2) for k, v in s.items() if k != "count"} | {"count": s["count"]}
          for name, s in sides.items()}
    statuses = {}
    for r in reads:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    read_latency = sorted(x for r in reads for x in [r["latency_us"].get("p50")] if x is not None)
    raw = {name: hist.summary(hist.of(values)) for name, values in samples.items()}
    raw_us = {name: {k: round(v / 1000, 2) for k, v in s.items() if k in ("p50", "p90", "p99", "p99.9", "max")}
              for name, s in raw.items()}
    return {"signal_to_order_us": us,
            "uncorrected_us": raw_us,  # each round as timed: what a stall did to the round it hit, no more
            "p50_change_pct": round(100 * (sides["on"]["p50"] / sides["off"]["p50"] - 1), 1),
            "p99_change_pct": round(100 * (sides["on"]["p99"] / sides["off"]["p99"] - 1), 1),
            "reads": {"sent": sum(r["count"] for r in reads), "statuses": statuses,
                      "p50_of_block_p50_us": read_latency[len(read_latency) // 2] if read_latency else None},
            "api": stats}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/latest/api_overhead.json")
    parser.add_argument("--blocks", type=int, default=10, help="blocks per side (default 10)")
    parser.add_argument("--rounds", type=int, default=3000, help="rounds per block (default 3000: 0.3 s)")
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--no-redis", action="store_true",
                        help="the API alone on the measured side (default: the API and the Redis mirror, writing to a "
                             "redis-server this run starts)")
    parser.add_argument("--poller", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.poller:
        poller_main(args.poller)
        return 0
    if args.no_redis:
        samples, reads, stats = measure(args.blocks, args.rounds, args.warmup)
    else:
        import tempfile

        from tests.infra.servers import RedisServer
        with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
            server = RedisServer(tmp).start()
            try:
                samples, reads, stats = measure(args.blocks, args.rounds, args.warmup, server.url)
            finally:
                server.stop()
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(), "load_average_1m": os.getloadavg()[0],
                          "taken": time.strftime("%Y-%m-%d %H:%M:%S")},
              "method": " ".join(__doc__.split("\n\n")[2].split()),
              "redis_mirror": not args.no_redis, "poll_rate": POLL_RATE, "path": POLL_PATH, "blocks": args.blocks,
              "rounds_per_block": args.rounds,
              **summarize(samples, reads, stats)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
