"""The report of one `python -m bench` run: a Markdown summary (report.md) and an HDR percentile plot
(latency.png) in the run's results directory, from the JSON files the run wrote there:
micro.json (pytest-benchmark), gate.json (bench/gate.py), e2e.json (bench/e2e.py), machine.json.

`python -m bench report DIR` rebuilds them from those files.
"""
import json
from pathlib import Path

from bench import budgets
from bench.machine import one_line

# micro benches: name -> (what, figure key in extra_info, unit shown)
_MICRO_ORDER = ("stream", "process_batch", "decode", "ring_write", "encode", "apply_reports", "one_signal",
                "service_loopback", "plain_python")


def _load(path):
    path = Path(path)
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def _us(ns):
    return f"{ns / 1000:,.1f}" if ns is not None else "-"


def _rate(x):
    if not x:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:,.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:,.0f} k"
    return f"{x:,.0f}"


def _label(r):
    rate = "saturation" if r["rate"] == 0 else f"{r['rate'] // 1000}k/s"
    return f"{r['engine']} {r['transport']} {r['driver']} {rate}"


class _Obj:
    """A run dict seen as the attributes bench.e2e's printers read."""

    def __init__(self, d):
        self.__dict__.update(d)


def micro_rows(micro):
    """(group, name, per-item ns, unit, items/s, min per item, budget verdict, extra) per micro bench."""
    rows = []
    if not micro:
        return rows
    for b in micro["benchmarks"]:
        info = b.get("extra_info", {})
        unit = info.get("unit", "signal")
        per = info.get(f"ns_per_{unit}")
        rows.append({"group": b["group"], "name": b["name"], "per_ns": per, "unit": unit,
                     "per_s": info.get(f"{unit}s_per_s"), "min_ns": info.get("min_ns_per_item"),
                     "median_ns": b["stats"]["median"] * 1e9, "rounds": b["stats"]["rounds"],
                     "budget": info.get("budget"), "budget_ns": info.get("budget_ns_per_item"),
                     "latency": info.get("latency_ns"), "info": info})
    rows.sort(key=lambda r: (_MICRO_ORDER.index(r["group"]) if r["group"] in _MICRO_ORDER else 99, r["name"]))
    return rows


def _find(rows, name):
    return next((r for r in rows if r["name"] == name), None)


def speedups(rows):
    """Our speed-up over the plain-Python reference, from the micro benches."""
    out = {}
    ours = _find(rows, "test_stream_4096_udp16_throughput")
    plain = _find(rows, "test_plain_python_stream_4096_throughput")
    if ours and plain and ours["per_ns"]:
        out["stream"] = {"ours_ns": ours["per_ns"], "plain_ns": plain["per_ns"],
                         "speedup": plain["per_ns"] / ours["per_ns"]}
    ours, plain = _find(rows, "test_inprocess_one_signal_latency"), _find(rows, "test_plain_python_one_signal_latency")
    if ours and plain and ours["latency"] and plain["latency"]:
        out["one_signal"] = {k: {"ours_ns": ours["latency"][k], "plain_ns": plain["latency"][k],
                                 "speedup": plain["latency"][k] / max(ours["latency"][k], 1)}
                             for k in ("p50", "p99", "p99.9")}
    return out


def e2e_speedups(runs):
    """Saturation throughput of the engine over the plain engine, per transport (best driver)."""
    out = {}
    for transport in ("udp", "tcp"):
        ours = [r["throughput"] for r in runs if r["engine"] == "orchestrator" and r["transport"] == transport
                and r["rate"] == 0]
        plain = [r["throughput"] for r in runs if r["engine"] == "plain" and r["transport"] == transport
                 and r["rate"] == 0]
        if ours and plain and max(plain) > 0:
            out[transport] = {"ours": max(ours), "plain": max(plain), "speedup": max(ours) / max(plain)}
    return out


