"""What the end-to-end tests share: configs derived from config/demo, `orchestrator` processes, senders.

Every engine runs as the real console script over real loopback sockets. Configs listen on port 0 and the
tests learn the bound addresses from `run --ready-file`; processes write stdout and stderr to files (no pipe
can fill up and stall them) and `Processes.close` ends every one a test started, whatever happened.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from kernels.dtypes import SIGNAL_ORDER, SIGNAL_TARGET
from wire.frames import encode_frame
from wire.schema import MarketData, Signal

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo"
_SCRIPT = Path(sys.executable).with_name("orchestrator")
ORCHESTRATOR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "engine.cli"]
READY_TIMEOUT_S = 120  # a first start after an edit of kernels/ compiles them (the session fixture warms first)

LOOPBACK_ANY = {"host": "127.0.0.1", "port": 0}
ESZ5 = 0  # the demo's instruments: ESZ5 0, NQZ5 1, AAPL 2, MSFT 3, NVDA 4, TSLA 5


# ---------------------------------------------------------------------------------------------- configs
def derive_config(dest, *, engine=None, strategies=None, accounts=None, keep=None):
    """config/demo copied to `dest`, both listeners and the API on 127.0.0.1 port 0, then `engine` deep-merged
    into engine.toml, `strategies[name]` into that strategy's file and `accounts[name]` into that account (a value
    of None deletes the key). `keep`: the names of the strategies to keep (default all)."""
    dest = Path(dest)
    shutil.copytree(DEMO, dest)
    # two merges: a test's own [api] or [listen] keys go over the OS-picked ports, not instead of them
    merged = _merge(_load(dest / "engine.toml"), {"listen": {"udp": LOOPBACK_ANY, "tcp": LOOPBACK_ANY},
                                                   "api": LOOPBACK_ANY})
    merged = _merge(merged, engine or {})
    (dest / "engine.toml").write_text(toml(merged))
    for path in sorted((dest / "strategies").glob("*.toml")):
        doc = _load(path)
        if keep is not None and doc["name"] not in keep:
            path.unlink()
        elif strategies and doc["name"] in strategies:
            path.write_text(toml(_merge(doc, strategies[doc["name"]])))
    if accounts:
        doc = _load(dest / "accounts.toml")
        doc["accounts"] = [_merge(a, accounts.get(a["name"], {})) for a in doc["accounts"]]
        (dest / "accounts.toml").write_text(toml(doc))
    return dest


def _load(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def _merge(base, over):
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def toml(doc, prefix=""):
    """The TOML of a dict of scalars, lists of scalars, tables and arrays of tables (what configs use)."""
    lines, tables = [], []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append(f"\n[{prefix}{key}]\n" + toml(value, f"{prefix}{key}."))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            tables += [f"\n[[{prefix}{key}]]\n" + toml(item, f"{prefix}{key}.") for item in value]
        else:
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n" + "".join(tables)


def _value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return repr(v)


def free_port(kind=socket.SOCK_STREAM):
    """A loopback port nobody listens on right now (bound once, then released)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- processes
