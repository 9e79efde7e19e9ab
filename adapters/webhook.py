"""An HTTP webhook as an alert sink: each notification POSTed as one JSON document, from a thread of its own.

The engine (or the alert evaluator) calls `send(payload)`, which never waits: the payload goes into a bounded
queue, or is dropped and counted when the queue is full. The sink's thread takes payloads in order and POSTs
each one; a refused or failed delivery (a connection error, a timeout, an HTTP 5xx or 429) is retried with
exponential backoff up to `retries` times, then dropped and counted; any other 4xx is the receiver saying no:
dropped at once, counted. A quota (`quota_per_minute`, a token bucket refilled continuously) bounds what one
sink sends while an incident floods it: a payload over the quota is dropped and counted, never queued for later.

What the payload means is the caller's (engine/alerts.py): this module moves bytes and counts.
"""
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Annotated

import msgspec

log = logging.getLogger("orchestrator.webhook")
URL_PATTERN = r"^https?://[^\s/]+(/\S*)?$"

# no proxy, whatever the environment says: a webhook is an address the operator named
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WebhookConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: Annotated[str, msgspec.Meta(pattern=URL_PATTERN, max_length=2048)]
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 2000      # one POST, connect to last byte
    queue: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256           # notifications waiting; more: dropped
    retries: Annotated[int, msgspec.Meta(ge=0, le=100)] = 3               # after the first attempt
    backoff_min_ms: Annotated[int, msgspec.Meta(ge=1, le=600_000)] = 200  # doubled per retry ...
    backoff_max_ms: Annotated[int, msgspec.Meta(ge=1, le=600_000)] = 5000  # ... up to this
    quota_per_minute: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 60  # notifications sent; more: dropped

    def __post_init__(self):
        if self.backoff_max_ms < self.backoff_min_ms:
            raise ValueError(f"`backoff_max_ms`: Expected int >= backoff_min_ms ({self.backoff_min_ms}), got "
                             f"{self.backoff_max_ms}")


@dataclass(slots=True)
class SinkStats:
    queued: int = 0
    sent: int = 0                # delivered: the receiver answered 2xx
    retries: int = 0             # attempts after a failed one
    dropped_queue_full: int = 0  # send() found the queue full
    dropped_quota: int = 0       # over quota_per_minute
    dropped_failed: int = 0      # every attempt failed (5xx, 429, timeout, connection)
    dropped_rejected: int = 0    # the receiver answered another 4xx: no retry

    def as_dict(self):
        return asdict(self)


DROP_CAUSES = ("queue_full", "quota", "failed", "rejected")


class WebhookSink:
    """`open()` starts the thread; `send(payload)` queues (never blocks); `close(timeout_s)` delivers what it can
    until the deadline, then stops (what is left is counted as dropped, failed)."""

    name = "webhook"

    def __init__(self, config: WebhookConfig, clock=time.monotonic, sleep=None):
        self.config = config
        self.stats = SinkStats()
        self._queue = queue.Queue(config.queue)
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait  # a backoff wait ends at once when the sink closes
        self._tokens = float(config.quota_per_minute)
        self._tokens_at = clock()
        self._thread = None
        self.last_error = None

    def open(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
            self._thread.start()

    def send(self, payload: dict) -> bool:
        """Queue one notification; False (and counted) when the queue is full. Any thread; never waits."""
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.stats.dropped_queue_full += 1
            return False
        self.stats.queued += 1
        return True

    @property
    def waiting(self):
        return self._queue.qsize()

    def _take_token(self):
        now = self._clock()
        per_s = self.config.quota_per_minute / 60.0
        self._tokens = min(float(self.config.quota_per_minute), self._tokens + (now - self._tokens_at) * per_s)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _run(self):
        while True:
            try:
                payload = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if payload is None:  # close(): the marker after the last payload
                return
            if self._stop.is_set():  # closing, past its deadline: what is left is not sent
                self.stats.dropped_failed += 1
                continue
            if not self._take_token():
                self.stats.dropped_quota += 1
                continue
            self._deliver(payload)

    def _deliver(self, payload):
        body = json.dumps(payload, separators=(",", ":")).encode()
        backoff = self.config.backoff_min_ms / 1000
        for attempt in range(self.config.retries + 1):
            if attempt:
                self.stats.retries += 1
                if self._sleep(backoff) is True and self._stop.is_set():
                    self.stats.dropped_failed += 1
                    return
                backoff = min(backoff * 2, self.config.backoff_max_ms / 1000)
            verdict = self._post(body)
            if verdict == "sent":
                self.stats.sent += 1
                return
            if verdict == "rejected":
                self.stats.dropped_rejected += 1
                return
        self.stats.dropped_failed += 1
        log.warning("webhook %s: notification dropped after %d attempts: %s", self.config.url,
                    self.config.retries + 1, self.last_error)

    def _post(self, body):
        request = urllib.request.Request(self.config.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(request, timeout=self.config.timeout_ms / 1000) as response:
                response.read()
                return "sent"
        except urllib.error.HTTPError as e:
            with e:
                self.last_error = f"HTTP {e.code}"
                return "retry" if e.code >= 500 or e.code == 429 else "rejected"
        except (OSError, ValueError) as e:  # refused, reset, timed out (socket.timeout is an OSError)
            self.last_error = f"{type(e).__name__}: {e}"
            return "retry"

    def close(self, timeout_s=2.0):
        """Deliver what is queued until `timeout_s`, then stop; what could not go is counted as failed."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        self._stop.set()
        self._thread.join()
        self._thread = None
        while True:
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if left is not None:
                self.stats.dropped_failed += 1
