"""The Python side of the wire (docs/wire.md), for the engine's control plane, the simulated peers, the benches,
the tests and clients. kernels/codec.py is its compiled twin, which the engine decodes and encodes with; property
tests hold the two to the same verdict on the same bytes.

- wire/schema.py: the messages as msgspec Structs (Signal, MarketData, Order, ExecutionReport).
- wire/frames.py: the frame header, its verdicts (in the compiled decoder's order), scanning a byte run for whole
  frames, iterating and writing frames.
- wire/records.py: numpy records of whole fixed-width frames, so a batch of frames is one array (feed, benches).
"""
