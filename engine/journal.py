"""What the engine journals, and when: every input that can change its state, in the order it was applied.

The engine is a deterministic function of its inputs: the inbound chunks (signals, market data, the OMS's
reports, the ticks of time passing), each with its arrival time and source, and the commands applied between
batches. The journal holds exactly those, so a fresh engine fed the journal comes out the same, bit for bit:
- `Arrival`: the chunks one poll of one transport wrote to rx (or one tick), at poll time, before any batch
  decides them (write-ahead: a SIGKILL after a batch never loses what it decided on);
- `Applied`: a command, as it is applied, with its stream position: the chunks still waiting in rx then
  (`pending_chunks`, `pending_bytes`: a batch stopped by back-pressure leaves some), so a replay applies it
  between the same two events.
`EngineJournal.commit()` ends the step's records before its orders leave (they are in the page cache from the
moment they are framed; the commit moves spilled ones and syncs as configured), so the OMS never holds an order
the journal cannot explain.

Arrival bodies have a fixed binary layout, framed by one compiled call straight from rx (kernels/journal.py,
which documents the format); `Applied` bodies are KIND_APPLIED's 8-byte prefix and a msgpack array (msgspec).
"""
import logging
import struct

import msgspec
import numpy as np

from adapters.journal import JournalConfig, JournalError, JournalWriter
from kernels.journal import APPLIED_HEAD, ARRIVAL_HEAD, KIND_APPLIED, KIND_ARRIVAL
from engine.commands import AnyCommand
from engine.config.schema import Strategy

log = logging.getLogger("orchestrator.journal")


class Arrival(msgspec.Struct, frozen=True):  # decoded from the binary layout (kernels/journal.py), never msgpack
    time_ns: int
    source: int              # rx_sources: 0 the OMS link (and ticks), 1.. the listeners
    sizes: list[int]         # the chunks' lengths, in order; [0] for a tick
    data: bytes              # the chunks' bytes, back to back


class Applied(msgspec.Struct, array_like=True, frozen=True):
    at_ns: int               # the clock the command was applied at
    pending_chunks: int      # chunks that had arrived but were not yet decided ...
    pending_bytes: int       # ... and their bytes: the last ones of the arrivals before this record
    command: AnyCommand
    spec: Strategy | None = None  # the strategy file a register, deploy or shadow read, as it was read


Record = Arrival | Applied
_encoder = msgspec.msgpack.Encoder()
_applied = msgspec.msgpack.Decoder(Applied)
_APPLIED_PREFIX = bytes([KIND_APPLIED]) + bytes(APPLIED_HEAD - 1)
_ARRIVAL = struct.Struct("<B3xiqii")  # kind, source, time_ns, chunks, data bytes: kernels/journal.py's layout


def decode(body) -> Record:
    """A record's body as an Arrival or an Applied (a ValueError for a body of neither kind)."""
    kind = body[0]
    if kind == KIND_ARRIVAL:
        _, source, time_ns, n, nbytes = _ARRIVAL.unpack_from(body)
        sizes = np.frombuffer(body, np.int32, n, ARRIVAL_HEAD).tolist()
        start = ARRIVAL_HEAD + 4 * n
        return Arrival(time_ns, source, sizes, bytes(body[start:start + nbytes]))
    if kind == KIND_APPLIED:
        return _applied.decode(body[APPLIED_HEAD:])
    raise ValueError(f"a journal record of unknown kind {kind}")


class EngineJournal:
    """The engine's journal writer: `arrival`, `applied`, then `commit()` once per step. Errors follow
    `on_error`: "halt" (the engine stops trading until an operator acts: see Engine) or "alarm" (log, count,
    keep trading, keep the records buffered and retry; never a silent gap)."""

    def __init__(self, config: JournalConfig, directory, next_seq=1, on_error="halt"):
        self.writer = JournalWriter(config, directory, next_seq)
        self.on_error = on_error
        self.errors = 0
        self.failing = False  # the last commit failed
        # arrival(time_ns, source, rx, start, end, rx_sizes, first, n): chunks first..first+n of rx, rx[start:end],
        # arrived at time_ns from `source` (the writer's own method: no frame between the poll and the kernel)
        self.arrival = self.writer.append_arrival

    def open(self):
        self.writer.open()

    @property
    def last_seq(self):
        return self.writer.next_seq - 1

    def applied(self, at_ns, pending_chunks, pending_bytes, command, spec=None) -> int:
        body = _encoder.encode(Applied(at_ns, pending_chunks, pending_bytes, command, spec))
        return self.writer.append(_APPLIED_PREFIX + body)

    def commit(self) -> bool:
        """Write what was appended; False when the disk refused (counted and logged once per outage)."""
        try:
            self.writer.commit()
        except JournalError as e:
            self.errors += 1
            if not self.failing:
                log.critical("journal: %s (policy %r; %d bytes waiting)", e, self.on_error, self.writer.pending)
            self.failing = True
            return False
        if self.failing:
            log.warning("journal: writing again after %d failed commits", self.errors)
        self.failing = False
        return True

    def sync(self):
        self.writer.sync()

    def close(self):
        try:
            self.writer.close()
        except OSError as e:
            log.critical("journal: closing: %s", e)
