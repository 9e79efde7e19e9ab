"""TCP in (a server for many feed clients) and TCP both ways (a client: orders to the OMS, reports back).

A TCP read is cut into whole frames: the frames of one read become one chunk, and the unfinished frame at its
tail waits in the connection's `partial` (at most one frame, < MAX_FRAME_SIZE bytes) until the next read
completes it. A header that claims more than MAX_FRAME_BODY or another wire version means the stream can no
longer be framed: the whole frames before it are delivered, the connection is counted and dropped.

Room rule: a connection is read only while rx has MAX_FRAME_SIZE of room left, so its partial frame can always
be completed and every read makes progress.
Readiness is asked before reading (epoll for the server, poll for the client): an empty poll then costs one
syscall, not a recv that raises BlockingIOError (about 2 us more). Linux only, as the engine is.
Event loops: `attach(loop, on_readable)`. The server offers one fd for all its sockets (its epoll fd, which
nests in the loop's own epoll); the client registers its socket while connected and again after a reconnect.
"""
import errno
import os
import select
import socket
from typing import Annotated

import msgspec

from adapters.base import AllowList, BufferBytes, Host, Port, Transport, TransportClosed
from wire.frames import FRAME_BAD_VERSION, FRAME_OK, FRAME_OVERSIZE, MAX_FRAME_SIZE, scan_frames

_EOF = 3  # beside the FRAMES_* statuses: the peer closed or reset the connection
_IN_PROGRESS = {errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK, errno.EINTR}


def _tune(sock, rcvbuf, sndbuf):
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a frame goes out now, not after the next ACK
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)


class _Connection:
    __slots__ = ("sock", "partial")

    def __init__(self, sock):
        self.sock = sock
        self.partial = bytearray()  # the unfinished frame at the end of the last read

    def read_frames(self, view, offset):
        """One recv into view[offset:] behind the held partial frame -> (bytes of whole frames at offset, status).

        The caller guarantees MAX_FRAME_SIZE of room. Status FRAME_OK with 0 bytes: nothing whole yet.
        """
        held = len(self.partial)
        if held:
            view[offset:offset + held] = self.partial
        try:
            got = self.sock.recv_into(view[offset + held:])
        except BlockingIOError:
            return 0, FRAME_OK
        except (ConnectionResetError, ConnectionAbortedError, TimeoutError):
            got = 0
        if got == 0:
            return 0, _EOF
        end = offset + held + got
        whole, status = scan_frames(view, offset, end)
        if status == FRAME_OK:
            self.partial[:] = view[whole:end]
        return whole - offset, status

    def close(self, stats, status):
        """Count how the connection ended and close it."""
        stats.disconnects += 1
        if status == FRAME_OVERSIZE:
            stats.oversize += 1
        elif status == FRAME_BAD_VERSION:
            stats.bad_version += 1
        elif self.partial:
            stats.partial_discarded += 1
        self.sock.close()


class TcpServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: Host = "127.0.0.1"
    port: Port = 0  # 0: the OS picks one; read it back from `address`
    backlog: Annotated[int, msgspec.Meta(ge=1)] = 128
    rcvbuf_bytes: BufferBytes = 0  # set on the listener, inherited by every accepted connection
    allow: AllowList = ()  # peer IP addresses that may connect; empty: anyone (loopback binds keep it local)


