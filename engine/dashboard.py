"""The operator's dashboard: one web page that polls one JSON route, served by aiohttp off the engine's thread.

`dashboard_app(service)` is a self-contained aiohttp application: `GET /` the page, `GET /api/view` the view as
JSON. Its links are relative, so it can be mounted under a prefix of another app (the management API:
`api_app.add_subapp("/dashboard/", dashboard_app(service))`). Until then `DashboardServer` serves it on the
`[dashboard]` address, from a thread with its own event loop.

What it reads: only what the engine published between batches (engine/monitor.py: the latest
`MetricsSnapshot`, with the reasons, the P&L history, latency percentiles and quality copied into it) and the
alert manager's active alerts; never the arena. A view is built once per snapshot and sent as the same bytes
to every poll until the next one, so a page left open costs one build per refresh interval, whatever the
number of tabs.
"""
import asyncio
import json
import threading

import numpy as np
from aiohttp import web

from kernels.dtypes import COUNTER_NAMES, REASON_NAMES, STATE_NAMES

SERVICE_KEY = web.AppKey("service", object)
CACHE_KEY = web.AppKey("cache", dict)
BAD_INPUT = tuple(k for k in COUNTER_NAMES if k.startswith("frame_") or k.endswith(
    ("_unknown_source", "_unknown_id", "_unknown_instrument", "_invalid")))


def view(service, snapshot):
    """The dashboard's JSON-ready view of one published snapshot."""
    monitor = service.monitor
    names, symbols = snapshot.strategy_names, snapshot.instrument_symbols
    counters = dict(zip(COUNTER_NAMES, (int(c) for c in snapshot.counters)))
    history_t, history = snapshot.history if snapshot.history is not None else (np.zeros(0), np.zeros((0, 0)))
    latency = snapshot.latency_us or {}
    strategies = []
    total_reasons = {}
    for s, name in enumerate(names):
        row = snapshot.strategies[s]
        held = {symbols[i]: int(q) for i, q in enumerate(snapshot.positions[s]["qty"]) if q}
        reasons = {REASON_NAMES[r]: int(c) for r, c in enumerate(snapshot.reason_counts[s]) if c}
        for reason, count in reasons.items():
            total_reasons[reason] = total_reasons.get(reason, 0) + count
        realized, unrealized, fees = float(row["realized"]), float(row["unrealized"]), float(row["fees"])
        strategies.append({
            "name": name, "state": STATE_NAMES[int(row["state"])],
            "reason": snapshot.strategy_reasons[s] if s < len(snapshot.strategy_reasons) else "",
            "version": snapshot.strategy_versions[s], "deploy": int(row["deploy"]),
            "shadow": bool(row["shadow_of"]), "position": held,
            "pnl": {"realized": realized, "unrealized": unrealized, "fees": fees,
                    "net": realized + unrealized - fees},
            "sparkline": [round(float(v), 2) for v in history[:, s]] if history.shape[1] > s else [],
            "orders": int(row["orders"]), "fills": int(row["fills"]), "rejects": int(row["rejects"]),
            "rejects_by_reason": reasons, "latency_us": latency.get(name, {}),
        })
    quality = []
    if snapshot.quality is not None:
        for s, i, row in snapshot.quality["pairs"]:
            quality.append({"strategy": names[s] if s < len(names) else str(s), "instrument": symbols[i], **row})
    alerts = monitor.alerts.view() if monitor is not None and monitor.alerts is not None else {"active": [],
                                                                                                "recent": []}
    return {
        "engine": service.engine.state.config.engine.name,
        "taken_ns": snapshot.taken_ns, "oms_up": snapshot.oms_up,
        "refresh_ms": monitor.dashboard_config.refresh_ms if monitor and monitor.dashboard_config else 1000,
        "counters": {"signals": counters.get("signals", 0), "orders": counters.get("orders", 0),
                     "rejects": counters.get("rejects", 0), "fills": counters.get("fills", 0),
                     "bad_input": sum(counters.get(k, 0) for k in BAD_INPUT)},
        "history_ns": [int(t) for t in history_t],
        "strategies": strategies, "rejects_by_reason": dict(sorted(total_reasons.items(), key=lambda kv: -kv[1])),
        "quality": quality, "alerts": alerts,
    }


def dashboard_app(service) -> web.Application:
    """The dashboard as an aiohttp application (mountable as a sub-application)."""
    app = web.Application()
    app[SERVICE_KEY] = service
    app[CACHE_KEY] = {"snapshot": None, "alerts": None, "body": b"", "views": 0, "requests": 0}
    app.router.add_get("/", _page)
    app.router.add_get("/api/view", _view)
    return app


