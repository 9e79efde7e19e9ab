"""Aeron end to end: signal -> order at the simulated OMS over aeron:ipc or UDP on loopback, and the streaming
throughput of one engine core over aeron:ipc. A script that prints figures; it asserts nothing.

    .venv/bin/python bench/aeron_loop.py latency --medium ipc --rate 5000 --seconds 5
    .venv/bin/python bench/aeron_loop.py latency --medium udp
    .venv/bin/python bench/aeron_loop.py throughput --seconds 3
    .venv/bin/python bench/aeron_loop.py transport   (the adapter's own costs, one thread, best of 7 repeats)
    .venv/bin/python bench/aeron_loop.py oneway --medium udp   (sender process -> busy-polling receiver, no engine:
                                                                what the driver's settings cost)
    (--threading, --idle, --idle-args: the embedded driver's settings, as in the [aeron] table)

Three processes, as deployed: the engine (spin driver on core 0, its embedded media driver), the simulated OMS
(own process, Aeron idle strategy --oms-idle between empty rounds) and the sender (own process). Latency: one
signal per message, open loop at --rate, ts_ns stamped just before the offer; the OMS takes its clock when a poll
returns the order: latency = that - the order's signal_ts_ns (one host, one clock). It covers the sender's
offer, the engine's poll, decode, batch, encode and offer, and the OMS's poll: the whole signal -> order path.
Throughput: the sender offers messages of --frames signal frames as fast as the publication takes them; the
engine (in-process simulated OMS) counts the signals it decoded per second while saturated.
Budgets (issue 4): ipc p50 <= 3 us, p99 <= 10 us; udp p50 <= 15 us; >= 1.5 M signals/s over ipc.
"""
import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRICE = 6000.0
_FILES = {
    "instruments.toml": """[[instruments]]
id = 0
symbol = "ESZ5"
tick_size = 0.25
price_band_pct = 5.0
reference_price = 6000.0
""",
    "accounts.toml": """[[accounts]]
id = 0
name = "futures"
max_gross_notional = 1e15
max_net_notional = 1e15
daily_loss_limit = 1e14
""",
    "strategies/s0.toml": """name = "s0"
version = "1.0.0"
account = "futures"
signals = [0]
instruments = ["ESZ5"]
enabled = true
order_type = "ioc"
[sizing]
max_position = 1_000_000_000
[limits]
max_order_qty = 10
max_order_notional = 1e12
max_open_orders = 65_536
rate_per_second = {rate}
burst = {burst}
daily_loss_limit = 1e13
[breakers]
max_consecutive_rejects = 1_000_000_000
max_reject_ratio = 1.0
ratio_window_ms = 1_000
ratio_min_orders = 1_000_000_000
max_drawdown = 1e13
loss_limit = 1e13
""",
}


def write_config(root, args, oms_kind):
    port = 40600
    channels = ""
    if args.medium == "udp":
        channels = "\n".join(
            f'{name} = {{ channel = "aeron:udp?endpoint=127.0.0.1:{port + i}", stream_id = {1001 + i} }}'
            for i, name in enumerate(("signals", "market_data", "orders", "reports")))
    (root / "strategies").mkdir(parents=True)
    # throughput: a rate limit, so most signals are throttled by risk, not turned into orders for a Python OMS
    rate, burst = ("1e9", "1e9") if oms_kind == "aeron" else ("1000.0", "100.0")
    for name, text in _FILES.items():
        (root / name).write_text(text.replace("{rate}", rate).replace("{burst}", burst))
    (root / "engine.toml").write_text(f"""name = "aeron-bench"
driver = "spin"
rx_bytes = 1_048_576
rx_chunks = 4096
[listen]
aeron = true
[oms]
kind = "{oms_kind}"
[rings]
signals = 65536
orders = 8192
rejects = 65536
reports = 16384
[aeron]
directory = "{root / 'aeron'}"
threading = "{args.threading}"
idle_strategy = "{args.idle}"
idle_strategy_args = "{args.idle_args}"
{channels}
""")
    return root