def budget_rows(rows, runs):
    """(what, budget, figure, verdict) for each budget of issues 2-4 that this run measured."""
    out = []
    one = _find(rows, "test_inprocess_one_signal_latency")
    if one and one["latency"]:
        lat = one["latency"]
        ok = all(lat[k] <= v * 1000 for k, v in budgets.ONE_SIGNAL_US.items())
        out.append(("in-process one signal (issue 2)", "p50 <= 1, p99 <= 2, p99.9 <= 5 us",
                    f"p50 {_us(lat['p50'])}, p99 {_us(lat['p99'])}, p99.9 {_us(lat['p99.9'])} us",
                    "met" if ok else "MISSED"))
    for transport in ("udp", "tcp"):
        lb = _find(rows, f"test_loopback_{transport}_one_signal_latency")
        if lb and lb["latency"]:
            lat = lb["latency"]
            ok = all(lat[k] <= v * 1000 for k, v in budgets.E2E_US["spin"].items())
            floor = _find(rows, "test_loopback_socket_floor_latency")
            extra = f" (sockets alone: p50 {_us(floor['latency']['p50'])} us)" if floor and floor["latency"] else ""
            out.append((f"service loop over loopback {transport}, in process (issue 3 spin, its floor)",
                        "p50 <= 10, p99 <= 15, p99.9 <= 50 us",
                        f"p50 {_us(lat['p50'])}, p99 {_us(lat['p99'])}, p99.9 {_us(lat['p99.9'])} us{extra}",
                        "met" if ok else "MISSED"))
    pb = _find(rows, "test_process_batch_4096_throughput")
    if pb:
        out.append(("process_batch at 4096 (issue 2)", ">= 100 M signals/s (<= 10 ns)",
                    f"{_rate(pb['per_s'])} signals/s ({pb['per_ns']:.1f} ns)",
                    budgets.verdict(pb["per_ns"], budgets.PROCESS_BATCH_4096_NS_PER_SIGNAL)))
    st = _find(rows, "test_stream_4096_udp16_throughput")
    if st:
        out.append(("decode + process + encode stream (issue 2)", ">= 1.5 M signals/s",
                    f"{_rate(st['per_s'])} signals/s ({st['per_ns']:.0f} ns)",
                    budgets.verdict(st["per_s"], budgets.STREAM_SIGNALS_PER_S, higher_is_better=True)))
    for driver, limits in budgets.E2E_US.items():
        cands = [r for r in runs if r["engine"] == "orchestrator" and r["driver"] == driver and r["rate"] > 0
                 and r["latency_ns"] and r["transport"] in ("udp", "tcp")]  # issue 3: loopback sockets
        if not cands:
            continue
        best = min(cands, key=lambda r: r["latency_ns"]["p50"])
        lat = best["latency_ns"]
        ok = all(lat[k] <= v * 1000 for k, v in limits.items())
        fl, vs = best.get("floor") or {}, best.get("vs_floor") or {}
        floor = (f" (floor p50 {_us(fl['p50'])}, p99 {_us(fl['p99'])} us: x{vs['p50']:.2f}, x{vs['p99']:.2f})"
                 if fl else "")
        out.append((f"end to end, {driver} (issue 3)", ", ".join(f"{k} <= {v:g} us" for k, v in limits.items()),
                    f"best run ({best['transport']} {best['rate'] // 1000}k/s): "
                    + ", ".join(f"{k} {_us(lat[k])}" for k in limits) + f" us{floor}", "met" if ok else "MISSED"))
    for transport, limit, what in (("tcp", budgets.TCP_STREAM_SIGNALS_PER_S, "TCP frames"),
                                   ("udp", budgets.UDP_DATAGRAM_SIGNALS_PER_S, "one signal per UDP datagram")):
        sat = [r for r in runs if r["engine"] == "orchestrator" and r["transport"] == transport and r["rate"] == 0]
        if sat:
            top = max(sat, key=lambda r: r["throughput"])
            best = top["throughput"]
            fl = (top.get("floor") or {}).get("throughput")
            floor = f" (floor {_rate(fl)}/s through the same harness)" if fl else ""
            out.append((f"streaming throughput, {what} (issue 3)", f">= {_rate(limit)} signals/s",
                        f"{_rate(best)} orders/s{floor}", budgets.verdict(best, limit, higher_is_better=True)))
    out += aeron_rows(runs)
    return out


