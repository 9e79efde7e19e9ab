"""Event mode: from a datagram sent to the start of the batch that decides it (issue 14 item 3).

The engine of bench/test_service_loopback (engine.service.build of bench/config) runs under run_event on a uvloop
loop; a coroutine of the same loop sends one signal datagram, and a wrapper around Engine.step records when the
next batch starts. One thread, so what is measured is the loop's path: the wake on the UDP socket, the readable
callback, the read, then (coalesce=True) the call_soon hop to the batch, or (coalesce=False, the default) the batch
run inside the callback. Medians and p90 of ROUNDS rounds, both ways in one run, with the load average. Against a
tree before the change (a run_event without `coalesce`: the call_soon hop and a second poll of every transport
before the batch) it measures that driver alone. Budget: none asserted (figures).

Run: `PYTHONPATH=. python -m bench.event_hop [--json FILE]`.
"""
import argparse
import asyncio
import inspect
import json
import os
import statistics
import time

import uvloop

from bench.test_service_loopback import Loopback
from engine.driver import run_event

ROUNDS = 3000
GAP_S = 0.0003  # between rounds: the engine is idle when a datagram comes


def _one_way(coalesce):
    loopback = Loopback("udp")
    engine = loopback.engine
    loopback.setup()
    frame = loopback.frame
    clock = time.perf_counter_ns
    marks = {"sent": 0, "started": 0}
    step = engine.step

    def timed_step(now_ns=None):
        if marks["sent"] and not marks["started"]:
            marks["started"] = clock()
        return step(now_ns)
    engine.step = timed_step  # run_event takes engine.step once, at its start

    async def main():
        stop = asyncio.Event()
        driver = asyncio.get_running_loop().create_task(
            run_event(engine, stop) if coalesce is None else run_event(engine, stop, coalesce=coalesce))
        hops = []
        await asyncio.sleep(0.05)
        drain = bytearray(1 << 16)
        loopback.oms.setblocking(False)
        for k in range(ROUNDS + 200):
            marks["started"] = 0
            marks["sent"] = clock()
            loopback.sender.send(frame)
            while not marks["started"]:
                await asyncio.sleep(0)
            if k >= 200:  # warm-up rounds left out
                hops.append(marks["started"] - marks["sent"])
            marks["sent"] = 0
            try:  # the orders it made: read off the OMS end so the link never fills
                while loopback.oms.recv_into(drain):
                    pass
            except BlockingIOError:
                pass
            await asyncio.sleep(GAP_S)
        stop.set()
        await driver
        return hops

    loop = uvloop.new_event_loop()
    try:
        hops = loop.run_until_complete(main())
    finally:
        loop.close()
        loopback.close()
    hops.sort()
    return {"send_to_batch_ns_median": statistics.median(hops), "send_to_batch_ns_p90": hops[int(len(hops) * 0.9)],
            "rounds": len(hops)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    if "coalesce" in inspect.signature(run_event).parameters:
        results = {"coalesce (call_soon hop)": _one_way(True), "in the callback": _one_way(False)}
    else:
        results = {"run_event of this tree": _one_way(None)}
    results.update(load_average=os.getloadavg(), cpus=os.cpu_count())
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"{name:30}: send -> batch start {r['send_to_batch_ns_median'] / 1e3:.2f} us median, "
                  f"p90 {r['send_to_batch_ns_p90'] / 1e3:.2f} us ({r['rounds']} rounds)")
    print(f"load average {results['load_average']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