def _node(config):
    import msgspec

    from adapters.aeron import AeronDriverConfig, AeronNode
    aeron = config.engine.aeron
    return AeronNode(msgspec.convert({"driver": "external", "directory": aeron.directory}, AeronDriverConfig))


def _wait_open(transport, seconds=10.0):
    from adapters.aeron import AeronUnavailable
    deadline = time.monotonic() + seconds
    while True:
        try:
            return transport.open()
        except AeronUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# ---------------------------------------------------------------------------------------------- child roles
def role_oms(config_dir, out, idle):
    import msgspec
    import pyaeron

    from engine.config import load_config
    from sim.servers import AeronSimOms
    from sim.venue import SimOmsConfig
    config = load_config(config_dir)
    aeron = config.engine.aeron
    immediate = msgspec.convert({"ack_latency_us": 0, "fill_latency_us": 0}, SimOmsConfig)  # a sink: fills at once
    server = AeronSimOms(_node(config), aeron.orders, aeron.reports, None, immediate, latency_capacity=20_000_000)
    _wait_open(server)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    idle = {"yield": pyaeron.IdleStrategy.yielding, "spin": pyaeron.IdleStrategy.busy_spin,  # backoff as the driver's
            "backoff": lambda: pyaeron.IdleStrategy.backoff(max_spins=10, max_yields=0, min_park_ns=20_000,
                                                           max_park_ns=50_000)}[idle]()
    try:
        server.run(stop, idle)
    finally:
        server.close()
    np.save(out, server.signal_to_oms_ns())
    print(server.summary(), flush=True)


def _signal_records(n):
    from kernels.dtypes import MSG_SIGNAL, SIGNAL_ORDER
    from wire.records import records
    rec = records(MSG_SIGNAL, n)
    # ORDER signals of +1 unit: every signal is an order (a buy: never against a working sell of its own)
    rec["source"], rec["signal_id"], rec["instrument"], rec["kind"] = 0, 0, 0, SIGNAL_ORDER
    rec["value"], rec["price"], rec["ttl_ns"] = 1.0, PRICE, 0
    return rec


def _sender(config):
    from adapters.aeron import AeronSender, AeronSenderConfig
    sender = AeronSender(AeronSenderConfig(stream=config.engine.aeron.signals), _node(config))
    _wait_open(sender)
    deadline = time.monotonic() + 10
    while not sender.connect():
        assert time.monotonic() < deadline, "the engine does not subscribe"
        time.sleep(0.001)
    return sender


def role_send(config_dir, rate, seconds):
    """Open loop: one signal per message at `rate`."""
    from engine.config import load_config
    sender = _sender(load_config(config_dir))
    rec = _signal_records(1)
    frame = memoryview(rec.view(np.uint8))
    count, period = int(rate * seconds), 1e9 / rate
    start = time.perf_counter_ns()
    for i in range(count):
        wait = start + i * period - time.perf_counter_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        rec["seq"] = i + 1
        rec["ts_ns"] = time.time_ns()
        while not sender.send(frame):
            pass
    elapsed = (time.perf_counter_ns() - start) / 1e9
    print(f"sender: {count} signals in {elapsed:.2f} s ({count / elapsed:,.0f}/s), "
          f"back-pressured {sender.stats.backpressure}", flush=True)
    sender.close()


def role_stamp(directory, channel, rate, count):
    """One 8-byte wall-clock stamp per message at `rate`: for `oneway`."""
    import msgspec

    from adapters.aeron import AeronDriverConfig, AeronNode, AeronSender, AeronSenderConfig
    node = AeronNode(msgspec.convert({"driver": "external", "directory": directory}, AeronDriverConfig))
    sender = AeronSender(msgspec.convert({"stream": {"channel": channel, "stream_id": 1}}, AeronSenderConfig), node)
    _wait_open(sender)
    while not sender.connect():
        time.sleep(0.001)
    stamp = np.zeros(1, np.int64)
    data = memoryview(stamp.view(np.uint8))
    for _ in range(int(count)):
        time.sleep(1 / float(rate))
        stamp[0] = time.time_ns()
        while not sender.send(data):
            pass
    sender.close()


