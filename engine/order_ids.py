"""Order ids that are never reused, across restarts too (docs/wire.md promises it to the OMS).

An order id is its generation shifted above the slot bits (kernels/pipeline.py): the generation counts up by one
per order and lives in the arena (S_ORDER_GEN), so a state recovered from the journal goes on where it stopped.
A state that starts new (no journal, `--fresh`, an empty journal) would start again at 1 and reuse the ids of
the runs before it; so the engine reserves generations ahead in a small file beside the journal directory
(`<journal dir>/../order-ids`): a new state starts at the reserved mark, and the mark is moved a block ahead
(written and synced) before the generation can reach it. The block is far more orders than any engine places
between two housekeeping passes (20 ms), so the kernels never wait on it. A lost or hand-edited file is the only
way back to reuse: the file holds one decimal number, and anything else refuses the start.
"""
import os
from pathlib import Path

from kernels.arena import S_ORDER_GEN

BLOCK = 1 << 20          # generations reserved at a time
FILE_NAME = "order-ids"


class OrderIdsCorrupt(ValueError):
    """The reservation file holds something other than one generation number."""


class OrderIds:
    """The reservation file of one engine: `start` once the state is built or recovered, `maintain` between
    batches."""

    def __init__(self, path):
        self.path = Path(path)
        self.reserved = self._read()

    def _read(self):
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return 0
        try:
            value = int(text.strip())
        except ValueError:
            value = -1
        if value < 0:
            raise OrderIdsCorrupt(f"{self.path}: not an order id generation ({text[:40]!r}); it keeps order ids "
                                  f"unique across restarts: restore it, or remove it knowing ids may repeat")
        return value

    def start(self, scalars, new_state):
        """A new state starts past every generation a run before may have used; a recovered one goes on."""
        if new_state:
            scalars[S_ORDER_GEN] = max(int(scalars[S_ORDER_GEN]), self.reserved)
        self.reserve(int(scalars[S_ORDER_GEN]))

    def maintain(self, scalars):
        generation = int(scalars[S_ORDER_GEN])
        if generation + BLOCK // 2 > self.reserved:
            self.reserve(generation)

    def reserve(self, generation):
        """Move the mark a block past `generation`, on disk (synced) before it counts."""
        mark = generation + BLOCK
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{mark}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.reserved = mark
