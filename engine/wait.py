"""Readiness for the spin driver: one epoll over every transport that has a descriptor, the rest polled each pass.

One `epoll_wait(0)` a pass tells which of the engine's transports have something (one syscall for all of them,
where polling each costs one syscall or more apiece), so a pass polls only the ready ones, with `poll_ready` (no
readiness question of their own). A transport without a descriptor (`fileno() == -1`: Aeron) is polled every pass.
The OMS link's descriptor changes when it reconnects and goes when it drops: `sync()` registers what each
transport has now; the driver calls it after every heartbeat and whenever the link went up or down.

Measured here (timeit, one process): epoll_wait(0) over three idle sockets ~0.3 us, against ~2.3-2.7 us for
polling the same three transports (UDP, TCP server, TCP client) one by one. A compiled epoll_wait through ctypes
would save part of the ~0.15 us of Python around the syscall, and cost a compile at every start: not worth it.
"""
import errno
import select


class Readiness:
    """Which of `sources` ((transport, source id) pairs, in the engine's polling order) to read this pass."""

    def __init__(self, sources, skip=lambda transport: False):
        self.sources = list(sources)
        self._skip = skip  # transports not to read now (the OMS link while it is down: it reconnects first)
        self._epoll = select.epoll()
        self._by_fd = {}   # fd -> (polling order, transport, source)
        self.always = []   # (transport, source) without a descriptor: read every pass
        self.sync()

    def sync(self):
        """Register every transport's current descriptor (a reconnected link has a new one; a closed one left the
        epoll set by itself); transports with none are read every pass."""
        wanted, always = {}, []
        for order, (transport, source) in enumerate(self.sources):
            if self._skip(transport):
                continue
            fd = transport.fileno()
            if fd < 0:
                always.append((transport, source))
            else:
                wanted[fd] = (order, transport, source)
        for fd in [fd for fd in self._by_fd if fd not in wanted]:
            self._forget(fd)
        for fd in wanted:
            try:  # registered already (modify) or not (a new descriptor, perhaps a closed one's number: register)
                self._epoll.modify(fd, select.EPOLLIN)
            except FileNotFoundError:
                self._epoll.register(fd, select.EPOLLIN)
        self._by_fd, self.always = wanted, always

    def _forget(self, fd):
        try:
            self._epoll.unregister(fd)
        except OSError as e:  # closed already: the kernel dropped it from the set
            if e.errno not in (errno.ENOENT, errno.EBADF):
                raise

    def ready(self):
        """The (transport, source) pairs whose descriptor is readable now, in polling order (the OMS link first)."""
        events = self._epoll.poll(0)
        if not events:
            return ()
        by_fd = self._by_fd
        if len(events) == 1:
            entry = by_fd.get(events[0][0])
            return () if entry is None else ((entry[1], entry[2]),)
        entries = sorted(by_fd[fd] for fd, _ in events if fd in by_fd)
        return [(transport, source) for _, transport, source in entries]

    def close(self):
        self._epoll.close()
