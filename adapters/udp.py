"""UDP in and out. One datagram is one chunk (it may carry several frames).

The receiver does not look inside a datagram: garbage is delivered as it came and the decoder counts it.
Room rule: a poll reads another datagram only while rx has `max_datagram_bytes` of room left, because a
datagram read into less room than its size is cut by the kernel and the rest is lost. Set the limit to what
the feed sends (1472 for one Ethernet MTU, 8972 for jumbo frames) to use rx tightly; a larger datagram is
then counted as oversize and dropped whole, never delivered cut (Linux: MSG_TRUNC reports its real size).
A poll asks for readiness first: an empty poll then costs one syscall, not a recv that raises BlockingIOError.
"""
import select
import socket
from typing import Annotated

import msgspec

from adapters.base import AllowList, BufferBytes, Host, Port, Transport
from kernels.dtypes import FRAME_HEADER_SIZE

DatagramBytes = Annotated[int, msgspec.Meta(ge=FRAME_HEADER_SIZE, le=65536)]

_MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0)  # without it (not Linux) a cut datagram arrives cut; decoding counts it


class UdpReceiverConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: Host = "127.0.0.1"
    port: Port = 0  # 0: the OS picks one; read it back from `address`
    rcvbuf_bytes: BufferBytes = 4 << 20  # bursts land here between polls; what overflows the kernel drops
    max_datagram_bytes: DatagramBytes = 65536
    allow: AllowList = ()  # peer IP addresses that may send here; empty: anyone (loopback binds keep it local)


class UdpReceiver(Transport):
    """Non-blocking UDP socket; poll() receives datagrams straight into rx."""

    def __init__(self, config=UdpReceiverConfig()):
        super().__init__()
        self.config = config
        self._sock = self._ready = None
        self._allow = frozenset(config.allow)

    def open(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self.config.rcvbuf_bytes:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.rcvbuf_bytes)
            sock.bind((self.config.host, self.config.port))
        except BaseException:
            sock.close()
            raise
        self._ready = select.poll()
        self._ready.register(sock.fileno(), select.POLLIN)
        self._sock, self.closed = sock, False

    @property
    def address(self):
        return self._sock.getsockname()

    def fileno(self):
        return -1 if self.closed else self._sock.fileno()

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        self._check_open()
        view, limit, stats = self._view(rx), self.config.max_datagram_bytes, self.stats
        recv_into, allow = self._sock.recv_into, self._allow
        last_start = len(view) - limit  # past this, a full-size datagram would not fit
        room, n = min(max_chunks, len(rx_sizes) - chunk_index), 0  # chunk slots
        if room <= 0 or offset > last_start or not self._ready.poll(0):
            return 0, offset
        while n < room and offset <= last_start:
            try:
                if allow:  # the peer's address costs a recvfrom: paid only when a list is configured
                    size, (peer, _) = self._sock.recvfrom_into(view[offset:], limit, _MSG_TRUNC)
                    if peer not in allow:
                        stats.not_allowed += 1
                        continue
                else:
                    size = recv_into(view[offset:], limit, _MSG_TRUNC)
            except BlockingIOError:
                break
            if size > limit:
                stats.oversize += 1
            elif size == 0:
                stats.empty += 1
            else:
                rx_sizes[chunk_index + n] = size
                n += 1
                offset += size
                stats.bytes_in += size
        stats.chunks += n
        return n, offset

    def close(self):
        if self._close_common():
            self._ready.unregister(self._sock.fileno())
            self._sock.close()


class UdpSenderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: Host = "127.0.0.1"
    port: Port  # where the receiver listens
    sndbuf_bytes: BufferBytes = 0


class UdpSender(Transport):
    """Connected UDP socket (no address lookup per send). One send() is one datagram: up to 65507 bytes."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self._sock = None

    def open(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self.config.sndbuf_bytes:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.sndbuf_bytes)
            sock.connect((self.config.host, self.config.port))
        except BaseException:
            sock.close()
            raise
        self._sock, self.closed = sock, False

    def fileno(self):
        return -1 if self.closed else self._sock.fileno()

    def send(self, frames):
        self._check_open()
        try:
            size = self._sock.send(frames)
        except BlockingIOError:
            self.stats.backpressure += 1
            return False
        except ConnectionRefusedError:
            # An earlier datagram found no listener (ICMP). Linux reports it on this send, which did not go out.
            self.stats.send_errors += 1
            return False
        self.stats.sent += 1
        self.stats.bytes_out += size
        return True

    def flush(self):
        return True  # a datagram goes whole or not at all: nothing is ever held

    def close(self):
        if self._close_common():
            self._sock.close()
