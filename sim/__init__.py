"""The peers that are not the product, for the demo, the tests and the benches: the simulated venue (an OMS and
the market behind it, sim/venue.py), in process (sim/inprocess.py) or served over TCP and Aeron (sim/servers.py),
and the synthetic signal feed (sim/feed.py). Built only from configs handed in: sim/ never imports engine/."""
