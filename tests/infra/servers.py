"""Real servers for the tests: redis-server, Prometheus and headless Chromium, as the Debian packages install them
(`make test` installs them when missing: tests/infra/install_servers.sh).

Every server is a process of its own on a free 127.0.0.1 port with its own directory under the test's tmp dir;
no test depends on a system service. Output goes to files in that directory (no pipe can fill up and stall a
server), and a failed wait quotes the server's log. The pytest fixtures over these are in tests/infra/fixtures.py.
"""
import itertools
import json
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

START_TIMEOUT_S = 60  # two shared cores: Prometheus can take several seconds to open its tsdb and be ready

# No proxy, whatever the environment says: every request of the tests goes to loopback.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port():
    """A loopback TCP port nobody listens on right now (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10):
    """(status, body bytes) of a GET; an HTTP error status is returned, not raised."""
    try:
        with _HTTP.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def wait_until(predicate, what, timeout=START_TIMEOUT_S, process=None, interval=0.05):
    """Poll predicate() until it returns something true and return that; fail naming `what` (with the process's
    log) if the process exits first or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and not process.alive():
            raise AssertionError(f"{process.name} exited ({process.returncode}) before {what}:\n{process.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s" + (f":\n{process.log()}" if process else ""))
        time.sleep(interval)


class ServerProcess:
    """One server process; its stdout and stderr go to `<name>.log` in its directory."""

    def __init__(self, name, args, workdir):
        self.name, self.args, self.workdir = name, list(args), Path(workdir)
        self.log_path = self.workdir / f"{name}.log"
        self.popen = None
        self.starts = 0

    def start(self):
        assert not self.alive(), f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self.workdir, start_new_session=True)
        self.starts += 1

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self):
        return None if self.popen is None else self.popen.poll()

    def log(self, tail=4000):
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def kill(self):
        """SIGKILL, as a crash would: no shutdown, no final save."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait()

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        elif self.popen is not None:
            self.popen.wait()


def _require(binary):
    path = shutil.which(binary)
    if path is None:
        raise AssertionError(f"{binary} is not installed: `make test` installs it (tests/infra/install_servers.sh)")
    return path


# ---------------------------------------------------------------------------------------------- redis
class RedisServer:
    """`redis-server` on 127.0.0.1:port with its own dir. No persistence unless `persistence=True` (then an
    append-only file fsynced on every write, so data survives a SIGKILL)."""

    def __init__(self, workdir, port=None, persistence=False):
        self.host, self.port = "127.0.0.1", port or free_port()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [_require("redis-server"), "--port", str(self.port), "--bind", self.host, "--dir", str(self.dir),
                "--daemonize", "no", "--save", "", "--logfile", "", "--protected-mode", "yes"]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if persistence else ["--appendonly", "no"]
        self.process = ServerProcess("redis-server", args, self.dir)

    @property
    def url(self):
        return f"redis://{self.host}:{self.port}/0"

    def start(self):
        self.process.start()
        wait_until(self.ping, "PONG from redis-server", process=self.process)
        return self

    def ping(self):
        """True when the server answers PING (a raw RESP exchange: no client library needed)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self):
        """SIGKILL mid-test: every client's connection breaks at once."""
        self.process.kill()

    def restart(self):
        """Start again on the same port (after kill or stop) and wait for PING."""
        self.process.stop()
        return self.start()

    def stop(self):
        self.process.stop()


