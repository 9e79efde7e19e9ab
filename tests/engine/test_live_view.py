"""engine/report.py: the live view, drawn as text from a snapshot of plain numbers (issue 14 item 6)."""
from pathlib import Path
from types import SimpleNamespace

from engine.driver import EngineStats
from engine.metrics import LatencyRecorder
from engine.report import live_snapshot, live_table, live_text
from engine.state import EngineState
from kernels.dtypes import C_FRAME_BAD_VERSION, C_SIGNALS, REASON_NAMES

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"


def demo_service():
    state = EngineState.load(DEMO)
    engine = SimpleNamespace(state=state, oms_up=True, stats=EngineStats())
    return SimpleNamespace(engine=engine, latency=LatencyRecorder(state, lambda: 0))


def test_live_snapshot_when_taken_then_it_holds_plain_values_the_next_batch_cannot_change():
    svc = demo_service()
    state = svc.engine.state
    state.counters[C_SIGNALS] = 7
    state.positions[1, 0]["qty"] = -3
    state.strategies[1]["orders"] = 4
    state.reason_counts[1, 2] = 5
    snapshot = live_snapshot(svc)
    state.counters[C_SIGNALS] = 8
    state.positions[1, 0]["qty"] = 0
    name, _, position, _, orders, _, _, top, _ = snapshot["strategies"][1]
    assert name == state.strategy_names[1] and orders == "4" and top == REASON_NAMES[2]
    assert position == f"{state.instrument_symbols[0]} -3"
    assert snapshot["caption"]["signals"] == 7
    assert all(type(cell) is str for row in snapshot["strategies"] for cell in row)
    assert len(snapshot["strategies"]) == len(state.strategy_names)


def test_live_text_when_drawn_then_one_aligned_row_per_strategy_and_the_counters_under_them():
    svc = demo_service()
    svc.engine.state.counters[C_FRAME_BAD_VERSION] = 2
    svc.engine.oms_up = False
    lines = live_table(svc).splitlines()
    names = svc.engine.state.strategy_names
    assert "OMS DOWN" in lines[0] and lines[1].split()[:2] == ["strategy", "state"]
    assert [line.split()[0] for line in lines[3:3 + len(names)]] == names
    assert len({len(line) for line in lines[1:3 + len(names)]}) == 1, "columns aligned"
    assert "bad input 2" in lines[-1] and "unsent 0" in lines[-1]
    assert live_text(live_snapshot(svc)).splitlines()[1:] == lines[1:]
