"""End to end over loopback with real processes: signal frame sent -> order frame received at the OMS.

For each engine (`orchestrator`: the CLI `orchestrator run`; `plain`: bench/plain_python.py), transport (udp, tcp;
aeron kept as a slot, not run yet) and driver (spin, event; the plain engine has only asyncio), one group:
  1. the bench OMS receiver (bench/oms_receiver.py) listens: it is the OMS the engine connects to (oms kind tcp);
  2. the engine starts on a copy of bench/config whose [listen] and [oms] name free ports and whose driver is the
     one under test, and is warmed up with a short load until its orders reach the receiver;
  3. for each rate (signals/s; 0 = saturation) the open-loop load generator (bench/loadgen.py) runs for the
     duration with its own source id, then the harness waits for the orders to drain;
  4. the engine is stopped with SIGINT (its final JSON report is kept), the receiver saves what it stamped.
Latency per run = receive time - the signal's intended send time (its ts_ns, which the order carries back as
signal_ts_ns): coordinated-omission free (see bench/loadgen.py). Also reported: latency from the actual send, the
sender's lag, achieved throughput, and signals lost (sent, never answered by an order).

Three processes share this 2-core machine: figures are what the machine allows, and a saturation run measures
the slowest of sender, engine and receiver (the report says which ran out of CPU where it can tell).
"""
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench import CONFIG_DIR, ROOT, hist

TRANSPORTS = {  # transport -> what the load generator sends (None: a slot, not run)
    "udp": "one signal per datagram (UdpReceiver)",
    "tcp": "frames back to back on one connection (TcpServer)",
    # issue 4: the engine side exists (adapters/aeron.py, engine.toml [listen] aeron / [oms] kind "aeron"); the slot
    # needs a pyaeron publisher in bench/loadgen.py, a subscriber/publisher pair in bench/oms_receiver.py and the
    # media-driver settings in write_config. Until then the report lists it as not run.
    "aeron": None,
}
DRIVERS = {"orchestrator": ("spin", "event"), "plain": ("asyncio",)}
DEFAULT_RATES = (10_000, 100_000, 500_000, 0)
MAX_SOURCES = 16  # bench/config engine.toml `sources`: source 0 warms up, runs take 1, 2, ...
PLAIN_RATES = (10_000, 0)


