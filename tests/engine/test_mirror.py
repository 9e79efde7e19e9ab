"""engine/mirror.py: mirror records built from an EngineState, and the state they describe read back from a real
redis-server through the mirror."""
from pathlib import Path

import msgspec
import redis

from adapters.redis_mirror import RedisMirror, RedisMirrorConfig, StrategySnapshot
from engine.mirror import strategy_snapshot
from engine.state import EngineState
from kernels.dtypes import HALTED

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
MOMENTUM, PAIRS = 2, 3
ESZ5, NQZ5, TSLA = 0, 1, 5


def test_strategy_snapshot_when_built_then_it_carries_state_deploy_positions_and_pnl():
    state = EngineState.load(DEMO)
    row = state.strategies[MOMENTUM]
    row["state"], row["deploy"], row["realized"], row["unrealized"], row["fees"] = HALTED, 3, 10.5, -2.25, 0.75
    state.positions[MOMENTUM, NQZ5]["qty"] = -4
    state.positions[MOMENTUM, TSLA]["qty"] = 7  # held though not allowed: still listed

    record = strategy_snapshot(state, MOMENTUM, seq=12, ts_ns=99)

    assert record == StrategySnapshot(seq=12, ts_ns=99, strategy="momentum", state="HALTED", version="1.2.0",
                                      deploy=3, positions={"ESZ5": 0, "NQZ5": -4, "TSLA": 7}, realized=10.5,
                                      unrealized=-2.25, fees=0.75)


def test_strategy_snapshot_when_mirrored_then_redis_holds_what_the_state_report_says(redis_server):
    state = EngineState.load(DEMO)
    state.positions[PAIRS, 3]["qty"] = 5
    records = [strategy_snapshot(state, s, seq=s + 1, ts_ns=1) for s in range(len(state.strategy_names))]
    config = msgspec.convert({"host": redis_server.host, "port": redis_server.port}, RedisMirrorConfig)
    client = redis.Redis(redis_server.host, redis_server.port, decode_responses=True)
    try:
        with RedisMirror(config, state.config.engine.name, since=lambda seq: records[seq:]) as mirror:
            for record in records:
                mirror.submit(record)
            assert mirror.flush(60)

        report = state.snapshot()
        for name, expected in report.items():
            mirrored = client.hgetall(f"orchestrator:demo:strategy:{name}")
            assert mirrored["state"] == expected["state"] and int(mirrored["deploy"]) == expected["deploy"]
            assert mirrored["version"] == expected["version"]
            assert {k.removeprefix("position:"): int(v) for k, v in mirrored.items() if k.startswith("position:")} \
                == {symbol: p["qty"] for symbol, p in expected["positions"].items()}
            assert float(mirrored["realized"]) == expected["pnl"]["realized"]
    finally:
        client.close()
