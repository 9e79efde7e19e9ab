"""`orchestrator export`: the journal of a real run, replayed into Parquet files that agree with the run's report."""
import json
import re
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.e2e.e2e_kit import derive_config, orders_sent


@pytest.fixture
def config(tmp_path):
    return derive_config(tmp_path / "config", strategies={"pairs": {"enabled": True}},
                         engine={"oms": {"sim": {"fee_per_unit": 0.5, "partial_fill_ratio": 0.3, "seed": 3}}})


def test_export_when_a_run_journaled_then_parquet_files_hold_its_orders_fills_and_pnl(procs, config, tmp_path):
    engine = procs.engine(config)
    summary = procs.feed(engine, "udp", "--rate", 2000, "--count", 1500, "--duration", 0, "--seed", 1,
                         "--bad-ratio", 0.05)
    engine.wait_status(lambda r: r["counters"]["signals"] >= summary["signals"] and
                       r["oms"]["venue"]["pending"] == 0, "the feed decided")
    report = engine.report()
    out = tmp_path / "export"

    code, stdout, stderr = procs.run("export", str(config), "--out", str(out), "--json", name="export")

    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["state_digest"] == report["state_digest"], "the replay ends where the run did"
    tables = {name: pq.read_table(out / f"{name}.parquet") for name in ("orders", "rejects", "fills", "pnl",
                                                                         "latency")}
    counters = report["counters"]
    assert tables["orders"].num_rows == counters["orders"] == orders_sent(report) > 0
    assert tables["fills"].num_rows == counters["fills"] > 0
    assert tables["rejects"].num_rows == counters["rejects"] - counters["reject_ring_full"]
    assert tables["latency"].num_rows == counters["orders"]
    assert {name: f["rows"] for name, f in result["files"].items()} == {n: t.num_rows for n, t in tables.items()}

    orders, fills, pnl = (tables[n].to_pylist() for n in ("orders", "fills", "pnl"))
    for name, s in report["strategies"].items():
        assert sum(1 for o in orders if o["strategy"] == name) == s["orders"], name
        assert sum(f["qty"] for f in fills if f["strategy"] == name) == s["filled_qty"], name
        rows = [p for p in pnl if p["strategy"] == name]
        for key in ("realized", "unrealized", "fees"):
            assert sum(p[key] for p in rows) == pytest.approx(s["pnl"][key], abs=1e-6), (name, key)
        assert {p["version"] for p in rows} <= {s["version"]}
        for symbol, position in s["positions"].items():
            row = [p for p in rows if p["instrument"] == symbol]
            if position["realized"] or position["fees"]:
                assert sum(p["realized"] for p in row) == pytest.approx(position["realized"], abs=1e-6)
    by_reason = {}
    for reasons in tables["rejects"].column("reasons").to_pylist():
        for reason in reasons:
            by_reason[reason] = by_reason.get(reason, 0) + 1
    expected = {}
    for s in report["strategies"].values():
        for reason, count in s["rejects"]["by_reason"].items():
            expected[reason] = expected.get(reason, 0) + count
    assert by_reason == expected
    latency = tables["latency"]
    filled = latency.filter(pc.is_valid(latency.column("first_fill_ts_ns")))
    assert filled.num_rows == len({f["order_id"] for f in fills})
    assert pc.min(filled.column("order_to_first_fill_ns")).as_py() >= 0
    assert fills[0]["exec_type"] in ("fill", "partial_fill") and orders[0]["order_type"] in ("limit", "market", "ioc")
    assert documented_schema() == {name: [(f.name, arrow_type(f.type)) for f in table.schema]
                                   for name, table in tables.items()}, "docs/export.md and the files disagree"


def documented_schema():
    """{file: [(column, type)]} from docs/export.md's tables, in their order."""
    out, current = {}, None
    for line in (Path(__file__).resolve().parents[2] / "docs" / "export.md").read_text().splitlines():
        heading = re.match(r"^## (\w+)\.parquet$", line)
        if heading:
            current = out.setdefault(heading.group(1), [])
        elif current is not None and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            current.append((cells[0].strip("`"), cells[1].replace("&lt;", "<").replace("&gt;", ">")))
    return out


def arrow_type(t):
    return re.sub(r"list<\w+: ", "list<", str(t))  # list<item: string> (or element:) -> list<string>


def test_export_when_the_journal_directory_is_missing_then_it_says_so(procs, config, tmp_path):
    code, _, stderr = procs.run("export", str(config), "--out", str(tmp_path / "x"), "--journal",
                                str(tmp_path / "nowhere"), name="export")

    assert code == 1 and "cannot export: no journal directory" in stderr
