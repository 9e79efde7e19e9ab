"""The trading loop (issue 13): market data and signals interleaved, the simulated venue in the batch filling every
order at once, so every event is decode -> checks -> order -> fill -> position and P&L (bench/loop.py).

Budget (issue 13): >= 5 M events/s compiled, and >= 15x the plain-Python engine (reference/stream.py) on the same
stream.

One run measures it all: compiled `run_batch` over 20k and 1M events at batch sizes 1, 16, 256 and 4096 (events/s
of the whole loop, its Python driver included, and of the run_batch calls alone); the p50 cost per event in each
tenth of the 1M runs (does it stay flat?); the plain-Python engine on the same streams; the ratios. Every batch size
must end with the same tables, and the plain engine with the compiled one's: correctness checks, never timing ones.
The 1M cases are `slow`, run only with BENCH_SLOW=1 (bench/conftest.py); a run that measured every case writes
bench/results/latest/loop.json:

    BENCH_SLOW=1 python -m pytest bench/test_loop.py -q -p no:cacheprovider --benchmark-disable-gc
"""
import json
import subprocess

import numpy as np
import pytest

from bench import RESULTS_DIR, hist, machine
from bench.budgets import LOOP_EVENTS_PER_S, LOOP_SPEEDUP_OVER_PLAIN
from bench.conftest import run
from bench.loop import Compiled, Plain, TradingStream, loop_config
from kernels.dtypes import C_BATCH_STOPS
from reference.compare import table_differences, venue_differences

SIZES = (20_000, 1_000_000)
BATCHES = (1, 16, 256, 4096)
ROUNDS = {20_000: 7, 1_000_000: 3}
BIG = 1_000_000
OUT = RESULTS_DIR / "latest" / "loop.json"


@pytest.fixture(scope="module")
def loop():
    """The streams (built once), the compiled final states (by size), and the figures; written at the end when
    every case was measured."""
    state = {"streams": {}, "finals": {}, "digests": {}, "compiled": {}, "plain": {}, "tenths": {}}
    yield state
    expected = len(SIZES) * len(BATCHES) + len(SIZES)
    measured = sum(len(v) for v in state["compiled"].values()) + len(state["plain"])
    if measured == expected:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(report(state), indent=1) + "\n")
        print(f"\nloop figures: {OUT}")


def stream_of(loop, n):
    if n not in loop["streams"]:
        loop["streams"][n] = TradingStream(n)
    return loop["streams"][n]


def final_of(loop, n):
    """A compiled run's final state for n events (one untimed run if no compiled case ran yet)."""
    if n not in loop["finals"]:
        w = Compiled(stream_of(loop, n), 4096)
        w.setup()
        w.call()
        loop["finals"][n] = w
    return loop["finals"][n]


def _compiled_case(n, batch):
    @pytest.mark.benchmark(group="loop")
    def test(benchmark, loop):
        w = Compiled(stream_of(loop, n), batch)
        w.items = n
        per_event_ns = run(benchmark, w, rounds=ROUNDS[n], warmup_rounds=1, unit="event",
                           budget_ns=1e9 / LOOP_EVENTS_PER_S)
        digest = w.digest()
        assert loop["digests"].setdefault(n, digest) == digest, f"batch {batch} ended with other tables"
        assert w.state.counters[C_BATCH_STOPS] == 0 and int(w.state.strategies["fills"].sum()) == n // 2
        loop["finals"].setdefault(n, w)
        if per_event_ns is not None:
            loop["compiled"].setdefault(n, {})[batch] = {
                "events_per_s": round(1e9 / per_event_ns), "ns_per_event": round(per_event_ns, 1),
                "run_batch_events_per_s": round(n / (w.calls_ns.sum() / 1e9)),
                "run_batch_ns_per_event": round(w.calls_ns.sum() / n, 1)}
            if n == BIG:
                loop["tenths"][batch] = [hist.summary(hist.of(np.round(part)))["p50"]
                                         for part in np.array_split(w.per_event_ns(), 10)]
    test.__doc__ = f"run_batch over {n:,} events, {batch} chunks a call: events per second."
    return pytest.mark.slow(test) if n >= BIG else test


def _plain_case(n):
    @pytest.mark.benchmark(group="loop")
    def test(benchmark, loop):
        w = Plain(stream_of(loop, n))
        w.items = n
        per_event_ns = run(benchmark, w, rounds=3 if n < BIG else 1, warmup_rounds=1 if n < BIG else 0,
                           unit="event")
        k = final_of(loop, n).state
        found = table_differences(k, w.engine.rules, (C_BATCH_STOPS,)) + venue_differences(k, w.engine.venue)
        assert not found, "\n".join(found[:30])
        if per_event_ns is not None:
            loop["plain"][n] = {"events_per_s": round(1e9 / per_event_ns), "ns_per_event": round(per_event_ns, 1)}
    test.__doc__ = f"reference/stream.py (plain Python) over the same {n:,} events: events per second."
    return pytest.mark.slow(test) if n >= BIG else test


for _n in SIZES:
    for _batch in BATCHES:
        globals()[f"test_loop_{_n // 1000}k_batch_{_batch}_throughput"] = _compiled_case(_n, _batch)
    globals()[f"test_loop_plain_python_{_n // 1000}k_throughput"] = _plain_case(_n)


def report(state):
    """The figures, their ratios and budgets, the stream and the machine, for loop.json."""
    config = loop_config()
    ratios = {n: {batch: round(f["events_per_s"] / state["plain"][n]["events_per_s"], 1)
                  for batch, f in state["compiled"][n].items()} for n in SIZES}
    best = max(f["events_per_s"] for f in state["compiled"][BIG].values())
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = None
    return {
        "what": "the trading loop (issue 13): bench/test_loop.py over bench/loop.py's stream",
        "stream": {"events": list(SIZES), "instruments": len(config.instruments), "strategies": len(config.strategies),
                   "mix": "market data and ORDER signals alternating, one frame per chunk, 1 us apart; every signal "
                          "fills at once at the touch (venue in the batch, latency 0, taker fee 0.5 bp)"},
        "compiled": state["compiled"], "plain_python": state["plain"],
        "compiled_over_plain": ratios,
        "tenths_p50_ns_per_event_1m": state["tenths"],
        "budget": {"events_per_s": LOOP_EVENTS_PER_S, "speedup_over_plain": LOOP_SPEEDUP_OVER_PLAIN,
                   "best_1m_events_per_s": best,
                   "events_per_s_verdict": "met" if best >= LOOP_EVENTS_PER_S else "MISSED",
                   "speedup_verdict": "met" if max(ratios[BIG].values()) >= LOOP_SPEEDUP_OVER_PLAIN else "MISSED"},
        "machine": machine.machine_info(), "uptime": uptime,
    }
