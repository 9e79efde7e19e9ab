"""docs/risk.md is the risk contract: every reason code the kernels can set is a row of its tables with the
level the code gives it, every breaker cause is a row of the breakers table, and every engine counter is a
series of docs/metrics.md. A rule added to the code and not to the contract fails here."""
from pathlib import Path

from kernels.dtypes import COUNTER_NAMES, REASON_LEVEL, REASON_NAMES, TRIP_NAMES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def table_rows(text, header):
    """The first cells of the rows of every table whose header row starts with `header`, cells stripped."""
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] == header:
                inside = True
            elif inside and not set(cells[0]) <= {"-"}:
                rows.append(cells)
        else:
            inside = False
    return rows


def test_risk_md_when_read_then_every_reason_is_a_row_with_its_level():
    rows = table_rows((DOCS / "risk.md").read_text(), "reason")
    documented = {}
    for reason, level, *_ in rows:
        documented.setdefault(reason, set()).add(level)
    assert set(documented) == set(REASON_NAMES), "reasons in the code and in docs/risk.md differ"
    assert {r: levels for r, levels in documented.items() if levels != {REASON_LEVEL[r]}} == {}, \
        "a reason's level in docs/risk.md is not the code's"


def test_risk_md_when_read_then_every_breaker_cause_is_a_row_with_its_config_keys():
    rows = table_rows((DOCS / "risk.md").read_text(), "cause")
    assert [r[0] for r in rows] == list(TRIP_NAMES)
    assert all(r[1] and r[2] for r in rows), "each breaker names its config keys and its basis"


def test_metrics_md_when_read_then_every_engine_counter_is_a_series():
    text = (DOCS / "metrics.md").read_text()
    assert [c for c in COUNTER_NAMES if f"`orchestrator_engine_{c}_total`" not in text] == []
