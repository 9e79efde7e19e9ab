"""Where one signal's time goes inside the engine's process over Aeron IPC (issue 14 item 5's starting point).

One process, one thread, so no scheduler in the figures: a media driver embedded here, the real engine of the e2e
harness (engine.service.build of bench/config as bench/e2e.write_config makes it for Aeron: signals on the [aeron]
signals stream, the OMS link over Aeron, the journal as configured) and, on the harness's streams, a signals
publication and an orders subscription of our own. Per round: the offer of one signal frame (`offer`); the spin
driver's reads of the transports without a descriptor (the OMS link, then the signals receiver, as run_spin's
`readiness.always`) until the signal is in rx (`poll`: the pass that takes it, with its arrival journaled); one
`Engine.step` (`step`: run_batch, the journal's commit, the one offer of tx, the rings drained and the listeners);
the poll at the OMS end that takes the order (`oms`). Medians over the rounds after the first 500, then the empty
poll of each transport and an empty step (best of 5). Figures, nothing asserted.

    PYTHONPATH=. python -m bench.aeron_pass [--rounds N] [--no-journal] [--json FILE]
"""
import argparse
import json
import os
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import msgspec
import numpy as np

from adapters.aeron import AeronDriverConfig, AeronNode
from bench import CONFIG_DIR, e2e
from bench.aeron_peer import ORDERS, SIGNALS, Link
from bench.frames import fill_signals, signal_frames
from bench.loadgen import instruments_of
from engine import service
from engine.config import load_config
from engine.wait import Readiness

WARM = 500


def measure(rounds, journal=True):
    tmp = Path(tempfile.mkdtemp(prefix="aeron-pass-"))
    directory = str(tmp / "aeron")
    driver = AeronNode(msgspec.convert({"directory": directory}, AeronDriverConfig))
    driver.acquire()
    link = Link(directory)
    orders = link.subscription(ORDERS)
    signals = link.publication(SIGNALS)
    config = e2e.write_config(tmp / "config", "spin", e2e.free_port(), e2e.free_port(), 1, directory)
    if not journal:
        with open(config / "engine.toml", "a") as f:
            f.write("\n[journal]\nenabled = false\n")
    svc = service.build(load_config(config), monitoring=False)
    engine = svc.engine
    try:
        while not signals.is_connected:
            time.sleep(0.001)
        frames = fill_signals(signal_frames(8), instruments_of(CONFIG_DIR), 0, 1, 1, 0)
        buf = bytearray(frames.tobytes())
        stamp = np.frombuffer(buf, frames.dtype)
        view, size = memoryview(buf), len(buf) // len(frames)
        always = Readiness(engine.sources).always
        got = [0]

        def on_order(buffer, header):
            got[0] += 1
        clock = time.perf_counter_ns
        seg = {"offer": [], "poll": [], "step": [], "oms": []}
        for n in range(rounds):
            k = n % len(frames)
            stamp["seq"][k], stamp["ts_ns"][k] = n + 1, time.time_ns()
            t0 = clock()
            while signals.offer(view[k * size:(k + 1) * size]) is not True:
                pass
            t1 = clock()
            waiting = 0
            while not waiting:
                for transport, source in always:
                    waiting = engine.poll_one(transport, source)
            t2 = clock()
            engine.step()
            t3 = clock()
            got[0] = 0
            while not got[0]:
                orders.poll(on_order, 10)
            t4 = clock()
            if n >= WARM:
                for key, value in zip(seg, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    seg[key].append(value)
        out = {key: statistics.median(v) for key, v in seg.items()}
        for transport, source in always:
            out[f"empty poll {type(transport).__name__}"] = min(timeit.repeat(
                lambda: engine.poll_one(transport, source), number=20_000, repeat=5)) / 20_000 * 1e9
        out["empty step"] = min(timeit.repeat(engine.step, number=5_000, repeat=5)) / 5_000 * 1e9
        return out
    finally:
        svc.close()
        link.close()
        driver.close()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.aeron_pass", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5_000)
    p.add_argument("--no-journal", action="store_true", help="[journal] enabled = false (to see its share)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    before = os.getloadavg()
    ns = measure(args.rounds, journal=not args.no_journal)
    out = {"journal": not args.no_journal, "rounds": args.rounds, "ns": {k: round(v) for k, v in ns.items()},
           "loadavg": [before, os.getloadavg()]}
    print(json.dumps(out))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
