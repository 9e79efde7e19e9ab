"""engine/wait.py: the spin driver's one epoll over every transport's descriptor."""
import socket

import pytest

from engine.wait import Readiness


class Link:
    """A transport as Readiness sees one: a descriptor (a socketpair's end; -1 when it has none or is down)."""

    def __init__(self, name, with_fd=True):
        self.name = name
        self.ours = self.peer = None
        if with_fd:
            self.connect()

    def connect(self):
        self.ours, self.peer = socket.socketpair()

    def drop(self):
        self.ours.close()
        self.peer.close()
        self.ours = self.peer = None

    def fileno(self):
        return -1 if self.ours is None else self.ours.fileno()

    def close(self):
        for end in (self.ours, self.peer):
            if end is not None:
                end.close()


@pytest.fixture
def links():
    made = []

    def make(*names, with_fd=True):
        new = [Link(name, with_fd) for name in names]
        made.extend(new)
        return new
    yield make
    for link in made:
        link.close()


def names(pairs):
    return [(t.name, s) for t, s in pairs]


def test_readiness_when_nothing_is_readable_then_nothing_is_ready_and_fdless_transports_are_read_always(links):
    oms, udp = links("oms", "udp")
    (aeron,) = links("aeron", with_fd=False)
    readiness = Readiness([(oms, 0), (udp, 1), (aeron, 2)])
    try:
        assert names(readiness.ready()) == []
        assert names(readiness.always) == [("aeron", 2)]
    finally:
        readiness.close()


def test_readiness_when_several_are_readable_then_they_come_in_polling_order_and_stay_ready_until_read(links):
    oms, udp, tcp = links("oms", "udp", "tcp")
    readiness = Readiness([(oms, 0), (udp, 1), (tcp, 2)])
    try:
        tcp.peer.send(b"x")
        oms.peer.send(b"y")
        assert names(readiness.ready()) == [("oms", 0), ("tcp", 2)]
        assert names(readiness.ready()) == [("oms", 0), ("tcp", 2)], "level-triggered: what is left stays ready"
        oms.ours.recv(1)
        assert names(readiness.ready()) == [("tcp", 2)]
    finally:
        readiness.close()


def test_readiness_when_the_link_drops_and_comes_back_then_sync_follows_its_new_descriptor(links):
    oms, udp = links("oms", "udp")
    up = {"oms": True}
    readiness = Readiness([(oms, 0), (udp, 1)], skip=lambda t: t is oms and not up["oms"])
    try:
        oms.drop()
        up["oms"] = False
        readiness.sync()
        assert names(readiness.ready()) == [] and names(readiness.always) == [], "a link that is down is not read"
        udp.drop()  # closed and reopened: the new descriptors may reuse the old numbers, and must still register
        udp.connect()
        oms.connect()
        up["oms"] = True
        readiness.sync()
        oms.peer.send(b"r")
        udp.peer.send(b"s")
        assert names(readiness.ready()) == [("oms", 0), ("udp", 1)]
    finally:
        readiness.close()


def test_readiness_when_a_descriptor_closed_under_it_then_sync_forgets_it_without_raising(links):
    oms, udp = links("oms", "udp")
    readiness = Readiness([(oms, 0), (udp, 1)])
    try:
        oms.ours.close()  # closed without the link noticing yet: the kernel dropped it from the epoll set
        oms.ours = None
        readiness.sync()
        assert names(readiness.always) == [("oms", 0)], "no descriptor now: read every pass until it has one"
        udp.peer.send(b"z")
        assert names(readiness.ready()) == [("udp", 1)]
    finally:
        readiness.close()