def aeron_rows(runs):
    """The Aeron IPC budgets (issues 4, 14): the spin driver's best paced run and its saturation, floor beside."""
    ours = [r for r in runs if r["engine"] == "orchestrator" and r["transport"] == "aeron" and r["latency_ns"]]
    paced, sat = [r for r in ours if r["rate"] > 0], [r for r in ours if r["rate"] == 0]
    limits = budgets.AERON_IPC_US
    out = []
    if paced:
        best = min(paced, key=lambda r: r["latency_ns"]["p50"])
        lat, fl, vs = best["latency_ns"], best.get("floor") or {}, best.get("vs_floor") or {}
        floor = (f" (floor p50 {_us(fl['p50'])}, p99 {_us(fl['p99'])} us: x{vs['p50']:.2f}, x{vs['p99']:.2f})"
                 if fl else "")
        ok = all(lat[k] <= v * 1000 for k, v in limits.items())
        out.append(("end to end over Aeron IPC, spin (issues 4, 14)", "p50 <= 3 us, p99 <= 10 us",
                    f"best run ({best['rate'] // 1000}k/s): p50 {_us(lat['p50'])}, p99 {_us(lat['p99'])} us{floor}",
                    "met" if ok else "MISSED"))
    if sat:
        top = max(sat, key=lambda r: r["throughput"])
        fl = (top.get("floor") or {}).get("throughput")
        floor = f" (floor {_rate(fl)}/s through the same harness)" if fl else ""
        out.append(("streaming throughput over Aeron IPC (issue 14)", f">= {_rate(budgets.AERON_IPC_SIGNALS_PER_S)} "
                    "signals/s", f"{_rate(top['throughput'])} orders/s{floor}",
                    budgets.verdict(top["throughput"], budgets.AERON_IPC_SIGNALS_PER_S, higher_is_better=True)))
    if not ours:
        out.append(("end to end over Aeron IPC (issues 4, 14)", "p50 <= 3 us, p99 <= 10 us; >= 2 M signals/s",
                    "not measured in this run (--transports without aeron)", None))
    out.append(("end to end over Aeron UDP (issue 4)", "p50 <= 15 us",
                "not measured end to end: the harness runs Aeron over IPC (bench/aeron_loop.py latency --medium udp)",
                None))
    return out