class Process:
    """One `orchestrator` subcommand; stdout and stderr go to files under the test's tmp dir."""

    def __init__(self, args, workdir, name, env=None):
        self.args, self.name = list(args), name
        self.stdout_path, self.stderr_path = workdir / f"{name}.out", workdir / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(ORCHESTRATOR + self.args, stdout=out, stderr=err, cwd=workdir,
                                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})

    @property
    def stdout(self):
        return self.stdout_path.read_text()

    @property
    def stderr(self):
        return self.stderr_path.read_text()

    def alive(self):
        return self.popen.poll() is None

    def wait_for(self, predicate, what, timeout=READY_TIMEOUT_S, last_seen=lambda: ""):
        """Poll predicate() until it returns something true; fail with the process's stderr (and `last_seen()`, what
        the wait saw last) if it dies first or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}) before {what}:\n{self.stderr}"
                                     f"{last_seen()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {what} after {timeout} s:\n{self.stderr}{last_seen()}")
            time.sleep(0.01)

    def wait(self, timeout=30):
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout} s:\n{self.stderr}") from None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Send `sig` and wait for the exit code."""
        if self.alive():
            self.popen.send_signal(sig)
        return self.wait(timeout)

    def kill(self):
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Engine(Process):
    """`orchestrator run CONFIG --json --ready-file ...`: the bound addresses once ready, the report at the end."""

    def __init__(self, config, workdir, *extra, name="engine", env=None):
        self.ready_path = workdir / f"{name}.ready.json"
        self.status_path = workdir / f"{name}.status.json"
        super().__init__(["run", str(config), "--json", "--ready-file", str(self.ready_path), "--status-file",
                          str(self.status_path), *extra], workdir, name, env)
        self.ready = None

    def wait_ready(self):
        self.ready = json.loads(self.wait_for(
            lambda: self.ready_path.exists() and self.ready_path.read_text(), "ready file"))
        return self.ready

    def wait_status(self, predicate, what, timeout=30):
        """Wait until the report so far (the status file, rewritten every 0.1 s) satisfies predicate; return it."""
        seen = {}

        def status():
            if self.status_path.exists():
                seen["report"] = report = json.loads(self.status_path.read_text())
                return report if predicate(report) else None

        def last_seen():
            report = seen.get("report", {})
            return f"\nlast status: counters {report.get('counters')}, oms {report.get('oms')}"
        return self.wait_for(status, what, timeout, last_seen)

    def address(self, kind):
        host, port = self.ready[kind].rsplit(":", 1)
        return host, int(port)

    def report(self, sig=signal.SIGTERM, timeout=30):
        """Stop the engine with `sig`; the exit code must be 0; return its JSON report."""
        code = self.stop(sig, timeout)
        assert code == 0, f"engine exited {code}:\n{self.stderr}"
        return json.loads(self.stdout)


class SimOms(Process):
    """`orchestrator sim-oms`: its port once listening, its summary counts once stopped."""

    def __init__(self, workdir, *extra, port=0, name="sim-oms"):
        super().__init__(["sim-oms", "--port", str(port), *extra], workdir, name)
        self.port = None

    def wait_listening(self):
        line = self.wait_for(lambda: self.stdout.partition("\n")[1] and self.stdout.partition("\n")[0],
                             "listening line")
        assert line.startswith("sim-oms listening on tcp "), line
        self.port = int(line.split(",")[0].rsplit(":", 1)[1])
        return self.port

    def summary(self, timeout=30):
        code = self.stop(signal.SIGTERM, timeout)
        assert code == 0, self.stderr
        line = self.stdout.strip().splitlines()[-1]
        assert line.startswith("sim-oms: "), self.stdout
        return {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}


class Processes:
    """Starts processes (and client sockets) for one test and ends each of them when the test ends, passed or
    not."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.started = []
        self.clients = []

    def engine(self, config, *extra, name="engine", ready=True, env=None):
        engine = self._add(Engine(config, self.workdir, *extra, name=name, env=env))
        if ready:
            engine.wait_ready()
        return engine

    def sim_oms(self, *extra, port=0, name="sim-oms"):
        oms = self._add(SimOms(self.workdir, *extra, port=port, name=name))
        oms.wait_listening()
        return oms

    def run(self, *args, name="cli", timeout=60):
        """Run a subcommand to its end: (exit code, stdout, stderr)."""
        proc = self._add(Process(args, self.workdir, name))
        code = proc.wait(timeout)
        return code, proc.stdout, proc.stderr

    def feed(self, engine, transport="udp", *args, name="feed", timeout=60):
        """Run `orchestrator feed` against the engine's config and bound address to its end; its JSON summary."""
        host, port = engine.address(transport)
        code, out, err = self.run("feed", "--config", engine.args[1], "--transport", transport, "--host", host,
                                  "--port", str(port), "--json", *map(str, args), name=name, timeout=timeout)
        assert code == 0, err
        return json.loads(out)

    def start_feed(self, engine, transport="udp", *args, name="feed"):
        """Start `orchestrator feed` against the engine's config and bound address; it runs on its own."""
        host, port = engine.address(transport)
        return self._add(Process(["feed", "--config", engine.args[1], "--transport", transport, "--host", host,
                                  "--port", str(port), *map(str, args)], self.workdir, name))

    def udp(self, engine):
        return self._client(Udp(engine.address("udp")))

    def tcp(self, engine):
        return self._client(Tcp(engine.address("tcp")))

    def _client(self, client):
        self.clients.append(client)
        return client

    def _add(self, proc):
        self.started.append(proc)
        return proc

    def close(self):
        for client in self.clients:
            client.close()
        for proc in self.started:
            proc.kill()


