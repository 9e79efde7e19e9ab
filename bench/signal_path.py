"""The in-process signal path of this checkout, for A/B runs between two checkouts in one sitting: one signal
through run_batch (OneSignal) and 4096 signals in one batch (RunBatchStream), medians and p99 in ns, as JSON.

    git worktree add /tmp/before <commit>
    for tree in /tmp/before .; do (cd $tree && PYTHONPATH=$PWD python -m bench.signal_path); done  # twice, A B A B
"""
import json

import numpy as np

from bench.workloads import OneSignal, RunBatchStream


def main():
    out = {}
    for name, workload, rounds in (("one_signal", OneSignal(), 20_000), ("batch_4096", RunBatchStream(4096), 300)):
        for _ in range(rounds // 20):  # warm: caches, branch predictors, the books at their steady size
            workload.time_once()
        times = np.array([workload.time_once() for _ in range(rounds)])
        out[name] = {"p50_ns": float(np.median(times)), "p99_ns": float(np.percentile(times, 99))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
