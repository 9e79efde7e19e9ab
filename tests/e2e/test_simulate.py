"""`orchestrator simulate` as a user runs it: a generated stream saved as Parquet and run again gives the same
digest; a live run's journal gives the live run's orders; bad input is refused naming the column or the row."""
import json

import numpy as np

from sim.stream import STREAM_T, write_parquet
from tests.e2e.e2e_kit import derive_config


def simulated(procs, *args, name="simulate"):
    code, out, err = procs.run("simulate", *map(str, args), "--json", name=name, timeout=300)
    assert code == 0, err
    return json.loads(out)


def test_simulate_when_a_stream_is_generated_saved_and_run_again_then_the_same_digest(procs, tmp_path):
    config, stream = derive_config(tmp_path / "config"), tmp_path / "stream.parquet"

    first = simulated(procs, config, "--generate", 30_000, "--seed", 4, "--save", stream, name="generate")
    again = simulated(procs, config, stream, name="parquet")

    assert first["digest"] == again["digest"] and first["events"] == again["events"] == 30_000
    assert first["orders"] > 0 and first["fills"] > 0 and first["events_per_second"] > 0
    assert first["venue"]["fills"] + first["venue"]["partial_fills"] == first["counters"]["fills"]
    other = simulated(procs, config, "--generate", 30_000, "--seed", 5, name="other-seed")
    assert other["digest"] != first["digest"]


def test_simulate_when_given_a_live_runs_journal_then_it_trades_what_the_live_run_traded(procs, tmp_path):
    config = derive_config(tmp_path / "config")
    engine = procs.engine(config)
    procs.feed(engine, "udp", "--rate", 2000, "--count", 1000, "--duration", 0, "--seed", 2)
    live = engine.report()

    result = simulated(procs, config, config / "var" / "journal")

    assert result["orders"] == live["counters"]["orders"] > 0
    assert result["counters"]["fills"] == live["counters"]["fills"]
    assert {n: s["positions"] for n, s in result["strategies"].items()} == \
        {n: s["positions"] for n, s in live["strategies"].items()}


def test_simulate_when_the_stream_is_not_one_then_exit_1_naming_what_is_wrong(procs, tmp_path):
    config = derive_config(tmp_path / "config")
    rows = np.zeros(3, STREAM_T)
    rows["msg"], rows["time_ns"] = 2, [3, 2, 1]
    write_parquet(rows, tmp_path / "backwards.parquet")
    rows["time_ns"], rows["msg"][1] = [1, 2, 3], 7
    write_parquet(rows, tmp_path / "unknown.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"time_ns": [1, 2]}), tmp_path / "narrow.parquet")

    for file, expected in (("backwards.parquet", "row 1: time_ns goes back"),
                           ("unknown.parquet", "row 1: msg 7 is neither"),
                           ("narrow.parquet", "no column msg, instrument"),
                           ("missing.parquet", "missing.parquet")):
        code, out, err = procs.run("simulate", str(config), str(tmp_path / file), name=file)
        assert code == 1 and out == "" and "cannot simulate" in err and expected in err, (file, err)
