"""bench/api_overhead.py runs: both engines answer every signal, the poller's reads are all answered (no figure is
asserted: the machine is shared)."""
from bench.api_overhead import measure, summarize


def test_api_overhead_when_run_short_then_both_sides_have_rounds_and_every_read_is_answered():
    samples, reads, stats = measure(blocks=2, rounds=200, warmup=100)
    assert len(samples["on"]) == len(samples["off"]) == 400
    result = summarize(samples, reads, stats)
    assert result["reads"]["sent"] == 4 and result["reads"]["statuses"] == {"200": 4}
    assert stats["reads"] == 4 and set(result["signal_to_order_us"]) == {"on", "off"}
