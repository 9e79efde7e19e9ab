"""bench/api_overhead.py runs: both engines answer every signal, the poller's reads are all answered (no figure is
asserted: the machine is shared)."""
from bench.api_overhead import measure, summarize


def test_api_overhead_when_run_short_then_both_sides_have_rounds_and_every_read_is_answered():
    samples, reads, stats = measure(blocks=2, rounds=200, warmup=100)
    assert len(samples["on"]) == len(samples["off"]) == 400
    result = summarize(samples, reads, stats)
    assert result["reads"]["sent"] == 4 and result["reads"]["statuses"] == {"200": 4}
    assert stats["reads"] == 4 and set(result["signal_to_order_us"]) == {"on", "off"}


def test_api_overhead_when_the_mirror_is_on_then_it_writes_to_redis_and_drops_nothing(tmp_path):
    from tests.infra.servers import RedisServer
    server = RedisServer(tmp_path / "redis").start()
    try:
        samples, reads, stats = measure(blocks=1, rounds=200, warmup=100, redis_url=server.url)
    finally:
        server.stop()
    mirror = stats["mirror"]
    assert len(samples["on"]) == 200 and mirror["records"] > 0 and mirror["writer"]["dropped"] == 0
