"""The one transport contract. Transports move whole frames and nothing else; decoding is the engine's job.

Inbound: the engine owns one preallocated uint8 buffer `rx` and an int32 array `rx_sizes`. A poll appends
*chunks* to rx from `offset` on (a chunk is a run of whole frames: one UDP datagram, the whole frames of one
TCP read, one Aeron message) and writes each chunk's length to rx_sizes[chunk_index:]. It never writes more
than `max_chunks` lengths or past the end of rx; what does not fit stays in the socket or file for the next
poll. It never blocks.

Outbound: `send(frames)` takes whole frames (bytes or a uint8 memoryview of the engine's tx) and returns False
when the medium cannot take them now (back-pressure). A False is counted, never a silent drop: the caller
decides to retry, hold or drop. A True means the transport owns the frames; a stream transport may hold the
unsent tail of them, which goes out first, on the next send or on `flush()`.

`TransportClosed` is the one exception: the medium is gone (we closed it, the peer left, a connect failed).
Anything else wrong with the data is counted in `stats`, not raised.
"""
import json
from dataclasses import asdict, dataclass
from typing import Annotated, Protocol, runtime_checkable

import msgspec

# Config field types every socket adapter shares (and engine.toml's [listen] and [oms] tables with them).
HOST_PATTERN = r"^[A-Za-z0-9._:-]+$"  # a host name, an IPv4 or an IPv6 address
Host = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=HOST_PATTERN)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
BufferBytes = Annotated[int, msgspec.Meta(ge=0, le=1 << 30)]  # 0 keeps the OS default (Linux doubles a value set)
# peer addresses a listener takes frames from, as the socket reports them (IPv4 dotted quads: no names, no DNS)
_OCTET = r"(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])"
IPV4_PATTERN = rf"^{_OCTET}(\.{_OCTET}){{3}}$"
IPv4 = Annotated[str, msgspec.Meta(pattern=IPV4_PATTERN)]
AllowList = Annotated[tuple[IPv4, ...], msgspec.Meta(max_length=256)]


class TransportClosed(Exception):
    """The medium is gone; the engine decides what happens next (reconnect, stop, fail over)."""


@dataclass(slots=True)
class TransportStats:
    """One set of counters for every adapter (a counter an adapter cannot hit stays 0); names become metrics."""
    chunks: int = 0             # chunks written to rx
    bytes_in: int = 0           # bytes in those chunks
    sent: int = 0               # send() calls that took their frames
    bytes_out: int = 0          # bytes written (a TCP link's held bytes once they are written)
    backpressure: int = 0       # send() calls that returned False
    oversize: int = 0           # datagram > max_datagram_bytes, TCP header > MAX_FRAME_BODY
    bad_version: int = 0        # TCP header with an unknown wire version (connection dropped)
    empty: int = 0              # zero-length datagrams (no frames, nothing to deliver)
    connections: int = 0        # TCP connections accepted or established
    disconnects: int = 0        # TCP connections that ended (peer left, error, or dropped by us)
    partial_discarded: int = 0  # disconnects that left part of an inbound frame behind (its bytes are dropped)
    held_discarded: int = 0     # disconnects that left taken outbound bytes unsent (TCP client: reconcile)
    connect_failures: int = 0   # TCP connect attempts that failed (client) or accepts that failed (server)
    send_errors: int = 0        # sends refused by the medium (UDP port unreachable)
    not_allowed: int = 0        # datagrams or connections from a peer the listener's `allow` list leaves out

    def as_dict(self):
        return asdict(self)


@runtime_checkable
class Inbound(Protocol):
    stats: TransportStats

    def open(self) -> None: ...
    def close(self) -> None: ...          # idempotent
    def fileno(self) -> int: ...          # -1: nothing to wait on: poll it from a spin loop
    def poll(self, rx, offset: int, rx_sizes, chunk_index: int, max_chunks: int) -> tuple[int, int]: ...
    def attach(self, loop, on_readable) -> None: ...  # loop.add_reader on fileno(), kept across reconnects
    def detach(self) -> None: ...


@runtime_checkable
class Outbound(Protocol):
    stats: TransportStats

    def open(self) -> None: ...
    def close(self) -> None: ...
    def send(self, frames) -> bool: ...
    def flush(self) -> bool: ...          # push bytes a send took but could not finish; True when none are held


class LoopReader:
    """add_reader/remove_reader bookkeeping, so an adapter whose fd changes (a TCP client that reconnects) stays
    registered, and no fd is ever closed while an event loop still watches it (uvloop would keep polling it)."""

    def __init__(self):
        self.loop = self.callback = None
        self.fd = -1

    def attach(self, loop, callback, fd):
        self.loop, self.callback = loop, callback
        self.watch(fd)

    def watch(self, fd):
        self.unwatch()
        if self.loop is not None and fd >= 0:
            self.loop.add_reader(fd, self.callback)
            self.fd = fd

    def unwatch(self):
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            self.fd = -1

    def detach(self):
        self.unwatch()
        self.loop = self.callback = None


class Transport:
    """What every adapter shares: stats, the closed flag, event-loop registration and a cached view of rx."""

    def __init__(self):
        self.stats = TransportStats()
        self.closed = True  # until open()
        self._reader = LoopReader()
        self._rx = self._rx_view = None

    def __enter__(self):
        if self.closed:  # `with` also works on a transport that is already open
            self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def attach(self, loop, on_readable):
        """Call `on_readable()` from `loop` (asyncio or uvloop) when poll has something; the callback polls."""
        self._reader.attach(loop, on_readable, self.fileno())

    def detach(self):
        self._reader.detach()

    def _view(self, rx):
        # recv_into needs a writable buffer; making the memoryview once per rx array saves an object per poll.
        if rx is not self._rx:
            self._rx, self._rx_view = rx, memoryview(rx).cast("B")
        return self._rx_view

    def _check_open(self):
        if self.closed:
            raise TransportClosed(f"{type(self).__name__} is not open")

    def _close_common(self):
        """Mark closed and drop loop registration and our hold on rx; returns False if already closed."""
        if self.closed:
            return False
        self.closed = True
        self._reader.detach()
        self._rx = self._rx_view = None
        return True


def parse_address(text):
    """Split "host:port" (IPv6 as "[::1]:port") into (host, port); ValueError names what is wrong."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or any(c.isspace() for c in host) or not port.isdigit() or int(port) > 65_535:
        raise ValueError(f'expected "host:port" with port 0..65535, got {json.dumps(text)}')
    return host, int(port)
