"""The live table's cost to a spinning thread (issue 14 item 6).

`orchestrator run` on a terminal draws a live table from its ticker thread; every draw holds the GIL, so the spin
driver's thread waits while it runs. Here the demo engine (a copy of config/demo) is built, its live view is drawn
the way engine/cli draws it (to a terminal-like console that writes to memory), and the main thread spins as the
spin driver does, noting every gap between two of its passes longer than GAP_NS. Printed: what one draw costs (the
snapshot, the text, rich's redraw), and over DURATION_S the spinning thread's stalls that overlap a draw (the
GIL's, when the draws come from engine/cli's ticker; rich's own refresh thread of the old view is not seen, so
its stalls are under-counted) against all its stalls (a loaded machine preempts it too). Against a tree before the
change (live_table a rich Table, redrawn 4 times a second by rich's thread as well) it measures that one.
Budget (stated, not asserted): a draw holds the GIL <= 1 ms, at most once a second.

Run: `PYTHONPATH=. python -m bench.live_view [--json FILE]`.
"""
import argparse
import io
import json
import os
import shutil
import tempfile
import statistics
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from engine import report
from engine import service as service_module
from engine.config import load_config

DURATION_S = 4.0
GAP_NS = 20_000  # a pass of this loop is well under 1 us: a gap this long is a stall
TICK_S = 0.5     # engine/cli's tick without a status file


def _draws(svc, console):
    """(live, tick, how) for this tree's live view: tick() is engine/cli's on_tick, True when it drew."""
    if hasattr(report, "live_snapshot"):
        live = Live(Text(report.live_table(svc)), console=console, auto_refresh=False)
        drawn = [0.0]

        def tick():
            if time.monotonic() - drawn[0] >= report.LIVE_INTERVAL_S:
                drawn[0] = time.monotonic()
                live.update(Text(report.live_table(svc)), refresh=True)
                return True
            return False
        return live, tick, "snapshot + text, at most once a second"
    live = Live(report.live_table(svc), console=console, refresh_per_second=4)

    def tick():
        live.update(report.live_table(svc))
        return True
    return live, tick, "rich Table, refreshed 4 times a second"


def _one_draw(svc, console):
    clock, out = time.perf_counter_ns, {}
    if hasattr(report, "live_snapshot"):
        live = Live(Text(""), console=console, auto_refresh=False)
        live.start()
        samples = []
        for _ in range(60):
            t0 = clock()
            snapshot = report.live_snapshot(svc)
            t1 = clock()
            text = report.live_text(snapshot)
            t2 = clock()
            live.update(Text(text), refresh=True)
            samples.append((t1 - t0, t2 - t1, clock() - t2))
        live.stop()
        for k, name in enumerate(("snapshot_us", "text_us", "redraw_us")):
            out[name] = statistics.median(s[k] for s in samples[10:]) / 1e3
    else:
        live = Live("", console=console, auto_refresh=False)
        live.start()
        samples = []
        for _ in range(60):
            t0 = clock()
            table = report.live_table(svc)
            t1 = clock()
            live.update(table, refresh=True)
            samples.append((t1 - t0, clock() - t1))
        live.stop()
        out["table_us"] = statistics.median(s[0] for s in samples[10:]) / 1e3
        out["redraw_us"] = statistics.median(s[1] for s in samples[10:]) / 1e3
    console.file.seek(0)
    console.file.truncate()
    return out


DEMO = Path(__file__).resolve().parents[1] / "config" / "demo"


def measure():
    # a copy of the demo config: its journal (var/journal, beside the config) must not land in config/demo, where
    # the e2e tests copy it from and a later engine would recover it
    tmp = tempfile.mkdtemp(prefix="bench-live-")
    config = Path(tmp) / "config"
    shutil.copytree(DEMO, config, ignore=shutil.ignore_patterns("var"))
    svc = service_module.build(load_config(config))
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    try:
        results = {"one_draw": _one_draw(svc, console)}
        live, tick, how = _draws(svc, console)
        stop = threading.Event()
        draws = []  # (start, end) of every on_tick

        def ticker():
            while not stop.wait(TICK_S):
                t0 = time.perf_counter_ns()
                if tick():
                    draws.append((t0, time.perf_counter_ns()))
                console.file.seek(0)
                console.file.truncate()
        live.start(refresh=True)
        thread = threading.Thread(target=ticker, daemon=True)
        thread.start()
        clock = time.perf_counter_ns
        last = start = clock()
        end = start + int(DURATION_S * 1e9)
        gaps = []
        while last < end:  # the spin driver's thread, as far as the GIL is concerned
            now = clock()
            if now - last > GAP_NS:
                gaps.append((last, now))
            last = now
        stop.set()
        thread.join()
        live.stop()
        seconds = (last - start) / 1e9
        in_draws = [b - a for a, b in gaps if any(a < d1 and b > d0 for d0, d1 in draws)]
        results["spinning"] = {
            "how": how, "draws_per_s": len(draws) / seconds,
            "draw_longest_us": max((d1 - d0 for d0, d1 in draws), default=0) / 1e3,
            "stall_in_draw_longest_us": max(in_draws, default=0) / 1e3,
            "stall_in_draw_us_per_s": sum(in_draws) / 1e3 / seconds,
            "stall_any_longest_us": max((b - a for a, b in gaps), default=0) / 1e3,
            "stall_any_us_per_s": sum(b - a for a, b in gaps) / 1e3 / seconds}
    finally:
        svc.close()
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_average"] = os.getloadavg()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    results = measure()
    draw, spin = results["one_draw"], results["spinning"]
    print("one draw: " + ", ".join(f"{k} {v:,.0f}" for k, v in draw.items()))
    print(f"spinning beside it ({spin['how']}; {spin['draws_per_s']:.1f} draws/s, longest "
          f"{spin['draw_longest_us']:,.0f} us): stalls in a draw: longest {spin['stall_in_draw_longest_us']:,.0f} us, "
          f"{spin['stall_in_draw_us_per_s']:,.0f} us a second; all stalls over {GAP_NS / 1e3:.0f} us: longest "
          f"{spin['stall_any_longest_us']:,.0f} us, {spin['stall_any_us_per_s']:,.0f} us a second; "
          f"load average {results['load_average']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
