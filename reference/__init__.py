"""The rules once more, in plain Python: the oracle the kernels are tested against and the baseline they are
measured against. Not part of the product (nothing in kernels/, wire/, adapters/, sim/ or engine/ imports it;
tests/test_import_rules.py holds both ways).

- rules.py: the event rules (a signal, a mark move, an execution report, the clock) over Python tables;
- stream.py: a stream of (arrival time, bytes) chunks in arrival order, as kernels/batch.py `run_batch` walks it:
  frames, decoding, market data, the rules and the simulated venue in stream time;
- records.py: table rows and ring records generated from the kernels' dtypes;
- compare.py: a kernel state and the reference held to each other, field by field, floats bit for bit.

Independent of the kernels on purpose: it takes from kernels/ only the contract (the constants and dtypes of
kernels/dtypes.py, the region and ring ids of kernels/arena.py and kernels/rings.py) and never calls a kernel
function, compiled or as Python, so a bug in a kernel cannot hide in its own oracle. It decodes with msgspec
(wire/schema.py, the documented format, which the compiled decoder is property-tested to match), frames with
wire/frames.py, and its venue is sim/venue.py `SimulatedOms` (property-tested against the compiled venue; it
borrows that venue's cent rounding and splitmix64, both plain arithmetic). It may build its first state with
engine/state.py from a config, so the reference and the engine start from the same tables.
"""