# ---------------------------------------------------------------------------------------------- traffic
def now_ns():
    return time.time_ns()


def signal_frame(seq, *, source=0, signal_id=0, instrument=ESZ5, kind=SIGNAL_ORDER, value=1.0, price=6000.0,
                 ts_ns=None, ttl_ns=0):
    """One Signal frame. Structs do not validate on construction: NaN, inf and out-of-range ids go out as given."""
    return encode_frame(Signal(source, seq, signal_id, instrument, kind, value, price,
                               now_ns() if ts_ns is None else ts_ns, ttl_ns))


def target_frame(seq, value, **kw):
    return signal_frame(seq, kind=SIGNAL_TARGET, value=value, **kw)


def market_data_frame(instrument=ESZ5, bid=5999.75, ask=6000.25, last=6000.0):
    return encode_frame(MarketData(instrument, bid, ask, last, now_ns()))


class Udp:
    """A connected UDP socket to the engine: one send, one datagram."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(address)
        self.datagrams = 0

    def send(self, *frames):
        self.sock.send(b"".join(frames))
        self.datagrams += 1

    def close(self):
        self.sock.close()


class Tcp:
    """A TCP client of the engine's signal listener."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, *frames):
        self.sock.sendall(b"".join(frames))

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------------------------------------- report checks
def orders_sent(report):
    """Orders that went to the OMS: taken by the link, or by the simulated venue in the batch."""
    oms = report["oms"]
    return oms["venue"]["orders"] if "venue" in oms else oms["orders_sent"]


# the counters of what the OMS made of the orders: they move whenever orders trade
ORDER_FATES = {"orders_acked", "orders_rejected", "orders_canceled", "orders_filled"}


def nonzero(counters):
    return {k for k, v in counters.items() if v}


def reasons(report):
    """Rejects by reason, over every strategy."""
    total = {}
    for s in report["strategies"].values():
        for reason, count in s["rejects"]["by_reason"].items():
            total[reason] = total.get(reason, 0) + count
    return total


def assert_books_balance(report):
    """Every order the engine accepted went to the OMS, was canceled locally as unsent, or still waits to go."""
    oms = report["oms"]
    assert report["counters"]["orders"] == orders_sent(report) + oms["orders_unsent"] + oms["orders_pending"], oms
    assert report["counters"]["orders"] == sum(s["orders"] for s in report["strategies"].values())
    assert report["counters"]["rejects"] == sum(s["rejects"]["total"] for s in report["strategies"].values())


def assert_pnl_consistent(report, fee_per_unit=None):
    """Per strategy: the totals are the sums over its positions, net = realized + unrealized - fees, each
    position's unrealized P&L is marked at the instrument's mark, and fees are what the OMS charged."""
    marks = report["instruments"]
    for name, s in report["strategies"].items():
        pnl, positions = s["pnl"], s["positions"]
        for key in ("realized", "unrealized", "fees"):
            assert abs(pnl[key] - sum(p[key] for p in positions.values())) < 1e-6 * (1 + abs(pnl[key])), (name, key)
        assert abs(pnl["net"] - (pnl["realized"] + pnl["unrealized"] - pnl["fees"])) < 1e-6, name
        for symbol, p in positions.items():
            m = marks[symbol]
            expected = p["qty"] * (m["mark"] - p["avg_price"]) * m["multiplier"] if p["qty"] else 0.0
            assert abs(p["unrealized"] - expected) < 1e-6 * (1 + abs(expected)), (name, symbol, p, m)
        if fee_per_unit is not None:
            assert abs(pnl["fees"] - s["filled_qty"] * fee_per_unit) < 1e-6, name
