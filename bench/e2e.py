"""End to end over loopback with real processes: signal frame sent -> order frame received at the OMS, and the
same path with no engine (the floor), in the same run, so every figure is also a ratio to what the machine allows.

For each transport (udp, tcp, aeron) the floor (bench/floor.py) runs first, then each engine
(`orchestrator`: the CLI `orchestrator run`, drivers spin and event; `plain`: bench/plain_python.py) as one group:
  1. the peer (bench/peer.py: the load generator and the OMS receiver in one busy loop) listens for the OMS link;
  2. the engine starts on a copy of bench/config whose [listen] and [oms] name free ports, pinned (below), and is
     warmed up with a short load until its orders reach the peer;
  3. for each rate (signals/s; 0 = saturation) the peer runs the open-loop load for the duration with its own
     source id, answering every order, then drains; a Monitor (bench/placement.py) records where every process
     ran, the machine's load and what else ran meanwhile; a run the rest of the machine disturbed is run again
     (up to `retries` times) and the least disturbed attempt kept;
  4. the engine is stopped with SIGINT (its final JSON report is kept).
Latency per run = receive time - the signal's intended send time (its ts_ns, which the order carries back as
signal_ts_ns): coordinated-omission free (bench/loadgen.py). Also: latency from the actual send, the sender's
lag, throughput, signals lost, and per run the floor's figures at the same transport and rate and the ratios.

Placement (`pinned`, the default; bench/placement.py): the engine alone on the last core (`--cpu` for the spin
driver, and the process's affinity), the peer and this harness on the others. On 2 cores that is one spinning
process per core: the engine's and the peer's. `--peer split` runs the load generator and the receiver as two
processes on the peer's core instead (both spinning: warned); `--placement unpinned` lets the scheduler choose.
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
from bench.placement import OTHERS_WARN, WAIT_WARN, Monitor, cores_for, udp_drops

TRANSPORTS = {  # transport -> what the load generator sends (None: a slot, not run)
    "udp": "one signal per datagram (UdpReceiver)",
    "tcp": "frames back to back on one connection (TcpServer)",
    "aeron": "one message per pass on aeron:ipc (AeronReceiver; OMS link AeronClient), the harness's media driver",
}
DRIVERS = {"orchestrator": ("spin", "event"), "plain": ("asyncio",), "floor": ("spin",)}
# Over Aeron only the spin driver (the event driver polls Aeron on a 1 ms timer: adapters/aeron.py) and the floor;
# the plain-Python reference has no Aeron adapter.
AERON_DRIVERS = {"orchestrator": ("spin",), "floor": ("spin",)}
SPINNING = {("orchestrator", "spin"), ("floor", "spin")}
DEFAULT_RATES = (10_000, 100_000, 500_000, 0)
MAX_SOURCES = 16  # bench/config engine.toml `sources`: source 0 warms up, runs take 1, 2, ...
PLAIN_RATES = (10_000, 0)
RETRIES = 2       # a run disturbed by the rest of the machine is run again, up to this many times
BUSY_WARN = 0.85  # a peer side busy this share of a run is (near) saturated: the harness, not the engine, set the pace
LAG_WARN_US = 50.0


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
    floor: dict = field(default_factory=dict)            # the floor run at this transport and rate: its figures
    vs_floor: dict = field(default_factory=dict)         # this run / the floor: p50, p99, p99.9, throughput
    peer: dict = field(default_factory=dict)             # the peer's summary: busy shares, blocked sends, reads
    placement: dict = field(default_factory=dict)        # bench/placement.Monitor.stop()
    udp_kernel_drops: int | None = None
    other_attempts: list = field(default_factory=list)   # attempts disturbed by the machine and not kept
    bottleneck: str = ""
    warnings: list = field(default_factory=list)
    note: str = ""

    @property
    def label(self):
        rate = "saturation" if self.rate == 0 else f"{self.rate // 1000}k/s"
        return f"{self.engine} {self.transport} {self.driver} {rate}"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(directory, driver, udp_port, tcp_port, oms_port, aeron_dir=None):
    """A copy of bench/config listening on the given ports, OMS over TCP at oms_port, with `driver`; with
    `aeron_dir`, also listening on the [aeron] signals stream and the OMS over Aeron, the media driver the harness
    started in aeron_dir (driver = "external")."""
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
            line = f'kind = "{"aeron" if aeron_dir else "tcp"}"'
        lines.append(line)
        if stripped == "[listen]" and aeron_dir:
            lines.append("aeron = true")
    if aeron_dir:
        lines += ["", "[aeron]", 'driver = "external"', f'directory = "{aeron_dir}"']
    engine.write_text("\n".join(lines) + "\n")
    return directory


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Proc:
    """A child process whose stdout and stderr lines are read by threads (stdout lines also into a queue)."""

    def __init__(self, name, argv, pin=None, stdin=False):
        self.name = name
        self.lines = queue.Queue()
        self.stdout, self.stderr = [], []
        self.p = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True)
        if pin:  # before the child starts any thread: every thread it starts inherits this
            os.sched_setaffinity(self.p.pid, pin)
        self._threads = [threading.Thread(target=self._read, args=(self.p.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.p.stderr, False), daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def pid(self):
        return self.p.pid

    def _read(self, stream, is_stdout):
        for line in stream:
            (self.stdout if is_stdout else self.stderr).append(line)
            if is_stdout:
                self.lines.put(line)
        stream.close()

    def _fail(self, what, timeout):
        raise RuntimeError(f"{self.name}: no {what} in {timeout:g}s; exit {self.p.poll()}; "
                           f"stderr: {''.join(self.stderr)[-2000:]}")

    def wait_line(self, prefix, timeout, stream="stdout"):
        deadline = time.monotonic() + timeout
        if stream == "stderr":
            while time.monotonic() < deadline:
                for line in list(self.stderr):
                    if line.startswith(prefix):
                        return line
                if self.p.poll() is not None:
                    break
                time.sleep(0.02)
            self._fail(f"'{prefix}' line", timeout)
        while time.monotonic() < deadline:
            if self.p.poll() is not None and self.lines.empty():
                break
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line
        self._fail(f"'{prefix}' line", timeout)

    def ask(self, command, timeout):
        """Send one JSON command line; return the JSON answer line."""
        self.p.stdin.write(json.dumps(command) + "\n")
        self.p.stdin.flush()
        reply = json.loads(self.wait_line("{", timeout))
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply

    def stop(self, sig=signal.SIGINT, timeout=30):
        if self.p.poll() is None:
            try:
                if self.p.stdin:
                    self.p.stdin.close()
            except OSError:
                pass
            self.p.send_signal(sig)
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        for t in self._threads:
            t.join(timeout=5)
        return self.p.returncode


def _python():
    return sys.executable


def engine_argv(kind, config_dir, driver, udp_port, tcp_port, oms_port, transport="udp", cpu=None, ready_file=None,
                aeron_dir=None):
    if kind == "plain":
        return [_python(), "-m", "bench.plain_python", str(config_dir), "--udp", f"127.0.0.1:{udp_port}",
                "--tcp", f"127.0.0.1:{tcp_port}", "--oms", f"127.0.0.1:{oms_port}"]
    if kind == "floor" and transport == "aeron":
        return [_python(), "-m", "bench.aeron_peer", "floor", "--dir", str(aeron_dir)]
    if kind == "floor":
        return [_python(), "-m", "bench.floor", "--transport", transport,
                "--port", str(udp_port if transport == "udp" else tcp_port), "--oms-port", str(oms_port)]
    script = Path(sys.executable).parent / "orchestrator"
    prefix = [str(script)] if script.exists() else [_python(), "-m", "engine.cli"]
    argv = prefix + ["run", str(config_dir), "--driver", driver, "--json", "--quiet"]
    if cpu is not None and driver == "spin":
        argv += ["--cpu", str(cpu)]
    if ready_file:
        argv += ["--ready-file", str(ready_file)]
    return argv


class Peer:
    """The peer process(es): `one` (load generator and receiver in one process) or `split` (two processes)."""

    def __init__(self, mode, pin, wait, loop="compiled", aeron_dir=None):
        self.mode, self.wait = mode, wait
        base = [_python(), "-m", "bench.peer", "--wait", wait, "--loop", loop]
        if aeron_dir:
            base += ["--aeron", str(aeron_dir)]
        if mode == "split":
            self.rx = Proc("receiver", base + ["--role", "recv"], pin, stdin=True)
            self.tx = Proc("loadgen", base + ["--role", "send"], pin, stdin=True)
            self.tx.wait_line("ready", 60)
        else:
            self.rx = self.tx = Proc("peer", base, pin, stdin=True)
        self.port = int(self.rx.wait_line("ready", 60).split()[1])

    def processes(self):
        spinning = self.wait == "spin"
        if self.mode == "split":
            return {"loadgen": (self.tx.pid, spinning), "receiver": (self.rx.pid, spinning)}
        return {"peer": (self.rx.pid, spinning)}

    def run(self, transport, port, rate, duration, source, out, quiet_s=1.0, seq_base=0):
        cmd = {"cmd": "run", "transport": transport, "port": port, "rate": rate, "duration": duration,
               "source": source, "out": str(out) if out else None, "quiet_s": quiet_s, "seq_base": seq_base}
        timeout = duration + 120
        if self.mode != "split":
            return self.tx.ask(cmd, timeout)
        summary = self.tx.ask(cmd, timeout)
        rx_out = Path(str(out) + ".rx.npz") if out else None
        got = self.rx.ask({"cmd": "collect", "expected": summary["sent"], "quiet_s": quiet_s, "source": source,
                           "out": str(rx_out) if rx_out else None}, timeout)
        summary.update({"received": got["received"], "receiver": got["receiver"], "drain_s": got["drain_s"],
                        "recv_busy": None})
        if out:
            with np.load(out) as a, np.load(rx_out) as b:
                np.savez(out, **{k: a[k] for k in a.files}, **{k: b[k] for k in b.files if k.startswith("rx_")})
            rx_out.unlink()
        return summary

    def stop(self):
        for p in {id(self.rx): self.rx, id(self.tx): self.tx}.values():
            try:
                p.p.stdin.write('{"cmd": "quit"}\n')
                p.p.stdin.flush()
            except OSError:
                pass
            p.stop(signal.SIGTERM, timeout=10)


def _wait_ready_file(path, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if proc.p.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name}: not ready in {timeout:g}s; exit {proc.p.poll()}; "
                       f"stderr: {''.join(proc.stderr)[-3000:]}")


def run_group(engine, transport, driver, rates, duration, out_dir, log=print, placement="pinned", peer="one",
              wait="spin", loop="compiled", retries=RETRIES):
    """One engine process, one transport, one driver; every rate in turn, each run again (up to `retries` times)
    while the rest of the machine disturbed it (bench/placement.py's thresholds). Returns [Run], engine report."""
    out_dir = Path(out_dir)
    tag = f"{engine}-{transport}-{driver}"
    if len(rates) >= MAX_SOURCES:
        raise ValueError(f"at most {MAX_SOURCES - 1} rates per group: each run needs its own source id")
    retries = min(retries, (MAX_SOURCES - 1) // len(rates) - 1)
    if peer == "split" or placement == "unpinned":  # our own processes share cores there: retrying cannot help
        retries = 0
    engine_cpus, peer_cpus = cores_for(placement)
    udp_port, tcp_port = free_port(socket.SOCK_DGRAM), free_port()
    harness_affinity = os.sched_getaffinity(0)
    if peer_cpus:
        os.sched_setaffinity(0, peer_cpus)  # this process wakes now and then: never on the engine's core
    peers = engine_proc = media_driver = None
    runs, report = [], None
    with tempfile.TemporaryDirectory(prefix="bench-config-") as tmp:
        try:
            aeron_dir = None
            if transport == "aeron":  # the media driver every process of the group is a client of, on the peer's core
                aeron_dir = Path(tmp) / "aeron"
                media_driver = Proc("aeron driver", [_python(), "-m", "bench.aeron_peer", "driver", "--dir",
                                                     str(aeron_dir)], peer_cpus)
                media_driver.wait_line("ready", 60)
            peers = Peer(peer, peer_cpus, wait, loop, aeron_dir)
            config_dir = write_config(Path(tmp) / "config", driver, udp_port, tcp_port, peers.port, aeron_dir)
            ready = Path(tmp) / "ready.json"
            cpu = min(engine_cpus) if engine_cpus else None
            engine_proc = Proc(engine, engine_argv(engine, config_dir, driver, udp_port, tcp_port, peers.port,
                                                   transport, cpu, ready if engine == "orchestrator" else None,
                                                   aeron_dir), engine_cpus)
            if engine == "orchestrator":
                _wait_ready_file(ready, engine_proc, 180)  # the first start may compile the kernels
            else:
                engine_proc.wait_line("ready" if engine == "floor" else "plain-python", 60, stream="stderr")
            port = udp_port if transport == "udp" else tcp_port
            deadline, warm = time.monotonic() + 60, 0
            while peers.run(transport, port, 2_000, 0.2, 0, None, quiet_s=0.5, seq_base=warm)["received"] == 0:
                warm += 1_000  # source 0 again: its seqs must keep rising, or the engine drops them as duplicates
                if engine_proc.p.poll() is not None:
                    raise RuntimeError(f"{engine} exited ({engine_proc.p.returncode}): "
                                       f"{''.join(engine_proc.stderr)[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{engine}: no order reached the receiver in 60 s of warm-up")
                time.sleep(0.2)
            procs = {"engine" if engine != "floor" else "floor": (engine_proc.pid, (engine, driver) in SPINNING),
                     **peers.processes()}
            if media_driver is not None:
                procs["aeron driver"] = (media_driver.pid, False)  # Aeron's backoff: it parks when idle
            source = 0
            for rate in rates:
                attempts = []
                for attempt in range(retries + 1):
                    source += 1
                    if source >= MAX_SOURCES:
                        break
                    send_file = out_dir / f"run-{tag}-{source}.npz"
                    log(f"  {tag}: {'saturation' if rate == 0 else f'{rate:,}/s'} for {duration}s"
                        f"{f' (again: attempt {attempt + 1})' if attempt else ''} ...")
                    drops0 = udp_drops(udp_port) if transport == "udp" else None
                    monitor = Monitor(procs).start()
                    # after a saturation run, seconds of signals still sit in the socket buffers: a longer quiet
                    summary = peers.run(transport, port, rate, duration, source, send_file,
                                        quiet_s=2.0 if rate == 0 else 1.0)
                    where = monitor.stop()
                    drops1 = udp_drops(udp_port) if transport == "udp" else None
                    drops = drops1 - drops0 if drops0 is not None and drops1 is not None else None
                    attempts.append((rate, source, send_file, summary, where, drops))
                    why = disturbed(where)
                    if not why:
                        break
                    log(f"    disturbed: {why}")
                # keep the least disturbed attempt; the others are summarised beside it
                keep = min(attempts, key=lambda a: _disturbance(a[4]))
                others = [{"source": a[1], "disturbed": disturbed(a[4]) or "no",
                           "others_share": a[4].get("others_share"),
                           "max_wait_share": _disturbance(a[4])} for a in attempts if a is not keep]
                runs.append((*keep, others))
                for a in attempts:
                    if a is not keep:
                        a[2].unlink(missing_ok=True)
        finally:
            if engine_proc is not None:
                engine_proc.stop(signal.SIGINT)
                out = "".join(engine_proc.stdout).strip()
                try:
                    report = json.loads(out[out.index("{"):]) if "{" in out else None
                except ValueError:
                    report = None
            if peers is not None:
                peers.stop()
            if media_driver is not None:
                media_driver.stop(signal.SIGTERM)
            os.sched_setaffinity(0, harness_affinity)
    results = []
    for rate, source, send_file, summary, where, drops, others in runs:
        r = analyse(engine, transport, driver, rate, duration, source, send_file, summary, where, drops)
        r.other_attempts = others
        if others:
            r.note = "; ".join(x for x in (r.note, f"kept the least disturbed of {len(others) + 1} attempts") if x)
        results.append(r)
        send_file.unlink(missing_ok=True)
    return results, report


def _disturbance(placement):
    """How much the machine took from a run: the largest run-queue wait share of a watched process, or the share
    of the machine other processes used, whichever is worse (relative to its warning threshold)."""
    procs = (placement.get("processes") or {}).values()
    wait = max((p["wait_share"] for p in procs), default=0.0)
    return max(wait / WAIT_WARN, (placement.get("others_share") or 0.0) / OTHERS_WARN)


def disturbed(placement):
    """Why a run was disturbed by the rest of the machine ('' if it was not)."""
    procs = placement.get("processes") or {}
    why = [f"{name} waited {p['wait_share']:.1%} for its CPU" for name, p in procs.items()
           if p["wait_share"] >= WAIT_WARN]
    if (placement.get("others_share") or 0.0) >= OTHERS_WARN:
        why.append(f"other processes used {placement['others_share']:.0%} of the machine")
    return ", ".join(why)


def analyse(engine, transport, driver, rate, duration, source, send_file, summary, placement=None, drops=None):
    with np.load(send_file) as d:
        intended, sent_ns = d["intended_ns"], d["sent_ns"]
        mask = d["rx_source"] == source
        seq = d["rx_seq"][mask].astype(np.int64)
        recv_ns = d["rx_recv_ns"][mask]
        ts_ns = d["rx_ts_ns"][mask]
    run = Run(engine, transport, driver, int(rate), duration, source)
    run.sent = int(len(intended))
    run.received = int(len(seq))
    run.lost = max(0, run.sent - run.received)
    run.achieved_send_rate = float(summary.get("achieved_rate", 0.0))
    run.sender_lag_us = summary.get("lag_us", {})
    run.peer = {k: summary.get(k) for k in ("send_busy", "recv_busy", "blocked", "partial", "send_errors", "passes",
                                            "sendmmsg", "wait", "loop", "drain_s", "affinity", "receiver")}
    run.placement = placement or {}
    run.udp_kernel_drops = drops
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
    run.warnings = list(run.placement.get("warnings", [])) + harness_warnings(run)
    run.bottleneck = bottleneck(run)
    return run


def harness_warnings(run):
    """Where the load generator or the receiver, not the engine, may have set the pace of a run."""
    out = []
    p = run.peer
    send, recv = p.get("send_busy") or 0.0, p.get("recv_busy") or 0.0
    if run.sent and not run.received:
        out.append("no order came back for this run's signals (see the engine's report: its OMS link, rejects)")
    if run.rate and run.achieved_send_rate < 0.98 * run.rate:
        out.append(f"the load generator offered {run.achieved_send_rate:,.0f}/s of {run.rate:,}/s")
    if run.rate and run.sender_lag_us.get("p99", 0) > LAG_WARN_US:
        out.append(f"the load generator was late: lag p99 {run.sender_lag_us['p99']:,.1f} us (counted as latency)")
    if run.rate and send + recv >= BUSY_WARN:
        out.append(f"the peer was busy {send + recv:.0%} of the run (sending {send:.0%}, answering {recv:.0%}): "
                   "saturated")
    if not run.rate and recv >= BUSY_WARN:
        out.append(f"the receiver was busy {recv:.0%} of the saturation run: it may have set the pace")
    return out


def bottleneck(run):
    """For a saturation run: who set the pace, as far as the counters tell."""
    if run.rate:
        return ""
    p = run.peer
    send, recv = p.get("send_busy") or 0.0, p.get("recv_busy") or 0.0
    offered = run.achieved_send_rate
    parts = [f"offered {offered:,.0f}/s, answered {run.throughput:,.0f}/s; peer busy sending {send:.0%}, "
             f"answering {recv:.0%}"]
    if run.transport == "tcp" and (p.get("blocked") or p.get("partial")):
        parts.append(f"the engine pushed back ({p.get('partial', 0):,} partial, {p.get('blocked', 0):,} blocked "
                     "sends): engine-bound")
    elif run.transport == "udp" and (run.udp_kernel_drops or run.lost):
        parts.append(f"{run.udp_kernel_drops or 0:,} datagrams dropped at the engine's socket, {run.lost:,} "
                     "signals lost: the generator outran the engine: engine-bound")
    elif recv >= BUSY_WARN:
        parts.append("receiver-bound (the receiver, not the engine, set the pace)")
    elif run.throughput >= 0.95 * offered:
        parts.append("the engine kept up with everything offered: generator-bound")
    else:
        parts.append("undetermined")
    return "; ".join(parts)


def attach_floor(runs):
    """Each engine run gets the floor run of its transport and rate (same invocation), and the ratios."""
    floors = {(r.transport, r.rate): r for r in runs if r.engine == "floor" and r.latency_ns}
    for r in runs:
        f = floors.get((r.transport, r.rate))
        if r.engine == "floor" or f is None or not r.latency_ns:
            continue
        r.floor = {k: f.latency_ns[k] for k in ("p50", "p99", "p99.9")}
        r.floor["throughput"] = f.throughput
        r.vs_floor = {k: r.latency_ns[k] / max(f.latency_ns[k], 1) for k in ("p50", "p99", "p99.9")}
        r.vs_floor["throughput"] = r.throughput / f.throughput if f.throughput else None
        for who, run in (("this run", r), ("the floor's run", f)):
            why = disturbed(run.placement or {})
            if why:
                r.warnings.append(f"the ratio to the floor is not clean: {who} was disturbed ({why})")
        if not r.rate and f.throughput and r.throughput >= 0.9 * f.throughput:
            r.warnings.append(f"saturation throughput {r.throughput:,.0f}/s is within 10% of the floor's "
                              f"{f.throughput:,.0f}/s: the harness, not the engine, may set this figure")
    return runs


def placement_line(run):
    pl = run.placement or {}
    parts = []
    for name, p in (pl.get("processes") or {}).items():
        main = p["affinity"].get(p["pid"], p["affinity"].get(str(p["pid"]), []))
        seen = ",".join(p["seen_on"]) or "-"
        parts.append(f"{name} cpu{_cpus(main)} seen {seen} (cpu {p['cpu_share']:.0%}, waited {p['wait_share']:.1%})")
    cores = " ".join(f"core{c} {v['busy']:.0%}" for c, v in (pl.get("cores") or {}).items())
    load = f"load {pl.get('loadavg_before')} -> {pl.get('loadavg_after')}, others {pl.get('others_share', 0):.0%}"
    return "; ".join(parts) + (f" | {cores} | {load}" if pl else "")


def _cpus(cpus):
    cpus = list(cpus)
    return str(cpus[0]) if len(cpus) == 1 else "{" + ",".join(map(str, cpus)) + "}"


def run_line(r):
    lat = r.latency_ns or {}
    line = (f"    {r.label}: sent {r.sent:,} recv {r.received:,} thr {r.throughput:,.0f}/s | "
            f"p50 {lat.get('p50', 0) / 1e3:.1f} p99 {lat.get('p99', 0) / 1e3:.1f} "
            f"p99.9 {lat.get('p99.9', 0) / 1e3:.1f} us")
    if r.floor:
        line += (f" | floor p50 {r.floor['p50'] / 1e3:.1f} p99 {r.floor['p99'] / 1e3:.1f} "
                 f"p99.9 {r.floor['p99.9'] / 1e3:.1f} us | x{r.vs_floor['p50']:.2f} p50, x{r.vs_floor['p99']:.2f} p99")
    line += f"\n      placement: {placement_line(r)}"
    if r.bottleneck:
        line += f"\n      saturation: {r.bottleneck}"
    return line


def run_all(out_dir, engines=("orchestrator", "plain"), transports=("udp", "tcp"), drivers=None, rates=None,
            plain_rates=None, duration=3.0, log=print, floor=True, **kw):
    """The floor, then every group, per transport; returns (runs as dicts, engine reports by group, skipped)."""
    runs, reports, skipped = [], {}, []
    for transport in transports:
        if TRANSPORTS.get(transport) is None:
            skipped.append(f"{transport}: the harness has no {transport} sender/receiver yet (slot in bench/e2e.py)")
            continue
        for engine in (("floor",) if floor else ()) + tuple(engines):
            drivers_here = (AERON_DRIVERS if transport == "aeron" else DRIVERS).get(engine, ())
            if not drivers_here:
                skipped.append(f"{engine} {transport}: no {transport} adapter in this engine")
                continue
            if transport == "aeron" and engine == "orchestrator" and (not drivers or "event" in drivers):
                skipped.append("orchestrator aeron event: the event driver polls Aeron on a timer (1 ms); spin only")
            for driver in drivers_here:
                if drivers and engine == "orchestrator" and driver not in drivers:
                    continue
                group_rates = (plain_rates or PLAIN_RATES) if engine == "plain" else (rates or DEFAULT_RATES)
                log(f"e2e {engine} over {transport}, driver {driver}")
                try:
                    results, report = run_group(engine, transport, driver, group_rates, duration, out_dir, log, **kw)
                except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
                    log(f"  FAILED: {e}")
                    skipped.append(f"{engine} {transport} {driver}: {str(e).splitlines()[0][:200]}")
                    continue
                drops = ((report or {}).get("oms") or {}).get("oms_disconnects")
                if drops:
                    for r in results:
                        r.warnings.append(f"the engine's OMS link dropped {drops} time(s) during this group: runs "
                                          "after it may have had their strategies halted (on_disconnect)")
                attach_floor(runs + results)
                runs.extend(results)
                reports[f"{engine}-{transport}-{driver}"] = _trim_report(report)
                for r in results:
                    log(run_line(r))
                    for w in r.warnings:
                        print(f"      WARNING ({r.label}): {w}", file=sys.stderr, flush=True)
    return [asdict(r) for r in runs], reports, skipped


def _trim_report(report):
    """What the results keep of an engine's final report: its counters and link stats."""
    if not report:
        return None
    keep = ("engine", "seconds", "signals_per_second", "counters", "oms", "transports", "signal_to_order_us", "floor")
    report = dict(report)
    if "strategies" in report:
        report["rejects_by_reason"] = {}
        for s in report["strategies"].values():
            rejects = s.get("rejects")
            for k, v in (rejects.get("by_reason", {}) if isinstance(rejects, dict) else {}).items():
                report["rejects_by_reason"][k] = report["rejects_by_reason"].get(k, 0) + v
    keep += ("rejects_by_reason",)
    return {k: report[k] for k in keep if k in report}
