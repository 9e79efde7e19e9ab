"""Aeron in and out through pyaeron: the Aeron C client and, when configured, its C media driver in-process.

A *node* (`AeronNode`) is this process's link to one media driver: the driver itself when it is embedded, and
one Aeron client that every Aeron transport of the process shares. The first transport to open starts them and
the last to close stops them, client first, then driver (publications and subscriptions close with their
transports before that). An external driver must already be running in the directory; if it is not, open()
raises `AeronUnavailable` at once, naming the directory and what to do.

In (`AeronReceiver`, and the reports side of `AeronClient`): one Aeron message is one chunk, the whole frames of
one send() (Aeron cuts a message longer than the MTU into fragments; the library's fragment assembler puts it
back together before we see it). The receiver does not look inside a message: garbage reaches rx as it came and
the engine's decoder counts it. poll copies each message from the log (the BufferView the fragment handler
gets) straight into rx: no bytes object per message.
Room rule: a subscription is polled only while rx has `max_message_bytes` of room and chunk slots are left, and
for at most that many fragments. A message that still does not fit (rx fuller than the rule foresaw) is copied
aside and delivered first by the next poll, so nothing is cut or lost; a message larger than the whole of rx
can never be delivered and is counted as `oversize`.
A publisher that comes or goes is counted (`connections`, `disconnects`); the receiver keeps running.

Out (`AeronSender`, and the orders side of `AeronClient`): one send() is one message. A send() longer than
`max_message_bytes` (or than the channel's own limit, a term length / 8) goes as several messages cut at frame
boundaries; if a later one is refused the rest is held and goes first on the next send or flush().
BACK_PRESSURED and ADMIN_ACTION are retried up to `offer_attempts` offers, then send() returns False, counted
as `backpressure`: the caller applies its policy. NOT_CONNECTED (no subscriber: the peer is gone) and a closed
publication raise TransportClosed.

Event loops: Aeron has no file descriptor to wait on. attach() polls on a timer (`event_poll_interval_us`),
which works but adds up to that interval of latency; the spin driver polls Aeron in its busy loop and is the
mode to run Aeron in.
"""
import collections
import contextlib
import logging
import os
import re
from typing import Annotated, Literal

import msgspec
import numpy as np
import pyaeron

from adapters.base import Transport, TransportClosed
from kernels._jit import entry_point
from kernels.dtypes import FRAME_HEADER_SIZE
from kernels.scan import scan_frames

_scan = entry_point(scan_frames)

log = logging.getLogger("orchestrator.aeron")
CHANNEL_PATTERN = r"^aeron:(ipc|udp)(\?\S*)?$"
CHANNEL_TEXT = 'an Aeron channel like "aeron:ipc" or "aeron:udp?endpoint=127.0.0.1:40101"'
Channel = Annotated[str, msgspec.Meta(pattern=CHANNEL_PATTERN, max_length=1024)]
StreamId = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
MessageBytes = Annotated[int, msgspec.Meta(ge=FRAME_HEADER_SIZE, le=16 << 20)]
OfferAttempts = Annotated[int, msgspec.Meta(ge=1, le=1 << 20)]        # per message, before a send says False
FragmentLimit = Annotated[int, msgspec.Meta(ge=1, le=1 << 20)]        # per subscription per poll
PollIntervalUs = Annotated[int, msgspec.Meta(ge=10, le=1_000_000)]    # an event loop's poll of a subscription
IdleStrategyName = Literal["backoff", "sleeping", "yield", "spin", "noop"]

# What each driver idle strategy takes as init args, in Aeron's own syntax. Backoff: max spins, max yields, then
# parks doubling from min to max period; sleeping: one sleep period. Aeron's default for both when empty.
_DURATION = r"\d+(us|ms|s)?"
_IDLE_ARGS = {
    "backoff": (rf"^\d+-\d+-{_DURATION}-{_DURATION}$", '"SPINS-YIELDS-MIN_PARK-MAX_PARK" like "100-1000-50us-1ms"'),
    "sleeping": (r"^\d+(ns|us|ms|s)?$", 'a sleep period like "100us"'),
}
# The C driver reads its agents' idle strategies from the environment when its context is made (pyaeron's
# MediaDriver has no argument for them): every agent of every threading mode gets the configured one.
_DRIVER_AGENTS = ("SHARED", "SHAREDNETWORK", "CONDUCTOR", "SENDER", "RECEIVER")
# Client errors after which the client is closed: the driver shut down, stopped answering, or timed us out.
_FATAL_ERRORS = (1000, 1001, 1002)