class TcpServer(Transport):
    """Inbound frames from any number of clients; one chunk per connection read. Inbound only."""

    def __init__(self, config=TcpServerConfig()):
        super().__init__()
        self.config = config
        self._listener = self._epoll = None
        self._conns = {}  # fd -> _Connection
        self._allow = frozenset(config.allow)

    def open(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _tune(listener, self.config.rcvbuf_bytes, 0)
            listener.bind((self.config.host, self.config.port))
            listener.listen(self.config.backlog)
            epoll = select.epoll()
        except BaseException:
            listener.close()
            raise
        epoll.register(listener.fileno(), select.EPOLLIN)
        self._listener, self._epoll, self._conns, self.closed = listener, epoll, {}, False

    @property
    def address(self):
        return self._listener.getsockname()

    @property
    def n_connections(self):
        return len(self._conns)

    def fileno(self):
        """The epoll fd: readable when any client or the listener is."""
        return -1 if self.closed else self._epoll.fileno()

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        self._check_open()
        view, stats = self._view(rx), self.stats
        last_start = len(view) - MAX_FRAME_SIZE
        room, n = min(max_chunks, len(rx_sizes) - chunk_index), 0  # chunk slots
        if room <= 0 or offset > last_start:
            return 0, offset
        # Level-triggered: a connection left unread (no room) is reported again by the next poll.
        for fd, _ in self._epoll.poll(0):
            if n == room or offset > last_start:
                break
            conn = self._conns.get(fd)
            if conn is None:
                self._accept()
                continue
            size, status = conn.read_frames(view, offset)
            if size:
                rx_sizes[chunk_index + n] = size
                n += 1
                offset += size
                stats.bytes_in += size
            if status != FRAME_OK:
                del self._conns[fd]
                self._epoll.unregister(fd)
                conn.close(stats, status)
        stats.chunks += n
        return n, offset

    def _accept(self):
        while True:
            try:
                sock, (peer, _) = self._listener.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            except OSError:  # out of fds: keep serving who is connected; the listener stays readable, so retry
                self.stats.connect_failures += 1
                return
            if self._allow and peer not in self._allow:
                self.stats.not_allowed += 1  # closed before a byte is read: nothing it sent reaches rx
                sock.close()
                continue
            _tune(sock, 0, 0)
            self._conns[sock.fileno()] = _Connection(sock)
            self._epoll.register(sock.fileno(), select.EPOLLIN)
            self.stats.connections += 1

    def close(self):
        if not self._close_common():
            return
        for conn in self._conns.values():
            conn.close(self.stats, FRAME_OK)
        self._conns.clear()
        self._epoll.close()
        self._listener.close()


class TcpClientConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: Host = "127.0.0.1"  # resolved once at open(): no DNS on the hot path
    port: Port
    rcvbuf_bytes: BufferBytes = 0
    sndbuf_bytes: BufferBytes = 0


class TcpClient(Transport):
    """Frames out and frames back over one connection (the OMS). Non-blocking throughout.

    `connect()` makes progress: it starts an attempt if there is none, returns False while the attempt is under
    way and True once connected; a failed attempt raises TransportClosed. A lost connection raises
    TransportClosed from poll/send (after the chunks already read were returned). The engine owns the policy:
    it calls `reconnect()` or `connect()` again when its backoff says so.

    send() may write only part of a frame run; the rest is held (`pending_bytes`) and goes first. While bytes
    are held and still cannot go, send() returns False; `flush()` pushes them (e.g. from loop.add_writer).
    When the connection ends with bytes held, the frames they belong to never reached the peer whole:
    `take_unsent()` hands them to the engine, which cancels their orders in its books.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.connected = False
        self._address = None
        self._conn = None
        self._ready = select.poll()  # watches the connected socket
        self._out = bytearray()  # held: whole frames, the first `_out_sent` bytes of which are on the wire
        self._out_sent = 0
        self._unsent = bytearray()  # frames held when a connection ended: never sent whole

    def open(self):
        # Resolve now, so a later connect never waits on DNS; the first attempt starts at connect().
        info = socket.getaddrinfo(self.config.host, self.config.port, socket.AF_INET, socket.SOCK_STREAM)
        self._address, self.closed = info[0][4], False

    def fileno(self):
        return self._conn.sock.fileno() if self._conn else -1

    def attach(self, loop, on_readable):
        self._reader.attach(loop, on_readable, self.fileno() if self.connected else -1)

    @property
    def pending_bytes(self):
        return len(self._out) - self._out_sent

    def take_unsent(self):
        """The whole frames that were held when a connection ended (none reached the peer whole); cleared."""
        frames, self._unsent = bytes(self._unsent), bytearray()
        return frames

    def connect(self):
        self._check_open()
        if self.connected:
            return True
        if self._conn is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            _tune(sock, self.config.rcvbuf_bytes, self.config.sndbuf_bytes)
            self._conn = _Connection(sock)
            err = sock.connect_ex(self._address)
        else:
            sock = self._conn.sock
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or sock.connect_ex(self._address)
        if err in (0, errno.EISCONN):
            self.connected = True
            self.stats.connections += 1
            self._ready.register(sock.fileno(), select.POLLIN)
            self._reader.watch(sock.fileno())
            return True
        if err in _IN_PROGRESS:
            return False
        self._conn.sock.close()
        self._conn = None
        self.stats.connect_failures += 1
        raise TransportClosed(f"connect to {self._address}: {os.strerror(err)}")

    def disconnect(self):
        """Drop the current connection or attempt (counted): the engine gave up on this peer (it stopped
        answering); `connect()` starts a new one."""
        self._check_open()
        self._drop(FRAME_OK)

    def reconnect(self):
        """Drop the current connection or attempt (counted) and start a new one; returns connect()."""
        self._check_open()
        self._drop(FRAME_OK)
        return self.connect()

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        if not self.connected:
            self._raise_if_gone()
            return 0, offset
        view = self._view(rx)
        if min(max_chunks, len(rx_sizes) - chunk_index) <= 0 or len(view) - offset < MAX_FRAME_SIZE:
            return 0, offset
        if not self._ready.poll(0):
            return 0, offset
        size, status = self._conn.read_frames(view, offset)
        if size:
            rx_sizes[chunk_index] = size
            self.stats.chunks += 1
            self.stats.bytes_in += size
        if status != FRAME_OK:
            self._drop(status)
            if not size:  # else the next poll raises, so the frames read before the end are not lost
                self._raise_if_gone()
        return (1, offset + size) if size else (0, offset)

    def send(self, frames):
        if not self.connected:
            self._raise_if_gone()
            self.stats.backpressure += 1  # still connecting
            return False
        if self._out and not self.flush():
            self.stats.backpressure += 1
            return False
        try:
            sent = self._conn.sock.send(frames)
        except BlockingIOError:
            self.stats.backpressure += 1
            return False
        except OSError as e:  # EPIPE, ECONNRESET: Python ignores SIGPIPE, so these arrive as errors
            self._drop(_EOF)
            raise TransportClosed(f"send to {self._address}: {e}") from e
        if sent < len(frames):  # taken: the stream must carry the rest before anything else
            start = scan_frames(frames, 0, sent)[0]  # the frame the send cut: held whole, its head marked sent
            self._out += memoryview(frames)[start:]
            self._out_sent = sent - start
        self.stats.sent += 1
        self.stats.bytes_out += sent  # on the wire: held bytes count once written (or never, if the link ends)
        return True

    def flush(self):
        """Send held bytes; True when nothing is held."""
        if self._out and self.connected:
            try:
                written = self._conn.sock.send(self._out[self._out_sent:])
                self._out_sent += written
                self.stats.bytes_out += written
                sent_whole = scan_frames(self._out, 0, self._out_sent)[0]
                del self._out[:sent_whole]
                self._out_sent -= sent_whole
            except BlockingIOError:
                pass
            except OSError as e:
                self._drop(_EOF)
                raise TransportClosed(f"send to {self._address}: {e}") from e
        return not self._out

    def _drop(self, status):
        """End the connection (or attempt) and count it; held outbound bytes of it cannot be sent any more."""
        if self._conn is None:
            return
        self._reader.unwatch()
        if self.connected:
            self._ready.unregister(self._conn.sock.fileno())
            self._conn.close(self.stats, status)
        else:
            self._conn.sock.close()
        self._conn, self.connected = None, False
        if self._out:
            self.stats.held_discarded += 1
            self._unsent += self._out
            self._out.clear()
            self._out_sent = 0

    def _raise_if_gone(self):
        self._check_open()
        if self._conn is None:
            raise TransportClosed(f"not connected to {self._address}")

    def close(self):
        if self._conn is not None and not self.closed:
            self._drop(FRAME_OK)
        self._close_common()