# ---------------------------------------------------------------------------------------------- prometheus
class PrometheusServer:
    """Debian's `prometheus` scraping `scrape_targets` ("host:port" strings) every `scrape_interval`, on a free
    port with its own tsdb dir. `query(promql)` asks its HTTP API."""

    def __init__(self, workdir, scrape_targets, scrape_interval="1s", port=None):
        self.host, self.port = "127.0.0.1", port or free_port()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": "tests", "static_configs": [{"targets": list(scrape_targets)}]}],
        }, indent=1))
        self.process = ServerProcess("prometheus", [
            _require("prometheus"), f"--config.file={self.config_path}", f"--storage.tsdb.path={self.dir / 'tsdb'}",
            f"--web.listen-address={self.host}:{self.port}", "--log.level=warn"], self.dir)

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def start(self):
        self.process.start()
        wait_until(lambda: self._status("/-/ready") == 200, "/-/ready from prometheus", process=self.process)
        return self

    def _status(self, path):
        try:
            return http_get(self.url + path, timeout=2)[0]
        except OSError:
            return None

    def api(self, path, **params):
        """GET /api/v1/<path>; the `data` of a success, AssertionError with Prometheus's error otherwise."""
        status, body = http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        reply = json.loads(body)
        if status != 200 or reply.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: HTTP {status}: {reply}")
        return reply["data"]

    def query(self, promql):
        """An instant query: a list of {"metric": {labels}, "value": [ts, "text"]} for a vector result."""
        return self.api("query", query=promql)["result"]

    def values(self, promql, label):
        """{value of `label`: float value} of an instant vector query."""
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}

    def targets(self):
        return self.api("targets")["activeTargets"]

    def wait_for_series(self, promql, predicate=bool, timeout=START_TIMEOUT_S):
        """Poll an instant query until its result is non-empty and predicate(result) holds; return the result.
        A failure quotes the scrape targets' health (the usual cause: the target is down or its text invalid)."""
        seen = {}

        def ready():
            seen["result"] = result = self.query(promql)
            return result if result and predicate(result) else None
        try:
            return wait_until(ready, f"series for {promql}", timeout=timeout, process=self.process, interval=0.2)
        except AssertionError as e:
            health = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.targets()]
            raise AssertionError(f"{e}\nlast result: {seen.get('result')}\ntargets: {health}") from None

    def stop(self):
        self.process.stop()


# ---------------------------------------------------------------------------------------------- chromium
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    "--hide-scrollbars", "--no-proxy-server", "--disable-extensions", "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",  # nothing resolves off here
)


class Chromium:
    """Debian's headless chromium, one fresh process (and --user-data-dir) per call. `--virtual-time-budget`
    lets the page's timers and scripts run for that much virtual time before the screenshot or DOM dump, so
    what a page writes by JS after load is in it, without waiting that long in real time."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = _require("chromium")
        self._numbers = itertools.count(1)  # one number per call, also when calls run at once

    def _run(self, name, extra, url, timeout):
        number = next(self._numbers)
        profile = self.dir / f"profile-{number}"
        log_path = self.dir / f"{name}-{number}.log"
        out_path = self.dir / f"{name}-{number}.out"
        args = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
        with open(out_path, "wb") as out, open(log_path, "wb") as log:
            try:
                code = subprocess.run(args, stdout=out, stderr=log, stdin=subprocess.DEVNULL, timeout=timeout,
                                      cwd=self.dir).returncode
            except subprocess.TimeoutExpired:
                raise AssertionError(f"chromium {name} of {url}: no exit after {timeout} s:\n"
                                     f"{log_path.read_text(errors='replace')[-4000:]}") from None
        if code != 0:
            raise AssertionError(f"chromium {name} of {url} exited {code}:\n"
                                 f"{log_path.read_text(errors='replace')[-4000:]}")
        return out_path

    def screenshot(self, url, path, width=800, height=600, budget_ms=2000, timeout=60):
        """A PNG of the page at `url`, `width` x `height` CSS pixels, after `budget_ms` of virtual time."""
        path = Path(path)
        self._run("screenshot", [f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}",
                                 f"--screenshot={path}"], url, timeout)
        if not path.exists():
            raise AssertionError(f"chromium wrote no screenshot to {path}")
        return path

    def dom(self, url, budget_ms=2000, timeout=60):
        """The serialized DOM of the page at `url` after `budget_ms` of virtual time (scripts have run)."""
        return self._run("dom", [f"--virtual-time-budget={budget_ms}", "--dump-dom"], url, timeout).read_text()


# ---------------------------------------------------------------------------------------------- png
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from a PNG's IHDR chunk; AssertionError if the file is not a PNG."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def png_pixel(path, x, y):
    """The (r, g, b) of one pixel of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes): enough
    decoding to tell what a page showed, without an imaging library."""
    data = Path(path).read_bytes()
    width, height = png_size(path)
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    depth, color, interlace = header[8], header[9], header[12]
    assert depth == 8 and color in (2, 6) and interlace == 0, f"unsupported PNG (depth {depth}, color {color})"
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    previous = bytearray(stride)
    for row in range(y + 1):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        previous = line
    return tuple(previous[x * bpp:x * bpp + 3])


# ---------------------------------------------------------------------------------------------- pages
class StaticSite:
    """A directory served over HTTP on 127.0.0.1 (a thread of its own), for pages a browser test opens."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        handler = partial(_QuietHandler, directory=str(self.root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="static-site", daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def add(self, name, text):
        (self.root / name).write_text(text)
        return f"{self.url}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