def markdown(run_dir):
    run_dir = Path(run_dir)
    machine = _load(run_dir / "machine.json") or {}
    micro = _load(run_dir / "micro.json")
    gate = _load(run_dir / "gate.json")
    e2e = _load(run_dir / "e2e.json") or {}
    rows = micro_rows(micro)
    runs = e2e.get("runs", [])
    lines = [f"# Benchmark report {machine.get('date', '')}", ""]
    if machine:
        lines += [f"Machine: {one_line(machine)}", ""]
    lines += ["Figures from a shared 2-core VM: other work runs beside the benches, so absolute figures move from run "
              "to run (tens of percent; end-to-end tails far more). The regression gate compares ratios measured in "
              "one session for that reason. Budgets are reported, never asserted.", ""]

    lines += ["## Budgets", "", "| what | budget | measured | verdict |", "|---|---|---|---|"]
    for what, budget, figure, verdict in budget_rows(rows, runs):
        lines.append(f"| {what} | {budget} | {figure} | {verdict or '-'} |")

    sp = speedups(rows)
    esp = e2e_speedups(runs)
    if sp or esp:
        lines += ["", "## Speed-up over plain Python (bench/plain_python.py: asyncio, dicts, msgspec, same checks)",
                  "", "| what | plain Python | this engine | speed-up |", "|---|---|---|---|"]
        if "stream" in sp:
            s = sp["stream"]
            lines.append(f"| batched stream, ns per signal | {s['plain_ns']:,.0f} | {s['ours_ns']:,.0f} | "
                         f"**{s['speedup']:,.0f}x** |")
        for k, s in sp.get("one_signal", {}).items():
            lines.append(f"| in-process one signal, {k} us | {_us(s['plain_ns'])} | {_us(s['ours_ns'])} | "
                         f"**{s['speedup']:,.1f}x** |")
        for transport, s in esp.items():
            lines.append(f"| end-to-end saturation over {transport}, orders/s | {_rate(s['plain'])} | "
                         f"{_rate(s['ours'])} | **{s['speedup']:,.1f}x** |")

    if rows:
        lines += ["", "## In-process micro-benchmarks (pytest-benchmark, median round)", "",
                  "| bench | per item | items/s | best round per item | rounds | budget |", "|---|---|---|---|---|---|"]
        for r in rows:
            if r["latency"]:
                continue
            budget = f"{r['budget']} (<= {r['budget_ns']:.0f} ns)" if r["budget"] else "-"
            lines.append(f"| {r['name']} | {r['per_ns']:,.1f} ns/{r['unit']} | {_rate(r['per_s'])} | "
                         f"{r['min_ns']:,.1f} ns | {r['rounds']} | {budget} |")
        lat_rows = [r for r in rows if r["latency"]]
        if lat_rows:
            lines += ["", "## In-process one signal -> order (HdrHistogram, paced, record_corrected_value)", "",
                      "`inprocess`: rx -> run_batch -> tx; `loopback`: a socket -> Engine.poll + step -> the OMS "
                      "socket, in one process; `socket floor`: the same syscalls with no engine.", "",
                      "| bench | p50 us | p90 us | p99 us | p99.9 us | p99.99 us | max us | samples | pacing |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for r in lat_rows:
                lat = r["latency"]
                lines.append(f"| {r['name']} | {_us(lat['p50'])} | {_us(lat['p90'])} | {_us(lat['p99'])} | "
                             f"{_us(lat['p99.9'])} | {_us(lat['p99.99'])} | {_us(lat['max'])} | {lat['count']:,} | "
                             f"{r['info'].get('interval_ns', 0) / 1000:g} us |")

    if runs or e2e.get("skipped"):
        lines += ["", "## End to end over loopback (real processes; latency from the intended send time)", "",
                  "Signal sent by the peer (bench/peer.py: bench/loadgen.py's open-loop sender and "
                  "bench/oms_receiver.py's receiver in one busy loop) -> engine -> order frame read back by the peer. "
                  "`floor` is bench/floor.py in the engine's place (the same syscalls, no engine) at the same "
                  "transport and rate in this invocation; `x floor` is engine / floor. `from send` is the latency "
                  "from the actual send (not corrected); `lag p99` is how late the sender itself was; `peer busy` is "
                  "the share of the run the peer spent sending + answering.", "",
                  "| engine | transport | driver | rate | sent | received | throughput /s | p50 us | p99 us | "
                  "p99.9 us | floor p50 / p99 us | x floor p50 / p99 | from send p50 us | lag p99 us | peer busy | "
                  "note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            lat, sent = r["latency_ns"] or {}, r["latency_sent_ns"] or {}
            rate = "saturation" if r["rate"] == 0 else f"{r['rate']:,}"
            fl, vs = r.get("floor") or {}, r.get("vs_floor") or {}
            floor = f"{_us(fl['p50'])} / {_us(fl['p99'])}" if fl else "-"
            ratio = f"{vs['p50']:.2f} / {vs['p99']:.2f}" if vs else "-"
            peer = r.get("peer") or {}
            busy = (peer.get("send_busy") or 0) + (peer.get("recv_busy") or 0)
            note = "; ".join(x for x in (r["note"], f"{len(r.get('warnings') or [])} warning(s)"
                                         if r.get("warnings") else "") if x)
            lines.append(f"| {r['engine']} | {r['transport']} | {r['driver']} | {rate} | {r['sent']:,} | "
                         f"{r['received']:,} | {_rate(r['throughput'])} | {_us(lat.get('p50'))} | "
                         f"{_us(lat.get('p99'))} | {_us(lat.get('p99.9'))} | {floor} | {ratio} | "
                         f"{_us(sent.get('p50'))} | {r['sender_lag_us'].get('p99', 0):,.1f} | {busy:.0%} | {note} |")
        placed = [r for r in runs if r.get("placement")]
        if placed:
            lines += ["", "### Placement and load, per run", "",
                      "Each process: the CPUs its main thread may run on (affinity), the CPUs it was seen running on "
                      "(sampled every 0.1 s), its CPU share and the share of the run it waited runnable for a CPU "
                      "(schedstat). Cores: busy share (/proc/stat). `others`: CPU the rest of the machine used, as a "
                      "share of all cores.", ""]
            from bench.e2e import placement_line
            for r in placed:
                lines.append(f"- {_label(r)}: {placement_line(_Obj(r))}")
                if r.get("bottleneck"):
                    lines.append(f"  - saturation: {r['bottleneck']}")
                for w in r.get("warnings") or []:
                    lines.append(f"  - **WARNING**: {w}")
        for skipped in e2e.get("skipped", []):
            lines.append(f"\nNot run: {skipped}")
        reports = e2e.get("engine_reports", {})
        notes = []
        for group, rep in reports.items():
            if not rep:
                continue
            c = rep.get("counters", {})
            bad = {k: v for k, v in c.items() if v and (k.endswith("_full") or k.startswith("frame_") and k != "frames"
                                                        or k.endswith("unknown_order"))}
            for name, t in (rep.get("transports") or {}).items():
                for k in ("kernel_drops", "oversize", "truncated", "partial_discarded", "held_discarded"):
                    if isinstance(t, dict) and t.get(k):
                        bad[f"{name} {k}"] = t[k]
            rej = rep.get("rejects_by_reason") or {}
            if bad or rej:
                notes.append(f"- {group}: " + ", ".join(f"{k} {v:,}" for k, v in {**bad, **rej}.items()))
        if notes:
            lines += ["", "Engine counters that explain lost signals (from each engine's final report):", ""] + notes

    if gate:
        lines += ["", "## Regression gate (ratios to the fixed reference workload, this session vs the baseline or "
                  "the calibration)", ""]
        for entry in gate.get("results", []):
            verdict = entry.get("verdict")
            if verdict:
                lines += ["| metric | baseline | now | change | tolerance | verdict |", "|---|---|---|---|---|---|"]
                for row in verdict["rows"]:
                    lines.append(f"| {row['metric']} | {row['baseline']:.4f} | {row['now']:.4f} | "
                                 f"{row['change']:+.1%} | ±{row['tolerance']:.1%} | {row['verdict']} |")
                lines.append("")
                lines.append("Gate: **" + ("PASS" if verdict["ok"] else "FAIL: " + ", ".join(verdict["regressions"]))
                             + f"** ({verdict.get('sessions', 1)} session(s))")
        if gate.get("note"):
            lines += ["", gate["note"]]

    if (run_dir / "latency.png").exists():
        lines += ["", "## Percentile plot", "", "![latency percentiles](latency.png)"]
    return "\n".join(lines) + "\n"


def plot(run_dir):
    """latency.png: HDR percentile curves (x = 1 / (1 - percentile), log; y = latency, log), one panel per
    transport for the end-to-end runs at fixed rates, and one for the in-process one-signal path."""
    try:
        import matplotlib
    except ImportError:  # the `bench` extra is not installed: the Markdown report still works
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from hdrh.histogram import HdrHistogram
    from matplotlib.ticker import FuncFormatter

    from bench import hist

    run_dir = Path(run_dir)
    machine = _load(run_dir / "machine.json") or {}
    micro = _load(run_dir / "micro.json")
    e2e = _load(run_dir / "e2e.json") or {}
    panels = []
    inproc = []
    for r in micro_rows(micro):
        if r["latency"] and r["info"].get("histogram"):
            h = HdrHistogram.decode(r["info"]["histogram"])
            label = r["name"].removeprefix("test_").removesuffix("_latency").replace("_", " ")
            color = {"plain": "tab:red", "loopback_udp": "tab:green", "loopback_tcp": "tab:olive",
                     "socket_floor": "tab:gray"}
            inproc.append((label, hist.curve(h), (next((c for k, c in color.items() if k in r["name"]),
                                                       "tab:blue"), "-")))
    if inproc:
        panels.append(("in process: one signal -> order (paced, corrected)", inproc))
    colors = {"spin": "tab:blue", "event": "tab:green", "asyncio": "tab:red"}
    rates = sorted({r["rate"] for r in e2e.get("runs", []) if r["rate"] > 0})
    styles = ["-", "--", ":", "-."]
    for transport in ("udp", "tcp", "aeron"):
        curves = []
        for r in e2e.get("runs", []):
            if r["transport"] != transport or r["rate"] == 0 or not r["curve"] or not r["curve"][0]:
                continue
            engine = {"orchestrator": "engine", "plain": "plain Python"}.get(r["engine"], r["engine"])
            label = f"{engine} {r['driver']} {r['rate'] // 1000}k/s"
            color = "tab:gray" if r["engine"] == "floor" else colors.get(r["driver"], "tab:gray")
            curves.append((label, r["curve"], (color, styles[rates.index(r["rate"]) % len(styles)])))
        if curves:
            panels.append((f"end to end over {transport} (from intended send)", curves))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.2), squeeze=False)
    ticks = [1, 10, 100, 1000, 10000, 100000]
    labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
    for ax, (title, curves) in zip(axes[0], panels):
        for label, (pct, values), (color, style) in curves:
            x = [1.0 / (1.0 - p / 100.0) if p < 100 else 1e6 for p in pct]
            ax.plot(x, [v / 1000 for v in values], linestyle=style, color=color, label=label, linewidth=1.4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if v < 1e4 else f"{v / 1e3:g}k" if v < 1e6 else f"{v / 1e6:g}M"))
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels)
        ax.set_xlim(1, max(10, max(1.0 / (1.0 - p / 100.0) for _, (pct, _), _ in curves for p in pct if p < 100)))
        # record_corrected_value also records value - k x interval: clip those synthetic sub-microsecond values
        low = min(v for _, (_, values), _ in curves for v in values if v > 0) / 1000
        ax.set_ylim(bottom=max(low, 0.5) if title.startswith("in process") else None)
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (us)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{machine.get('date', '')}  {machine.get('cpu', '')}, {machine.get('cores', '')} cores, "
                 f"Python {machine.get('versions', {}).get('python', '')}, numba "
                 f"{machine.get('versions', {}).get('numba', '')}  (commit {machine.get('commit', '')})", fontsize=9)
    fig.tight_layout()
    out = run_dir / "latency.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def build(run_dir):
    """latency.png and report.md for a results directory; returns the report's path."""
    run_dir = Path(run_dir)
    plot(run_dir)
    path = run_dir / "report.md"
    path.write_text(markdown(run_dir))
    return path