class AeronUnavailable(TransportClosed):
    """No usable media driver: not running (external), or could not start (embedded). Says where and what to do."""


def check_idle_strategy_args(strategy, args):
    """ValueError naming `idle_strategy_args` unless args suit strategy (empty always does)."""
    if not args:
        return
    pattern, text = _IDLE_ARGS.get(strategy, (None, None))
    if pattern is None:
        raise ValueError(f"`idle_strategy_args`: Expected nothing for idle_strategy {strategy!r} (only backoff "
                         f"and sleeping take args), got {args!r}")
    if not re.match(pattern, args):
        raise ValueError(f"`idle_strategy_args`: Expected {text} for idle_strategy {strategy!r}, got {args!r}")


class AeronDriverConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which media driver, and how an embedded one runs. The engine's [aeron] table extends this."""
    driver: Literal["embedded", "external"] = "embedded"
    directory: str = ""  # "": $AERON_DIR if set, else Aeron's default for this user (/dev/shm/aeron-$USER)
    threading: Literal["shared", "shared_network", "dedicated"] = "shared"  # embedded: its agent threads (1, 2, 3)
    idle_strategy: IdleStrategyName = "backoff"  # embedded: what each agent thread does when it has no work
    idle_strategy_args: str = "10-0-20us-50us"  # see _IDLE_ARGS; "" for Aeron's defaults
    timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=600_000)] = 10_000  # driver liveness, client -> driver

    def __post_init__(self):
        check_idle_strategy_args(self.idle_strategy, self.idle_strategy_args)


class AeronStreamConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One Aeron stream: a channel (the medium: IPC, or UDP to the subscriber's endpoint) and a stream id."""
    channel: Channel = "aeron:ipc"
    stream_id: StreamId

    def __str__(self):
        return f"{self.channel} stream {self.stream_id}"


class AeronNode:
    """The media driver link that every Aeron transport of a process shares, reference-counted by open/close.

    A driver that goes away (an external one stops, or the engine that embeds it exits) reaches us through the
    client's error handler: the users are told, and each raises TransportClosed at its next use. (Without a
    handler, Aeron's C client prints the error and exits the whole process.)"""

    def __init__(self, config=AeronDriverConfig()):
        self.config = config
        self.directory = config.directory or os.environ.get("AERON_DIR") or pyaeron.default_path()
        self.driver = self.client = None
        self.lost = None  # why the driver link is gone, once it is
        self._users = []

    @property
    def users(self):
        return len(self._users)

    def acquire(self, user=None):
        """The client, started with the driver (if embedded) by the first user."""
        if not self._users:
            self._start()
        self._users.append(user)
        return self.client

    def release(self, user=None):
        """One user fewer; the last one closes the client, then the embedded driver."""
        if user not in self._users:
            return
        self._users.remove(user)
        if not self._users:
            self._stop()

    def _on_error(self, code, message):
        """The client's error handler, on its conductor thread."""
        log.error("Aeron client of the driver in %s: (%d) %s", self.directory, code, message)
        if abs(code) in _FATAL_ERRORS:
            self.lost = f"the Aeron media driver in {self.directory} is gone: {message}"
            for user in self._users:
                if user is not None:
                    user._driver_lost = self.lost

    def _start(self):
        c, where = self.config, self.directory
        if c.driver == "embedded":
            if pyaeron.is_driver_active(where, c.timeout_ms):
                raise AeronUnavailable(
                    f"an Aeron media driver is already running in {where}: stop it, point [aeron] directory "
                    f'elsewhere, or set [aeron] driver = "external" to use that one (a driver that stopped '
                    f"without cleaning up counts as running for timeout_ms = {c.timeout_ms} ms)")
            with _driver_environment(c):
                try:
                    self.driver = pyaeron.MediaDriver(
                        dir=where, threading=c.threading, dir_delete_on_start=True, dir_delete_on_shutdown=True,
                        dir_warn_if_exists=False)
                except pyaeron.AeronError as e:
                    raise AeronUnavailable(f"the embedded Aeron media driver did not start in {where}: "
                                           f"{_first_line(e)}") from e
        elif not pyaeron.is_driver_active(where, c.timeout_ms):
            raise AeronUnavailable(
                f"no Aeron media driver is running in {where}: start one there first (Aeron's aeronmd with "
                f'AERON_DIR={where}, or an engine whose [aeron] driver = "embedded" and directory = "{where}"), '
                f'or set [aeron] driver = "embedded" so this process starts its own')
        try:
            self.lost = None
            self.client = pyaeron.Aeron(context=pyaeron.Context(dir=where, driver_timeout_ms=c.timeout_ms,
                                                                error_handler=self._on_error))
        except pyaeron.AeronError as e:
            self._close_driver()
            raise AeronUnavailable(f"cannot connect to the Aeron media driver in {where}: {_first_line(e)}") from e

    def _stop(self):
        if self.client is not None:
            self.client.close()
            self.client = None
        self._close_driver()

    def _close_driver(self):
        if self.driver is not None:
            self.driver.close()
            self.driver = None

    def close(self):
        """Close whatever is still open, whoever still uses it (their next use raises TransportClosed)."""
        self._users.clear()
        self._stop()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


@contextlib.contextmanager
def _driver_environment(config):
    """Set the driver agents' AERON_*_IDLE_STRATEGY variables while the driver context is made, then restore."""
    values = {}
    for agent in _DRIVER_AGENTS:
        values[f"AERON_{agent}_IDLE_STRATEGY"] = config.idle_strategy
        values[f"AERON_{agent}_IDLE_STRATEGY_INIT_ARGS"] = config.idle_strategy_args or None
    saved = {key: os.environ.get(key) for key in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(saved)


def _set_environment(values):
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# ---------------------------------------------------------------------------------------------- shared parts
class _AeronTransport(Transport):
    """A node user; attach() polls on the event loop's timer, as there is no fd to wait on."""

    def __init__(self, node, event_poll_interval_us):
        super().__init__()
        self.node = node
        self._acquired = False
        self._driver_lost = None  # set by the node when the driver goes
        self._interval_s = event_poll_interval_us / 1e6
        self._loop = self._callback = self._timer = None

    def fileno(self):
        return -1

    def _acquire(self):
        client = self.node.acquire(self)
        self._acquired = True
        self._driver_lost = None
        return client

    def _release(self):
        if self._acquired:
            self._acquired = False
            self.node.release(self)

    def _lost(self, text):
        """The exception for a peer (or driver) that is gone; AeronClient also counts it and drops its
        publication."""
        return TransportClosed(text)

    def attach(self, loop, on_readable):
        """Call `on_readable()` from `loop` every event_poll_interval_us (Aeron has no fd for add_reader)."""
        self.detach()
        self._loop, self._callback = loop, on_readable
        self._timer = loop.call_later(self._interval_s, self._tick)

    def detach(self):
        if self._timer is not None:
            self._timer.cancel()
        self._loop = self._callback = self._timer = None

    def _tick(self):
        if self.closed or self._loop is None:
            return
        self._timer = self._loop.call_later(self._interval_s, self._tick)
        self._callback()

    def _close_transport(self):
        """Mark closed, stop the timer; True if it was open."""
        if not self._close_common():
            return False
        self.detach()
        return True


class _Subscribing:
    """poll() over a list of subscriptions (mixed into a transport; uses its stats, closed flag and _view)."""

    def _init_subscribing(self, max_message_bytes, fragment_limit):
        self._subscriptions = []
        self._room = max_message_bytes
        self._fragment_limit = fragment_limit
        self._held = collections.deque()  # messages that did not fit rx, oldest first
        self._handler = self._on_message  # bound once: a bound method made per poll would be an allocation
        self._rx_sizes = None
        self._offset = self._chunk = self._end = self._last_start = 0

    def _subscribe(self, client, stream):
        try:
            sub = client.add_subscription(stream.channel, stream.stream_id, available_image=self._on_image,
                                          unavailable_image=self._on_image_gone)
        except pyaeron.AeronError as e:
            raise TransportClosed(f"cannot subscribe to {stream}: {_first_line(e)}") from e
        self._subscriptions.append(sub)

    def _on_image(self, subscription, image):  # the client's conductor thread: count only
        self.stats.connections += 1

    def _on_image_gone(self, subscription, image):
        self.stats.disconnects += 1

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        # Spelled out for the empty poll of a spin loop: no min(), no method call, no counter update.
        if self.closed:
            raise TransportClosed(f"{type(self).__name__} is not open")
        slots = len(rx_sizes) - chunk_index
        if max_chunks < slots:
            slots = max_chunks
        if slots <= 0:
            return 0, offset
        if rx is not self._rx:
            self._view(rx)
            self._end = len(self._rx_view)
            self._last_start = self._end - self._room  # past this, a full-size message would not fit
        self._rx_sizes = rx_sizes
        self._offset = offset
        self._chunk = chunk_index
        chunk_end = chunk_index + slots
        if self._held:
            self._deliver_held(chunk_end)
        try:
            for sub in self._subscriptions:
                slots = chunk_end - self._chunk
                if slots <= 0 or self._offset > self._last_start or self._held:
                    break
                sub.poll(self._handler, slots if slots < self._fragment_limit else self._fragment_limit)
        except pyaeron.AeronError as e:  # the node was closed under us
            raise TransportClosed(f"{type(self).__name__}: {_first_line(e)}") from e
        n = self._chunk - chunk_index
        if n:
            self.stats.chunks += n
            self.stats.bytes_in += self._offset - offset
        elif self._driver_lost is not None:
            raise self._lost(self._driver_lost)
        return n, self._offset

    def _on_message(self, buffer, header):
        """The fragment handler: one whole (assembled) message -> one chunk in rx, or held if it does not fit."""
        size = len(buffer)
        offset = self._offset
        if size == 0:
            self.stats.empty += 1
        elif offset + size > self._end or self._held:
            self._held.append(bytes(buffer))  # the log slot is reused after the handler returns: copy it
        else:
            self._rx_view[offset:offset + size] = buffer
            self._rx_sizes[self._chunk] = size
            self._chunk += 1
            self._offset = offset + size

    def _deliver_held(self, chunk_end):
        held, view = self._held, self._rx_view
        while held and self._chunk < chunk_end:
            message = held[0]
            size = len(message)
            if size > self._end:
                self.stats.oversize += 1  # larger than the whole of rx: it can never be delivered
                held.popleft()
                continue
            offset = self._offset
            if offset + size > self._end:
                return
            view[offset:offset + size] = message
            self._rx_sizes[self._chunk] = size
            self._chunk += 1
            self._offset = offset + size
            held.popleft()

    def _close_subscriptions(self):
        for sub in self._subscriptions:
            if not sub.is_closed:
                sub.close()
        self._subscriptions = []
        self._held.clear()


class _Publishing:
    """send() and flush() over one publication (mixed into a transport)."""

    def _init_publishing(self, stream, max_message_bytes, offer_attempts):
        self._stream = stream
        self._pub = None
        self._max_send = max_message_bytes
        self._attempts = offer_attempts
        self._out = bytearray()  # the tail of a cut send() that was refused after its first message went

    def _publish(self, client):
        try:
            self._pub = client.add_publication(self._stream.channel, self._stream.stream_id)
        except pyaeron.AeronError as e:
            raise TransportClosed(f"cannot publish on {self._stream}: {_first_line(e)}") from e
        self._max_send = min(self._max_send, self._pub.max_message_length)

    @property
    def pending_bytes(self):
        return len(self._out)

    def send(self, frames):
        pub = self._pub
        if pub is None:
            self._raise_unusable()
        if self._out and not self.flush():
            self.stats.backpressure += 1
            return False
        size = len(frames)
        if size > self._max_send:
            return self._send_cut(pub, frames, size)
        if not self._offer(pub, frames):
            self.stats.backpressure += 1
            return False
        self.stats.sent += 1
        self.stats.bytes_out += size
        return True

    def flush(self):
        """Offer held bytes; True when nothing is held."""
        if not self._out:
            return True
        if self._pub is None:
            self._raise_unusable()
        with memoryview(self._out) as view:
            done = self._offer_cut(self._pub, view, 0, len(view))
        del self._out[:done]
        return not self._out

    def _offer(self, pub, data):
        """One message: True when appended; False after offer_attempts refusals; raises when the peer is gone."""
        try:
            result = pub.offer(data)
            if result is True:
                return True
            attempts = 1
            while result is not True:
                if result is pyaeron.NOT_CONNECTED:
                    raise self._lost(f"no subscriber on {self._stream}: the peer is gone")
                if attempts == self._attempts:
                    return False
                result = pub.offer(data)
                attempts += 1
            return True
        except pyaeron.AeronError as e:  # closed, max position exceeded
            raise self._lost(f"publication on {self._stream}: {_first_line(e)}") from e

    def _send_cut(self, pub, frames, size):
        """A send() longer than one message: messages cut at frame boundaries; the refused tail is held."""
        with memoryview(frames) as view:
            view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
            done = self._offer_cut(pub, view, 0, size)
            if done == 0:
                self.stats.backpressure += 1
                return False
            if done < size:
                self._out += view[done:]
        self.stats.sent += 1
        self.stats.bytes_out += size
        return True

    def _offer_cut(self, pub, view, pos, end):
        """Offer view[pos:end] as messages of at most max_message bytes; return where the refused part starts."""
        frames = np.frombuffer(view, np.uint8)  # for the compiled scanner (kernels/scan.py), which takes a writable
        if not frames.flags.writeable:          # array: bytes are copied (a cut send is the rare case)
            frames = frames.copy()
        while pos < end:
            stop = min(pos + self._max_send, end)
            whole, _ = _scan(frames, pos, stop)
            if whole > pos:
                stop = whole  # else garbage or a frame longer than a message: cut it where it is
            if not self._offer(pub, view[pos:stop]):
                return pos
            pos = stop
        return pos

    def _raise_unusable(self):
        raise TransportClosed(f"{type(self).__name__} is not open")

    def _close_publication(self):
        if self._pub is not None:
            if not self._pub.is_closed:
                self._pub.close()
            self._pub = None
        self._out.clear()


# ---------------------------------------------------------------------------------------------- transports
class AeronReceiverConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    streams: Annotated[tuple[AeronStreamConfig, ...], msgspec.Meta(min_length=1)]  # polled in this order
    max_message_bytes: MessageBytes = 65536  # room rule: the largest message a publisher sends
    fragment_limit: FragmentLimit = 256
    event_poll_interval_us: PollIntervalUs = 1000


class AeronReceiver(_Subscribing, _AeronTransport):
    """Subscriptions to one or more streams (signals, market data); poll() copies their messages into rx."""

    def __init__(self, config, node):
        super().__init__(node, config.event_poll_interval_us)
        self.config = config
        self._init_subscribing(config.max_message_bytes, config.fragment_limit)

    def open(self):
        client = self._acquire()
        try:
            for stream in self.config.streams:
                self._subscribe(client, stream)
        except BaseException:
            self._close_subscriptions()
            self._release()
            raise
        self.closed = False

    @property
    def connected(self):
        """True when every subscription has at least one publisher."""
        return all(sub.is_connected for sub in self._subscriptions)

    def close(self):
        if self._close_transport():
            self._close_subscriptions()
            self._release()


class AeronSenderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    stream: AeronStreamConfig
    max_message_bytes: MessageBytes = 65536  # a longer send() goes as several messages, cut at frame boundaries
    offer_attempts: OfferAttempts = 32


class AeronSender(_Publishing, _AeronTransport):
    """One publication. connect() says whether a subscriber is there: until then send() raises TransportClosed."""

    def __init__(self, config, node):
        super().__init__(node, 1000)
        self.config = config
        self._init_publishing(config.stream, config.max_message_bytes, config.offer_attempts)

    def open(self):
        client = self._acquire()
        try:
            self._publish(client)
        except BaseException:
            self._release()
            raise
        self.closed = False

    def connect(self):
        self._check_open()
        if self._driver_lost is not None:
            raise self._lost(self._driver_lost)
        return self._pub.is_connected

    def close(self):
        if self._close_transport():
            self._close_publication()
            self._release()


class AeronClientConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    orders: AeronStreamConfig   # out: order frames to the OMS
    reports: AeronStreamConfig  # in: execution reports from the OMS
    max_message_bytes: MessageBytes = 65536
    offer_attempts: OfferAttempts = 32
    fragment_limit: FragmentLimit = 256
    event_poll_interval_us: PollIntervalUs = 1000


class AeronClient(_Subscribing, _Publishing, _AeronTransport):
    """The OMS link over Aeron: orders out on one stream, reports back on another. Like TcpClient, it is
    `connected` between a connect() that found the OMS subscribed to the orders stream and the moment the OMS
    is seen gone: an offer finds no subscriber, or the last publisher of the reports stream goes. That moment
    raises TransportClosed once (send, or the next poll that finds nothing) and drops the orders publication;
    reports still in the stream are delivered all the same. The engine then applies its policy and calls
    connect() with backoff."""

    def __init__(self, config, node):
        super().__init__(node, config.event_poll_interval_us)
        self.config = config
        self.connected = False
        self._images = 0  # reports publishers connected (the client's conductor thread writes it)
        self._reported = False
        self._init_subscribing(config.max_message_bytes, config.fragment_limit)
        self._init_publishing(config.orders, config.max_message_bytes, config.offer_attempts)

    def open(self):
        client = self._acquire()
        try:
            self._publish(client)
            self._subscribe(client, self.config.reports)
        except BaseException:
            self._close_subscriptions()
            self._close_publication()
            self._release()
            raise
        self.closed = False

    def connect(self):
        """True once the OMS subscribes to the orders stream (counted as a connection). After a loss the first
        call adds a new orders publication (a driver round trip); later calls only look."""
        self._check_open()
        if self._driver_lost is not None:  # no driver: no reconnect (and no 10 s wait for one in add_publication)
            raise self._lost(self._driver_lost)
        if self.connected:
            return True
        if self._pub is None:
            self._publish(self.node.client)
        if not self._pub.is_connected:
            return False
        self.connected = True
        self._reported = self._images > 0  # a reports publisher seen since this connect: its loss is the OMS's
        self.stats.connections += 1
        return True

    def _on_image(self, subscription, image):
        self._images += 1
        self._reported = True

    def _on_image_gone(self, subscription, image):
        self._images -= 1

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        n, end = _Subscribing.poll(self, rx, offset, rx_sizes, chunk_index, max_chunks)
        if n == 0 and self.connected and self._images <= 0 and self._reported and not self._held:
            raise self._lost(f"the OMS's reports stream {self.config.reports} has no publisher: the OMS is gone")
        return n, end

    def send(self, frames):
        if not self.connected:
            self._check_open()
            raise TransportClosed(f"the OMS link on {self.config.orders} is down: connect() first")
        return _Publishing.send(self, frames)

    def _lost(self, text):
        """The OMS is gone: count the disconnect once, drop the orders publication, say why. What the publication
        took since the OMS went (Aeron notices within about a second) is never delivered, to this OMS or the next
        one: a new publication is a new session. As over TCP, those orders are the reconciliation's business."""
        if self.connected:
            self.connected = False
            self.stats.disconnects += 1
        self._close_publication()
        return TransportClosed(text)

    def close(self):
        if self._close_transport():
            self._close_subscriptions()
            self._close_publication()
            self.connected = False
            self._release()