def oneway(args):
    """Sender process -> a receiver busy-polling in this process, whose embedded driver has the settings under
    test: arrival - stamp per message. Over UDP the driver's sender and receiver are the data path."""
    import msgspec

    from adapters.aeron import AeronDriverConfig, AeronNode, AeronReceiver, AeronReceiverConfig
    root = Path(tempfile.mkdtemp(prefix="aeron-bench-"))
    node = AeronNode(msgspec.convert({"directory": str(root / "aeron"), "threading": args.threading,
                                      "idle_strategy": args.idle, "idle_strategy_args": args.idle_args},
                                     AeronDriverConfig))
    channel = "aeron:ipc" if args.medium == "ipc" else "aeron:udp?endpoint=127.0.0.1:40660"
    receiver = AeronReceiver(msgspec.convert({"streams": [{"channel": channel, "stream_id": 1}]},
                                             AeronReceiverConfig), node)
    receiver.open()
    count = int(args.rate * args.seconds)
    cpu = time.process_time()
    time.sleep(1.0)  # the driver alone, idle: what its idle strategy costs
    idle_cpu = time.process_time() - cpu
    stamper = _child("_stamp", args.pin, node.directory, channel, args.rate, count)
    rx, sizes = np.zeros(1 << 16, np.uint8), np.zeros(64, np.int32)
    lat = np.zeros(count, np.int64)
    got = 0
    try:
        while got < count and (stamper.poll() is None or receiver.poll(rx, 0, sizes, 0, 64)[0]):
            n, _ = receiver.poll(rx, 0, sizes, 0, 64)
            if n:
                now = time.time_ns()
                lat[got:got + n] = now - rx[:8 * n].view(np.int64)
                got += n
    finally:
        stamper.wait(30)
        receiver.close()
    us = lat[min(got // 10, 500):got] / 1000
    pct = np.percentile(us, [50, 90, 99])
    print(f"aeron {args.medium} one way, {len(us):,} messages at {args.rate:,.0f}/s: p50 {pct[0]:.1f} us  "
          f"p90 {pct[1]:.1f} us  p99 {pct[2]:.1f} us; idle driver + client {idle_cpu * 100:.0f}% of a core; "
          f"driver {args.threading} {args.idle} {args.idle_args!r}; load average {os.getloadavg()[0]:.2f}")


def role_blast(config_dir, frames, seconds):
    """As fast as the publication takes them: messages of `frames` signal frames, seq counting up."""
    from engine.config import load_config
    sender = _sender(load_config(config_dir))
    rec = _signal_records(frames)
    data = memoryview(rec.view(np.uint8))
    seq = np.arange(1, frames + 1, dtype=np.uint64)
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        rec["seq"] = seq + sent
        rec["ts_ns"] = time.time_ns()
        while not sender.send(data):
            if time.monotonic() > end:
                break
        else:
            sent += frames
    print(f"blaster: {sent:,} signals offered in {seconds} s, back-pressured {sender.stats.backpressure:,}",
          flush=True)
    sender.close()


# ---------------------------------------------------------------------------------------------- the engine
def _child(role, pin, *args):
    return subprocess.Popen([sys.executable, __file__, role, "pin" if pin else "-", *map(str, args)], cwd=ROOT)


def _engine(config_dir):
    from engine import service
    from engine.config import load_config
    return service.build(load_config(config_dir))


def _spin(svc, until, pin=False):
    """Run the spin driver (on core 0 with `pin`) until `until()` says stop."""
    from engine.driver import run_spin
    stop = threading.Event()

    def watch():
        while not until():
            time.sleep(0.05)
        stop.set()
    threading.Thread(target=watch, daemon=True).start()
    run_spin(svc.engine, stop, cpu=0 if pin else None)


def latency(args):
    root = write_config(Path(tempfile.mkdtemp(prefix="aeron-bench-")), args, "aeron")
    out = root / "latency.npy"
    oms = _child("_oms", args.pin, root, out, args.oms_idle)
    svc = _engine(root)  # starts the embedded driver; waits up to 2 s for the OMS to subscribe
    assert svc.engine.oms_up, "the simulated OMS did not subscribe"
    reasons = _RejectReasons()
    svc.engine.listeners.append(reasons)
    sender = _child("_send", args.pin, root, args.rate, args.seconds)
    try:
        _spin(svc, lambda: sender.poll() is not None, args.pin)
        deadline = time.monotonic() + 0.5
        _spin(svc, lambda: time.monotonic() > deadline, args.pin)  # the last reports
    finally:
        oms.send_signal(signal.SIGTERM)
        oms.wait(30)
        svc.close()
    ns = np.load(out)
    warm = ns[min(len(ns) // 10, 1000):]  # the first signals page things in
    pct = {p: np.percentile(warm, p) / 1000 for p in (50, 90, 99, 99.9)}
    engine_p50 = svc.latency.signal_to_order.percentile(50) / 1000
    print(f"aeron {args.medium}: signal -> order at the OMS over {len(warm):,} signals (first {len(ns) - len(warm)} "
          f"skipped): p50 {pct[50]:.1f} us  p90 {pct[90]:.1f} us  p99 {pct[99]:.1f} us  p99.9 {pct[99.9]:.1f} us  "
          f"max {warm.max() / 1000:.1f} us; engine's own signal -> order sent p50 {engine_p50:.1f} us")
    print(f"driver: threading {args.threading}, idle {args.idle} {args.idle_args!r}; OMS idle {args.oms_idle}; "
          f"{'pinned' if args.pin else 'not pinned'}; load average {os.getloadavg()[0]:.2f}; {_machine()}")
    print("engine:", _counters(svc), svc.engine.stats.as_dict(), "rejects:", dict(reasons.counts))


class _RejectReasons:
    def __init__(self):
        import collections
        self.counts = collections.Counter()

    def on_batch(self, orders, rejects, fills, now_ns):
        from kernels.dtypes import reason_names
        for chunk in rejects:
            for mask in chunk["reasons"].tolist():
                self.counts.update(reason_names(mask))


def _counters(svc):
    import kernels.dtypes as dtypes
    counters = svc.engine.state.counters
    return {name: int(counters[getattr(dtypes, name)]) for name, _ in dtypes.COUNTERS
            if int(counters[getattr(dtypes, name)])}


def throughput(args):
    from kernels.dtypes import C_SIGNALS
    root = write_config(Path(tempfile.mkdtemp(prefix="aeron-bench-")), args, "sim")
    svc = _engine(root)
    counters = svc.engine.state.counters
    blaster = _child("_blast", args.pin, root, args.frames, args.seconds + 1.5)
    marks = []

    def sample():  # signals decoded at 1 s into the run and at the end of the window
        time.sleep(1.0)
        marks.append((time.perf_counter(), int(counters[C_SIGNALS])))
        time.sleep(args.seconds)
        marks.append((time.perf_counter(), int(counters[C_SIGNALS])))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _spin(svc, lambda: not sampler.is_alive(), args.pin)
    finally:
        blaster.wait(30)
        svc.close()
    (t0, n0), (t1, n1) = marks
    print(f"aeron ipc: {(n1 - n0) / (t1 - t0):,.0f} signals/s decoded by one engine core ({args.frames} frames a "
          f"message, {n1 - n0:,} signals in {t1 - t0:.2f} s); {_machine()}")


def transport(args):
    """What the adapter itself costs on the engine's thread: an empty poll, a send, a poll that takes one message,
    and frames through send + poll in messages of --frames. One thread, so no scheduler in the figures: the best
    of 7 repeats (the machine is shared; the best is the cost, the rest is other people's load)."""
    import timeit

    import msgspec

    from adapters.aeron import (
        AeronDriverConfig,
        AeronNode,
        AeronReceiver,
        AeronReceiverConfig,
        AeronSender,
        AeronSenderConfig,
    )
    root = Path(tempfile.mkdtemp(prefix="aeron-bench-"))
    node = AeronNode(msgspec.convert({"directory": str(root / "aeron"), "threading": args.threading,
                                      "idle_strategy": args.idle, "idle_strategy_args": args.idle_args},
                                     AeronDriverConfig))
    channel = "aeron:ipc" if args.medium == "ipc" else "aeron:udp?endpoint=127.0.0.1:40650"
    receiver = AeronReceiver(msgspec.convert({"streams": [{"channel": channel, "stream_id": 1}]},
                                             AeronReceiverConfig), node)
    receiver.open()
    sender = AeronSender(msgspec.convert({"stream": {"channel": channel, "stream_id": 1}}, AeronSenderConfig), node)
    sender.open()
    while not sender.connect():
        time.sleep(0.001)
    one = memoryview(_signal_records(1).view(np.uint8))
    many = memoryview(_signal_records(args.frames).view(np.uint8))
    rx, sizes = np.zeros(1 << 20, np.uint8), np.zeros(4096, np.int32)

    def best(stmt, number):
        return min(timeit.repeat(stmt, number=number, repeat=7)) / number * 1e9

    def send_then_take(data):
        sender.send(data)
        while receiver.poll(rx, 0, sizes, 0, 4096)[0] == 0:  # UDP: the driver carries it
            pass

    empty = best(lambda: receiver.poll(rx, 0, sizes, 0, 4096), 20_000)
    send = best(lambda: sender.send(one), 2_000)
    while receiver.poll(rx, 0, sizes, 0, 4096)[0]:
        pass
    round_one = best(lambda: send_then_take(one), 2_000)
    round_many = best(lambda: send_then_take(many), 200)
    receiver.close()
    sender.close()
    print(f"aeron {args.medium} adapter, one thread, best of 7: empty poll {empty:.0f} ns, send of one signal frame "
          f"{send:.0f} ns, send + the poll that takes it {round_one:.0f} ns; {args.frames} frames a message: "
          f"{args.frames / round_many * 1e9:,.0f} frames/s through send + poll; {_machine()}")


def _machine():
    import pyaeron
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, pyaeron {pyaeron.__version__} "
            f"({pyaeron.aeron_version.split()[0]})")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):  # a child role: off the engine's core with --pin
        role, pin, *rest = argv
        cores = sorted(os.sched_getaffinity(0))
        if pin == "pin" and len(cores) > 1:
            os.sched_setaffinity(0, cores[1:])
        {"_oms": lambda d, o, i: role_oms(d, o, i),
         "_send": lambda d, r, s: role_send(d, float(r), float(s)),
         "_blast": lambda d, f, s: role_blast(d, int(f), float(s)),
         "_stamp": role_stamp}[role](*rest)
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("latency", "throughput", "transport", "oneway"))
    p.add_argument("--medium", choices=("ipc", "udp"), default="ipc")
    p.add_argument("--rate", type=float, default=5000.0, help="latency: signals per second")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--frames", type=int, default=512, help="throughput: signal frames per message")
    p.add_argument("--threading", default="shared")
    p.add_argument("--idle", default="backoff")
    p.add_argument("--idle-args", default="10-0-20us-50us")
    p.add_argument("--oms-idle", default="backoff", choices=("yield", "spin", "backoff"))
    p.add_argument("--pin", action="store_true", help="engine on core 0, the other processes on the rest: best "
                   "on a quiet machine, worst when something else also runs on core 0")
    args = p.parse_args(argv)
    if args.what == "throughput":
        args.medium = "ipc"
    {"latency": latency, "throughput": throughput, "transport": transport, "oneway": oneway}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