README_BEGIN = "<!-- latest figures: begin (written by python -m bench; do not edit by hand) -->"
README_END = "<!-- latest figures: end -->"


def update_readme(run_dir, readme=None):
    """Replace the latest-figures block of bench/README.md with this run's budgets and speed-ups, its machine and
    date, and the plot (results/latest/latency.png). Returns True if the README had the block."""
    from bench import BENCH_DIR
    readme = Path(readme or BENCH_DIR / "README.md")
    if not readme.exists():
        return False
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        return False
    run_dir = Path(run_dir)
    machine = _load(run_dir / "machine.json") or {}
    rows = micro_rows(_load(run_dir / "micro.json"))
    runs = (_load(run_dir / "e2e.json") or {}).get("runs", [])
    block = [README_BEGIN, "", f"Run `{run_dir.name}`: {one_line(machine)}" if machine else "", "",
             "| what | budget | measured | verdict |", "|---|---|---|---|"]
    for what, budget, figure, verdict in budget_rows(rows, runs):
        block.append(f"| {what} | {budget} | {figure} | {verdict or '-'} |")
    sp, esp = speedups(rows), e2e_speedups(runs)
    if sp or esp:
        parts = []
        if "stream" in sp:
            parts.append(f"batched stream {sp['stream']['speedup']:,.0f}x")
        if "one_signal" in sp:
            parts.append(f"one signal p50 {sp['one_signal']['p50']['speedup']:,.1f}x")
        parts += [f"end-to-end saturation over {t} {s['speedup']:,.1f}x" for t, s in esp.items()]
        block += ["", "Speed-up over the plain-Python reference: " + ", ".join(parts) + "."]
    block += ["", "Full report: [results/latest/report.md](results/latest/report.md).", ""]
    if (run_dir / "latency.png").exists():
        block += ["![latency percentiles](results/latest/latency.png)", ""]
    block.append(README_END)
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    readme.write_text(text[:start] + "\n".join(block) + text[end:])
    return True
