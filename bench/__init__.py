"""Benchmarks: micro (pytest-benchmark, one file per hot path), end to end (real processes over loopback), the
plain-Python reference, the regression gate and the reports. `python -m bench --help`; bench/README.md."""
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CONFIG_DIR = BENCH_DIR / "config"
RESULTS_DIR = BENCH_DIR / "results"
BASELINES_DIR = BENCH_DIR / "baselines"
