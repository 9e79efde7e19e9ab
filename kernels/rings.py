"""Rings, in the LMAX Disruptor's words: every writer and reader of a ring, compiled or Python, uses these.

A ring is a table of records with a power-of-two capacity and two monotonic u64 sequences in the cursors
region: `head`, the producer's cursor (the next sequence to publish), and `tail`, the consumer's (the next to
read). It holds head - tail records; sequence q lives in slot q & (capacity - 1).
- a producer asks `claim` for the slot of the next sequence (NO_ROOM when the ring is full: it counts the drop,
  nothing is ever overwritten), writes the record there, then `publish`es it (head + 1);
- a consumer reads the `available` sequences [tail, head) and `release`s them (tail = head).
Sequences are read as int64 (they never reach 2**63): numba turns u64 + int into a float.
"""
import numpy as np

from kernels._jit import helper

HEAD, TAIL = 0, 1
NO_ROOM = -1


@helper
def room(cursors, ring, capacity):
    """Records the ring can still take."""
    return capacity - (np.int64(cursors[ring, HEAD]) - np.int64(cursors[ring, TAIL]))


@helper
def claim(cursors, ring, capacity):
    """The slot for the next sequence, or NO_ROOM if the ring is full. Nothing is published yet."""
    head = np.int64(cursors[ring, HEAD])
    if capacity == 0 or head - np.int64(cursors[ring, TAIL]) >= capacity:
        return NO_ROOM
    return head & (capacity - 1)


@helper
def publish(cursors, ring):
    """The claimed record is written: make it visible to the consumer."""
    cursors[ring, HEAD] = np.int64(cursors[ring, HEAD]) + 1


@helper
def head(cursors, ring):
    return np.int64(cursors[ring, HEAD])


@helper
def tail(cursors, ring):
    return np.int64(cursors[ring, TAIL])


@helper
def release(cursors, ring, upto):
    """The consumer is done with every sequence before `upto`."""
    cursors[ring, TAIL] = upto


# Python callers (the control plane, tests) call the same functions (a dispatch from Python costs ~150 ns more
# than the numpy assignment it does), and these.
def available(cursors, ring):
    """(tail, head) as Python ints: the sequences a Python consumer may read."""
    return cursors.item(ring, TAIL), cursors.item(ring, HEAD)


def slices(table, tail, head):
    """The records of sequences [tail, head) of a ring's table as at most two views (the ring may wrap)."""
    if head == tail:
        return ()
    capacity = len(table)
    start, stop = tail & (capacity - 1), head & (capacity - 1)
    if start < stop:
        return (table[start:stop],)
    return (table[start:], table[:stop]) if stop else (table[start:],)