@dataclass
class Run:
    """The figures of one (engine, transport, driver, rate) run."""
    engine: str
    transport: str
    driver: str
    rate: int                      # target signals/s; 0 = saturation
    duration_s: float
    source: int
    sent: int = 0
    received: int = 0
    lost: int = 0
    achieved_send_rate: float = 0.0
    throughput: float = 0.0        # orders received per second over the run's window
    latency_ns: dict = field(default_factory=dict)       # from the intended send time (CO-corrected)
    latency_sent_ns: dict = field(default_factory=dict)  # from the actual send time
    sender_lag_us: dict = field(default_factory=dict)
    histogram: str = ""
    curve: tuple = ((), ())
    note: str = ""

    @property
    def label(self):
        rate = "saturation" if self.rate == 0 else f"{self.rate // 1000}k/s"
        return f"{self.engine} {self.transport} {self.driver} {rate}"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(directory, driver, udp_port, tcp_port, oms_port):
    """A copy of bench/config listening on the given ports, OMS over TCP at oms_port, with `driver`."""
    shutil.copytree(CONFIG_DIR, directory, dirs_exist_ok=True)
    engine = Path(directory) / "engine.toml"
    lines = []
    section = None
    for line in engine.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else None
        if section is None and key == "driver":
            line = f'driver = "{driver if driver in ("spin", "event") else "event"}"'
        elif section == "[listen]" and key == "udp":
            line = f'udp = {{ host = "127.0.0.1", port = {udp_port} }}'
        elif section == "[listen]" and key == "tcp":
            line = f'tcp = {{ host = "127.0.0.1", port = {tcp_port} }}'
        elif section == "[oms]" and key == "tcp":
            line = f'tcp = {{ host = "127.0.0.1", port = {oms_port} }}'
        elif section == "[oms]" and key == "kind":
            line = 'kind = "tcp"'
        lines.append(line)
    engine.write_text("\n".join(lines) + "\n")
    return directory


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Proc:
    """A child process whose stdout lines are read by a thread into a queue (and kept)."""

    def __init__(self, name, argv, pin=None):
        self.name = name
        self.lines = queue.Queue()
        self.stdout = []
        self.p = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        if pin:
            os.sched_setaffinity(self.p.pid, pin)
        self._threads = [threading.Thread(target=self._read, args=(self.p.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.p.stderr, False), daemon=True)]
        self.stderr = []
        for t in self._threads:
            t.start()

    def _read(self, stream, is_stdout):
        for line in stream:
            (self.stdout if is_stdout else self.stderr).append(line)
            if is_stdout:
                self.lines.put(line)
        stream.close()

    def wait_line(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None and self.lines.empty():
                break
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line
        raise RuntimeError(f"{self.name}: no '{prefix}' line in {timeout}s; exit {self.p.poll()}; "
                           f"stderr: {''.join(self.stderr)[-2000:]}")

    def stop(self, sig=signal.SIGINT, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        for t in self._threads:
            t.join(timeout=5)
        return self.p.returncode


class ReceiverCount:
    """The receiver's running order count, from its `orders N` lines."""

    def __init__(self, proc):
        self.proc, self.count, self.changed = proc, 0, time.monotonic()

    def update(self):
        while True:
            try:
                line = self.proc.lines.get_nowait()
            except queue.Empty:
                return self.count
            if line.startswith("orders "):
                n = int(line.split()[1])
                if n != self.count:
                    self.count, self.changed = n, time.monotonic()

    def wait_for(self, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.update() >= n:
                return True
            time.sleep(0.02)
        return False

    def wait_quiet(self, expected=None, quiet_s=1.0, timeout=5.0):
        """Until `expected` orders arrived, or none arrived for quiet_s (the engine drained what it could)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.update()
            if expected is not None and self.count >= expected:
                return
            if time.monotonic() - self.changed >= quiet_s:
                return
            time.sleep(0.02)


def _python():
    return sys.executable


def engine_argv(kind, config_dir, driver, udp_port, tcp_port, oms_port):
    if kind == "plain":
        return [_python(), "-m", "bench.plain_python", str(config_dir), "--udp", f"127.0.0.1:{udp_port}",
                "--tcp", f"127.0.0.1:{tcp_port}", "--oms", f"127.0.0.1:{oms_port}"]
    script = Path(sys.executable).parent / "orchestrator"
    prefix = [str(script)] if script.exists() else [_python(), "-m", "engine.cli"]
    return prefix + ["run", str(config_dir), "--driver", driver, "--json", "--quiet"]


def loadgen(transport, port, rate, duration, source, out, frames_per_datagram=1, pin=None):
    argv = [_python(), "-m", "bench.loadgen", "--transport", transport, "--port", str(port), "--rate", str(rate),
            "--duration", str(duration), "--source", str(source), "--out", str(out),
            "--frames-per-datagram", str(frames_per_datagram)]
    proc = Proc(f"loadgen {transport} {rate}", argv, pin)
    code = proc.p.wait(timeout=duration + 120)
    proc.stop()
    if code != 0:
        raise RuntimeError(f"loadgen failed ({code}): {''.join(proc.stderr)[-2000:]}")
    return json.loads(proc.stdout[-1])


def run_group(engine, transport, driver, rates, duration, out_dir, log=print, receiver_mode="fast",
              receiver_spin=False, pin=False):
    """One engine process, one transport, one driver; every rate in turn. Returns [Run], engine report."""
    out_dir = Path(out_dir)
    tag = f"{engine}-{transport}-{driver}"
    if len(rates) >= MAX_SOURCES:
        raise ValueError(f"at most {MAX_SOURCES - 1} rates per group: each run needs its own source id")
    udp_port, tcp_port, oms_port = free_port(socket.SOCK_DGRAM), free_port(), free_port()
    cpus = sorted(os.sched_getaffinity(0))
    engine_cpu = {cpus[-1]} if pin and len(cpus) > 1 else None
    other_cpus = set(cpus[:-1]) if pin and len(cpus) > 1 else None
    recv_file = out_dir / f"recv-{tag}.npz"
    recv_argv = [_python(), "-m", "bench.oms_receiver", "--port", str(oms_port), "--out", str(recv_file),
                 "--mode", receiver_mode] + (["--spin"] if receiver_spin else [])
    receiver = Proc("receiver", recv_argv, other_cpus)
    engine_proc = None
    runs, report = [], None
    with tempfile.TemporaryDirectory(prefix="bench-config-") as tmp:
        try:
            receiver.wait_line("ready", 30)
            config_dir = write_config(Path(tmp) / "config", driver, udp_port, tcp_port, oms_port)
            engine_proc = Proc(engine, engine_argv(engine, config_dir, driver, udp_port, tcp_port, oms_port),
                               engine_cpu)
            count = ReceiverCount(receiver)
            port = udp_port if transport == "udp" else tcp_port
            # warm up: until orders come back (the first start may compile kernels: give it time)
            deadline = time.monotonic() + 180
            while not count.wait_for(1, 0.5):
                if engine_proc.p.poll() is not None:
                    raise RuntimeError(f"{engine} exited ({engine_proc.p.returncode}): "
                                       f"{''.join(engine_proc.stderr)[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{engine}: no order reached the receiver in 180 s")
                try:
                    loadgen(transport, port, 2_000, 0.2, 0, out_dir / f"warmup-{tag}.npz")
                except RuntimeError:
                    time.sleep(0.5)  # not listening yet (TCP refused)
            count.wait_quiet()
            for k, rate in enumerate(rates):
                source = k + 1
                send_file = out_dir / f"send-{tag}-{source}.npz"
                log(f"  {tag}: {'saturation' if rate == 0 else f'{rate:,}/s'} for {duration}s ...")
                before = count.update()
                summary = loadgen(transport, port, rate, duration, source, send_file, pin=other_cpus)
                count.wait_quiet(before + summary["sent"])
                runs.append((rate, source, send_file, summary))
        finally:
            if engine_proc is not None:
                engine_proc.stop(signal.SIGINT)
                out = "".join(engine_proc.stdout).strip()
                try:
                    report = json.loads(out[out.index("{"):]) if "{" in out else None
                except ValueError:
                    report = None
            receiver.stop(signal.SIGTERM)
    recv = np.load(recv_file)
    results = [analyse(engine, transport, driver, rate, duration, source, send_file, summary, recv)
               for rate, source, send_file, summary in runs]
    for f in [recv_file, out_dir / f"warmup-{tag}.npz"] + [r[2] for r in runs]:
        try:
            f.unlink()
        except FileNotFoundError:
            pass
    return results, report


def analyse(engine, transport, driver, rate, duration, source, send_file, summary, recv):
    sent = np.load(send_file)
    mask = recv["source"] == source
    seq = recv["seq"][mask].astype(np.int64)
    recv_ns = recv["recv_ns"][mask]
    ts_ns = recv["ts_ns"][mask]
    intended, sent_ns = sent["intended_ns"], sent["sent_ns"]
    run = Run(engine, transport, driver, int(rate), duration, source)
    run.sent = int(len(intended))
    run.received = int(len(seq))
    run.lost = max(0, run.sent - run.received)
    run.achieved_send_rate = float(summary.get("achieved_rate", 0.0))
    run.sender_lag_us = summary.get("lag_us", {})
    if run.received:
        lat = recv_ns - ts_ns  # ts_ns is the intended send time
        h = hist.of(lat)
        run.latency_ns = hist.summary(h)
        run.histogram = hist.encode(h)
        run.curve = hist.curve(h)
        ok = (seq >= 1) & (seq <= len(sent_ns))
        run.latency_sent_ns = hist.summary(hist.of(recv_ns[ok] - sent_ns[seq[ok] - 1]))
        window = (recv_ns.max() - intended.min()) / 1e9
        run.throughput = run.received / window if window > 0 else 0.0
    if run.lost:
        run.note = f"{run.lost:,} signals without an order ({run.lost / max(run.sent, 1):.1%})"
    return run


def run_all(out_dir, engines=("orchestrator", "plain"), transports=("udp", "tcp"), drivers=None, rates=None,
            plain_rates=None, duration=3.0, log=print, **kw):
    """Every group; returns (runs as dicts, engine reports by group, skipped slots)."""
    runs, reports, skipped = [], {}, []
    for transport in transports:
        if TRANSPORTS.get(transport) is None:
            skipped.append(f"{transport}: the harness has no {transport} sender/receiver yet (slot in bench/e2e.py)")
            continue
        for engine in engines:
            for driver in DRIVERS[engine]:
                if drivers and engine == "orchestrator" and driver not in drivers:
                    continue
                group_rates = (plain_rates or PLAIN_RATES) if engine == "plain" else (rates or DEFAULT_RATES)
                log(f"e2e {engine} over {transport}, driver {driver}")
                try:
                    results, report = run_group(engine, transport, driver, group_rates, duration, out_dir, log, **kw)
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    log(f"  FAILED: {e}")
                    skipped.append(f"{engine} {transport} {driver}: {str(e).splitlines()[0][:200]}")
                    continue
                runs.extend(results)
                reports[f"{engine}-{transport}-{driver}"] = _trim_report(report)
                for r in results:
                    lat = r.latency_ns
                    log(f"    {r.label}: sent {r.sent:,} recv {r.received:,} thr {r.throughput:,.0f}/s "
                        f"p50 {lat.get('p50', 0) / 1e3:.1f} us p99 {lat.get('p99', 0) / 1e3:.1f} us "
                        f"p99.9 {lat.get('p99.9', 0) / 1e3:.1f} us max {lat.get('max', 0) / 1e3:.1f} us")
    return [asdict(r) for r in runs], reports, skipped


def _trim_report(report):
    """What the results keep of an engine's final report: its counters and link stats."""
    if not report:
        return None
    keep = ("engine", "seconds", "signals_per_second", "counters", "oms", "transports", "signal_to_order_us")
    report = dict(report)
    if "strategies" in report:
        report["rejects_by_reason"] = {}
        for s in report["strategies"].values():
            rejects = s.get("rejects")
            for k, v in (rejects.get("by_reason", {}) if isinstance(rejects, dict) else {}).items():
                report["rejects_by_reason"][k] = report["rejects_by_reason"].get(k, 0) + v
    keep += ("rejects_by_reason",)
    return {k: report[k] for k in keep if k in report}
