"""An OMS that takes every order and answers nothing: for replays, whose reports come from the recording."""
from adapters.base import TransportStats


class NullOms:
    """Orders go nowhere; reports come from elsewhere (a recording). Meets the transport contract."""

    def __init__(self):
        self.stats = TransportStats()

    def send(self, frames):
        self.stats.sent += 1
        self.stats.bytes_out += len(frames)
        return True

    def poll(self, rx, offset, rx_sizes, chunk_index, max_chunks):
        return 0, offset
