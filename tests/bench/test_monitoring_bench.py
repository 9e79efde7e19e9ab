"""bench/monitoring.py runs (issue 15's on-vs-off benchmark): a short run with its scraper, so a change that breaks
the bench fails here. Nothing here asserts a time."""
import json

from bench import monitoring


def test_monitoring_bench_when_run_short_then_both_engines_trade_alike_and_the_scraper_got_answers(tmp_path):
    out = tmp_path / "monitoring.json"
    monitoring.main(["--batches", "400", "--out", str(out), "--scrape-ms", "200"])
    result = json.loads(out.read_text())
    on, off = result["on"], result["off"]
    assert on["signals"] == off["signals"] == 400 * len(monitoring.SIGNALS)
    assert (on["orders"], on["fills"]) == (off["orders"], off["fills"]) and on["orders"] > 0
    assert on["publishes"] >= 1
    for route in ("metrics", "view"):
        assert result["scrapes"][route]["ok"] >= 1 and result["scrapes"][route]["failed"] == 0
    assert set(result["ratio"]) == {"p50_us", "p99_us", "p99.9_us", "mean_us"}
    assert isinstance(result["within_budget"], bool) and len(result["load_average"]["before"]) == 3