async def _page(request):
    request.app[CACHE_KEY]["requests"] += 1
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def _view(request):
    app = request.app
    cache = app[CACHE_KEY]
    cache["requests"] += 1
    service = app[SERVICE_KEY]
    monitor = service.monitor
    snapshot = monitor.latest if monitor is not None else None
    if snapshot is None:
        return web.json_response({"error": "nothing published yet"}, status=503)
    alerts_seen = monitor.alerts.notifications if monitor.alerts is not None else 0
    if cache["snapshot"] is not snapshot or cache["alerts"] != alerts_seen:
        cache["body"] = json.dumps(view(service, snapshot), separators=(",", ":")).encode()
        cache["snapshot"], cache["alerts"] = snapshot, alerts_seen
        cache["views"] += 1
    return web.Response(body=cache["body"], content_type="application/json",
                        headers={"Cache-Control": "no-store"})


class DashboardServer:
    """`dashboard_app(service)` on `config.host:port`, from a thread of its own (its own asyncio loop)."""

    def __init__(self, service, config):
        self.service, self.config = service, config
        self.app = dashboard_app(service)
        self.address = None
        self._loop = self._runner = self._thread = None
        self._ready = threading.Event()
        self._error = None

    @property
    def stats(self):
        cache = self.app[CACHE_KEY]
        return {"requests": cache["requests"], "views": cache["views"]}

    @property
    def url(self):
        return "http://%s:%d/" % self.address

    def open(self):
        self._thread = threading.Thread(target=self._serve, name="dashboard", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _serve(self):
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._start())
        except Exception as e:  # OSError (the address in use), or anything else: open() raises it, never hangs
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _start(self):
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        self.address = tuple(self._runner.addresses[0][:2])

    def close(self):
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>orchestrator</title>
<style>
 body { font: 13px/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; background: #f4f5f7;
        color: #1d2330; }
 header { background: #1d2330; color: #fff; padding: 10px 16px; display: flex; gap: 24px; align-items: baseline; }
 header h1 { font-size: 16px; margin: 0; }
 header .ok { color: #7ee08a; } header .down { color: #ff7b7b; }
 main { padding: 12px 16px; display: grid; grid-template-columns: 1fr; gap: 12px; }
 section { background: #fff; border-radius: 6px; padding: 10px 12px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
 h2 { font-size: 13px; margin: 0 0 6px; text-transform: uppercase; letter-spacing: .04em; color: #556; }
 table { border-collapse: collapse; width: 100%; }
 th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eceef2; white-space: nowrap; }
 th { font-weight: 600; color: #556; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
 .ACTIVE { color: #167a2c; font-weight: 600; } .HALTED { color: #b3261e; font-weight: 600; }
 .REDUCING, .PAUSED { color: #9a6700; font-weight: 600; } .READY, .RETIRED, .REGISTERED { color: #667; }
 .neg { color: #b3261e; } .pos { color: #167a2c; }
 .critical { color: #b3261e; font-weight: 600; } .warning { color: #9a6700; } .info { color: #345; }
 .row2 { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
 svg.spark { vertical-align: middle; }
 #stamp { color: #aab; }
</style></head>
<body>
<header><h1 id="engine">orchestrator</h1><span id="oms"></span><span id="counts"></span><span id="stamp">loading</span>
</header>
<main>
 <section><h2>Strategies</h2><table id="strategies"><thead><tr><th>strategy</th><th>state</th><th>reason</th>
  <th>version</th><th>position</th><th>net P&amp;L</th><th>P&amp;L</th><th>orders</th><th>fills</th><th>rejects</th>
  </tr></thead><tbody></tbody></table></section>
 <div class="row2">
  <section><h2>Rejects by reason</h2><table id="rejects"><tbody></tbody></table></section>
  <section><h2>Latency <span style="text-transform: none">(&micro;s)</span></h2>
   <table id="latency"><thead><tr><th>strategy</th><th>signal&rarr;order p50</th>
   <th>p99</th><th>p99.9</th><th>signal&rarr;fill p50</th><th>p99</th></tr></thead><tbody></tbody></table></section>
 </div>
 <section><h2>Alerts</h2><table id="alerts"><tbody></tbody></table></section>
 <section><h2>Execution quality</h2><table id="quality"><thead><tr><th>strategy</th><th>instrument</th>
  <th>fill ratio</th><th>cancel ratio</th><th>arrival slip. bps</th><th>shortfall bps</th><th>markouts bps</th></tr>
  </thead><tbody></tbody></table></section>
</main>
<script>
"use strict";
const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const fmt = (v, d) => (v === undefined || v === null) ? "" : Number(v).toLocaleString("en-US",
  {minimumFractionDigits: d === undefined ? 2 : d, maximumFractionDigits: d === undefined ? 2 : d});
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; return td; }
function fill(id, rows) { const body = document.querySelector("#" + id + " tbody"); body.replaceChildren(...rows); }
function spark(values) {
  const w = 120, h = 24, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg"); svg.setAttribute("class", "spark");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  if (values.length > 1) {
    const lo = Math.min(...values), hi = Math.max(...values), span = (hi - lo) || 1;
    const pts = values.map((v, k) => (k * w / (values.length - 1)).toFixed(1) + "," +
                                     (h - 2 - (v - lo) * (h - 4) / span).toFixed(1)).join(" ");
    const line = document.createElementNS(ns, "polyline"); line.setAttribute("points", pts);
    line.setAttribute("fill", "none"); line.setAttribute("stroke-width", "1.5");
    line.setAttribute("stroke", values[values.length - 1] >= 0 ? "#167a2c" : "#b3261e"); svg.appendChild(line);
  }
  const td = document.createElement("td"); td.appendChild(svg); return td;
}
function render(v) {
  document.getElementById("engine").textContent = "orchestrator: " + v.engine;
  const oms = document.getElementById("oms");
  oms.textContent = v.oms_up === false ? "OMS DOWN" : "OMS up"; oms.className = v.oms_up === false ? "down" : "ok";
  const c = v.counters;
  document.getElementById("counts").textContent = "signals " + fmt(c.signals, 0) + "  orders " + fmt(c.orders, 0) +
    "  fills " + fmt(c.fills, 0) + "  rejects " + fmt(c.rejects, 0) + "  bad input " + fmt(c.bad_input, 0);
  document.getElementById("stamp").textContent = "as of " + new Date(v.taken_ns / 1e6).toISOString();
  fill("strategies", v.strategies.map(s => { const tr = document.createElement("tr");
    const pos = Object.entries(s.position).map(([k, q]) => k + " " + (q > 0 ? "+" : "") + q).join(", ") || "flat";
    tr.append(cell(s.name), cell(s.state, s.state), cell(s.reason), cell(s.version + " #" + s.deploy), cell(pos),
      cell(fmt(s.pnl.net), "n " + (s.pnl.net < 0 ? "neg" : "pos")), spark(s.sparkline), cell(fmt(s.orders, 0), "n"),
      cell(fmt(s.fills, 0), "n"), cell(fmt(s.rejects, 0), "n")); return tr; }));
  const reasons = Object.entries(v.rejects_by_reason);
  fill("rejects", reasons.length ? reasons.map(([r, n]) => { const tr = document.createElement("tr");
    tr.append(cell(r), cell(fmt(n, 0), "n")); return tr; }) : [(() => { const tr = document.createElement("tr");
    tr.append(cell("no rejects")); return tr; })()]);
  fill("latency", v.strategies.filter(s => s.latency_us.signal_to_order).map(s => {
    const l = s.latency_us, tr = document.createElement("tr");
    tr.append(cell(s.name), cell(fmt(l.signal_to_order.p50, 1), "n"), cell(fmt(l.signal_to_order.p99, 1), "n"),
      cell(fmt(l.signal_to_order["p99.9"], 1), "n"), cell(fmt(l.signal_to_fill.p50, 1), "n"),
      cell(fmt(l.signal_to_fill.p99, 1), "n")); return tr; }));
  const alerts = v.alerts.active.map(a => ["firing", a]).concat(
    v.alerts.recent.filter(n => n.status === "resolved").slice(0, 10).map(n => ["resolved", n]));
  fill("alerts", alerts.length ? alerts.map(([status, a]) => { const tr = document.createElement("tr");
    tr.append(cell(status, status === "firing" ? a.severity : ""), cell(a.severity, a.severity), cell(a.alert),
      cell(a.summary), cell(a.started_at)); return tr; }) : [(() => { const tr = document.createElement("tr");
    tr.append(cell("no alerts")); return tr; })()]);
  fill("quality", v.quality.map(q => { const tr = document.createElement("tr");
    tr.append(cell(q.strategy), cell(q.instrument), cell(fmt(q.fill_ratio, 3), "n"), cell(fmt(q.cancel_ratio, 3), "n"),
      cell(fmt(q.arrival_slippage_bps), "n"), cell(fmt(q.shortfall_bps), "n"),
      cell(Object.entries(q.markouts_bps).map(([h, b]) => h + " " + fmt(b)).join("  "))); return tr; }));
  return v.refresh_ms;
}
async function poll() {
  let wait = 1000;
  try { const r = await fetch(base + "api/view", {cache: "no-store"});
        if (r.ok) { wait = render(await r.json()); }
        else { document.getElementById("stamp").textContent = "engine answered " + r.status; } }
  catch (e) { document.getElementById("stamp").textContent = "engine unreachable"; }
  setTimeout(poll, wait);
}
poll();
</script>
</body></html>
"""
