"""The peers that are not the product, for the demo, the tests and the benches: the simulated venue (an OMS and
the market behind it, sim/venue.py; the engine runs its compiled twin, kernels/venue.py, inside the batch) served
over TCP and Aeron (sim/servers.py), an OMS that answers nothing (sim/sink.py, for replays) and the synthetic
signal feed (sim/feed.py). Built only from configs handed in: sim/ never imports engine/."""
