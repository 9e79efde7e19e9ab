"""The execution-quality markouts' housekeeping at a saturation fill rate: the queue (engine/quality.MarkoutQueue)
against the flat arrays it replaced, interleaved in one process.

Found profiling the TCP saturation run (py-spy on the engine process, issue 14 item 3): ~70% of the engine
thread's samples were in ExecutionQuality.maintain, which appended every fill's markouts to one flat array per
field and filtered all of them every heartbeat: O(pending) a heartbeat, and pending is the fill rate x the longest
horizon. Here: --fills-per-s fills of stream time a second in heartbeats of HEARTBEAT_MS, horizons the default
[quality] markouts_ms; per heartbeat, the add of that heartbeat's fills and the take of what is due. The two
sides alternate heartbeat by heartbeat on the same fills (A B A B), so the machine's drift falls on both.

    PYTHONPATH=. python -m bench.markouts [--seconds S] [--fills-per-s N] [--json FILE]
"""
import argparse
import json
import os
import time

import numpy as np

from engine.config.schema import Quality
from engine.quality import MarkoutQueue

HEARTBEAT_MS = 20
MS_NS = 1_000_000


class FlatMarkouts:
    """Before: one array per field, concatenated on every add and filtered whole on every take."""

    def __init__(self):
        self.m = {k: np.zeros(0) for k in ("due", "s", "i", "h", "signed", "price")}

    def add_all(self, ts, s, i, signed, price, horizons_ns):
        h = len(horizons_ns)
        new = {"due": (ts[:, None] + horizons_ns[None, :]).ravel(), "s": np.repeat(s, h), "i": np.repeat(i, h),
               "h": np.tile(np.arange(h), len(ts)), "signed": np.repeat(signed, h), "price": np.repeat(price, h)}
        self.m = {k: np.concatenate([self.m[k], new[k]]) for k in self.m}

    def take(self, now):
        due = self.m["due"] <= now
        if not due.any():
            return 0
        n = int(due.sum())
        self.m = {k: v[~due] for k, v in self.m.items()}
        return n


def run(seconds, fills_per_s):
    horizons_ns = np.array(Quality().markouts_ms, np.int64) * MS_NS
    queue, flat = MarkoutQueue(len(horizons_ns)), FlatMarkouts()
    per_beat = fills_per_s * HEARTBEAT_MS // 1000
    rng = np.random.default_rng(1)
    times = {"queue": [], "flat": []}
    taken = {"queue": 0, "flat": 0}
    clock = time.perf_counter_ns
    for beat in range(int(seconds * 1000 / HEARTBEAT_MS)):
        now = beat * HEARTBEAT_MS * MS_NS
        ts = now + np.sort(rng.integers(0, HEARTBEAT_MS * MS_NS, per_beat))
        s, i = rng.integers(0, 4, per_beat), rng.integers(0, 4, per_beat)
        signed, price = rng.normal(size=per_beat), rng.uniform(90, 110, per_beat)
        for side in (("queue", "flat") if beat % 2 else ("flat", "queue")):
            t = clock()
            if side == "queue":
                for h, horizon in enumerate(horizons_ns.tolist()):
                    queue.add(h, {"due": ts + horizon, "s": s, "i": i, "signed": signed, "price": price})
                got = queue.take(now)
                taken[side] += 0 if got is None else len(got["due"])
            else:
                flat.add_all(ts, s, i, signed, price, horizons_ns)
                taken[side] += flat.take(now)
            times[side].append(clock() - t)
    assert taken["queue"] == taken["flat"], taken
    last = len(times["queue"]) // 2  # the second half: past the first horizon, markouts taken every heartbeat
    out = {"fills_per_s": fills_per_s, "heartbeat_ms": HEARTBEAT_MS, "horizons_ms": Quality().markouts_ms,
           "stream_seconds": seconds, "markouts_taken": taken["queue"], "loadavg_before": None}
    for side, ts_ in times.items():
        tail = np.array(ts_[last:]) / 1e6
        out[side] = {"p50_ms": float(np.median(tail)), "p99_ms": float(np.percentile(tail, 99)),
                     "busy_share": float(tail.sum() / (len(tail) * HEARTBEAT_MS))}
    out["flat_over_queue_p50"] = out["flat"]["p50_ms"] / out["queue"]["p50_ms"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.markouts", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0, help="stream seconds (default 4: the flat side grows)")
    p.add_argument("--fills-per-s", type=int, default=100_000)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    before = os.getloadavg()
    out = run(args.seconds, args.fills_per_s)
    out["loadavg_before"], out["loadavg_after"] = before, os.getloadavg()
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
