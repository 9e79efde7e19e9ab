"""bench/persistence.py in --quick mode, once: it runs to the end and its JSON holds every figure issue 10 asks
for (the journal's cost per fsync policy against no journal, the snapshot's stall and write at both sizes, the
recovery rate). No time is asserted: the machine is shared."""
import json

from bench import persistence


def test_persistence_quick_when_run_then_every_figure_is_in_the_json(tmp_path):
    out = tmp_path / "persistence.json"
    persistence.run(quick=True, out_path=out, work_dir=tmp_path, log=lambda *_: None)
    result = json.loads(out.read_text())

    assert len(result["loadavg_before"]) == 3 and len(result["loadavg_after"]) == 3
    assert result["machine"]["cores"] >= 1
    sizes = result["journal"]["batch_sizes"]
    assert set(sizes) == {"1", "16", "256"}
    for entry in sizes.values():
        for mode in persistence.MODES:
            run = entry[mode]
            for unit in ("per_batch", "per_signal"):
                assert {"p50_us", "p99_us", "p999_us", "mean_us"} <= set(run[unit]) and run[unit]["n"] > 0
            assert run["signals"] > 0 and run["orders"] == run["signals"]  # the accept path, every signal
            assert (run["journal_bytes"] > 0) == (mode != "off")
        assert set(entry["ratio_on_off"]) == {"batch", "interval", "never"}
        for ratio in entry["ratio_on_off"].values():
            assert all(v > 0 for v in ratio.values())
        assert isinstance(entry["interval_target_met"], bool)
        assert entry["batch"]["fsyncs"] > 0

    snaps = result["snapshot"]
    assert set(snaps) == {"demo", "1000x1000"}
    assert snaps["1000x1000"]["strategies"] == 1000 and snaps["1000x1000"]["instruments"] == 1000
    for s in snaps.values():
        assert s["arena_bytes"] > 0 and s["file_bytes"] > s["arena_bytes"]
        for key in ("stall_us", "take_blocked_us", "write_ms"):
            assert {"min", "median", "max"} <= set(s[key])
        assert {"copy_us", "crc32_us", "journal_sync_us"} <= set(s["stall_parts_best_us"])
        assert s["step_idle"]["n"] > 0
    assert snaps["1000x1000"]["arena_bytes"] > snaps["demo"]["arena_bytes"]

    for key in ("recovery", "recovery_one_signal_a_poll"):
        r = result[key]
        assert r["signals"] > 0 and r["records"] > 0 and r["records_replayed"] == r["records"]
        assert r["recover_s"] > 0 and r["signals_per_s"] > 0 and r["records_per_s"] > 0
        assert r["digest_match"] is True  # recovery ends in the state the live engine had
    assert result["recovery_one_signal_a_poll"]["extrapolated_1M_s"] > 0
