"""Where the end-to-end harness's processes ran, and what else the machine was doing meanwhile (Linux /proc).

`cores_for(placement)` picks the cores: `pinned` (default) puts the engine (or the floor) alone on the last usable
core and the peer (load generator + OMS receiver) and the harness itself on the others; `unpinned` lets the
scheduler place everything (for comparison: a TCP send then wakes the receiver onto whichever core is free, which
on two cores is often the spinning engine's).

`Monitor` watches a run: before and after, the load average, every core's /proc/stat counters (busy and steal
share per core) and each watched process's scheduler counters (/proc/PID/task/*/schedstat: time on a CPU and
time runnable but waiting for one; involuntary context switches); during the run, every SAMPLE_S, which CPU each
thread of each watched process is on (/proc/PID/task/TID/stat, field `processor`) and whether it is running.
`stop()` returns a dict per run: per process its affinity, the CPUs it was seen running on, its CPU and run-queue
shares; per core busy and steal; what the rest of the machine used (busy time on all cores minus our processes'
time); and warnings, also printed on stderr by the harness:
- two spinning processes whose affinities make them share a core (or that were seen on one core together);
- a spinning process that waited for its CPU more than WAIT_WARN of the run (someone else ran on its core);
- the rest of the machine using more than OTHERS_WARN of it.
"""
import os
import threading
import time

SAMPLE_S = 0.1          # a sample reads a few /proc files (~30 us on the peer's core): 10 a second
WAIT_WARN = 0.02      # a spinning process runnable but not running for 2% of the run: its core was shared
OTHERS_WARN = 0.10    # other processes used 10% of the machine's CPU time
SHARED_WARN = 0.05    # two spinning processes seen on one CPU in 5% of the samples
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def usable_cores():
    return sorted(os.sched_getaffinity(0))


def cores_for(placement, cores=None):
    """(engine cores, peer cores) for a placement: `pinned` or `unpinned` (None: no pinning)."""
    cores = cores or usable_cores()
    if placement == "unpinned" or len(cores) < 2:
        return None, None
    return {cores[-1]}, set(cores[:-1])


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cpu_times():
    """{cpu: (busy_jiffies, total_jiffies, steal_jiffies)} from /proc/stat."""
    out = {}
    text = _read("/proc/stat") or ""
    for line in text.splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals[:8]] + [0] * max(0, 8 - len(vals))
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            total = sum(v[:8])
            out[int(name[3:])] = (total - idle - iowait, total, steal)
    return out


def _threads(pid):
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _thread_stat(pid, tid):
    """(state, processor) of one thread, or None."""
    text = _read(f"/proc/{pid}/task/{tid}/stat")
    if not text:
        return None
    rest = text[text.rindex(")") + 2:].split()  # fields after the command name: rest[0] is field 3 (state)
    return rest[0], int(rest[36])                # field 39: processor


def sched_counters(pid):
    """Summed over a process's threads: ns on a CPU, ns runnable waiting for one, involuntary switches."""
    run = wait = nivcsw = 0
    for tid in _threads(pid):
        text = _read(f"/proc/{pid}/task/{tid}/schedstat")
        if text:
            a, b, _ = text.split()[:3]
            run += int(a)
            wait += int(b)
        status = _read(f"/proc/{pid}/task/{tid}/status") or ""
        for line in status.splitlines():
            if line.startswith("nonvoluntary_ctxt_switches"):
                nivcsw += int(line.split()[1])
    return run, wait, nivcsw


def affinity(pid):
    """Per thread, its CPU affinity (as a sorted list), keyed by thread id; the main thread first."""
    out = {}
    for tid in sorted(_threads(pid), key=lambda t: t != pid):
        try:
            out[tid] = sorted(os.sched_getaffinity(tid))
        except OSError:
            pass
    return out


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class Monitor:
    """Watch processes during one run. `procs`: {name: (pid, spinning)}."""

    def __init__(self, procs, interval_s=SAMPLE_S):
        self.procs = dict(procs)
        self.interval = interval_s
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self.t0 = time.monotonic_ns()
        self.load0 = loadavg()
        self.cpu0 = cpu_times()
        self.sched0 = {name: sched_counters(pid) for name, (pid, _) in self.procs.items()}
        self.self0 = sched_counters(os.getpid())
        self.seen = {name: {} for name in self.procs}       # name -> {cpu: samples running there}
        self.samples = 0
        self.shared = {}                                     # (a, b) -> samples both spinners were on one cpu
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            where = {}
            for name, (pid, spinning) in self.procs.items():
                st = _thread_stat(pid, pid)  # the main thread: the one that spins
                if st is None:
                    continue
                state, cpu = st
                if state == "R":
                    self.seen[name][cpu] = self.seen[name].get(cpu, 0) + 1
                if spinning:
                    where[name] = cpu
            names = sorted(where)
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    if where[a] == where[b]:
                        self.shared[(a, b)] = self.shared.get((a, b), 0) + 1
            self.samples += 1

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        window_ns = max(time.monotonic_ns() - self.t0, 1)
        cpu1 = cpu_times()
        cores, busy_total = {}, 0.0
        for cpu, (busy, total, steal) in cpu1.items():
            b0, t0, s0 = self.cpu0.get(cpu, (busy, total, steal))
            dt = max(total - t0, 1)
            cores[cpu] = {"busy": round((busy - b0) / dt, 3), "steal": round((steal - s0) / dt, 3)}
            busy_total += (busy - b0) / _HZ
        procs, ours_s, warnings = {}, 0.0, []
        for name, (pid, spinning) in self.procs.items():
            run1, wait1, sw1 = sched_counters(pid)
            run0, wait0, sw0 = self.sched0[name]
            ours_s += (run1 - run0) / 1e9
            procs[name] = {"pid": pid, "spinning": spinning, "affinity": affinity(pid),
                           "seen_on": {str(k): v for k, v in sorted(self.seen[name].items())},
                           "cpu_share": round((run1 - run0) / window_ns, 3),
                           "wait_share": round((wait1 - wait0) / window_ns, 4),
                           "involuntary_switches": sw1 - sw0}
        run1, _, _ = sched_counters(os.getpid())
        ours_s += (run1 - self.self0[0]) / 1e9
        window_s = window_ns / 1e9
        others = max(0.0, busy_total - ours_s) / (window_s * max(len(cores), 1))
        out = {"window_s": round(window_s, 3), "loadavg_before": self.load0, "loadavg_after": loadavg(),
               "cores": {str(k): v for k, v in sorted(cores.items())}, "processes": procs,
               "harness_cpu_share": round((run1 - self.self0[0]) / window_ns, 3),
               "others_share": round(others, 3), "samples": self.samples}
        warnings += shared_core_warnings(procs)
        for (a, b), n in sorted(self.shared.items()):
            if self.samples and n / self.samples >= SHARED_WARN:
                warnings.append(f"{a} and {b} (both spinning) were seen on the same CPU in {n} of {self.samples} "
                                "samples")
        for name, p in procs.items():
            if p["spinning"] and p["wait_share"] >= WAIT_WARN:
                warnings.append(f"{name} (spinning) waited for its CPU {p['wait_share']:.1%} of the run "
                                f"({p['involuntary_switches']} preemptions): something else ran on its core")
        if others >= OTHERS_WARN:
            warnings.append(f"other processes used {others:.0%} of the machine's CPU during the run")
        out["warnings"] = list(dict.fromkeys(warnings))
        return out


def shared_core_warnings(procs):
    """Spinning processes whose main threads' affinities leave them fewer cores than spinners."""
    spinners = {name: set(p["affinity"].get(p["pid"], [])) for name, p in procs.items() if p["spinning"]}
    spinners = {k: v for k, v in spinners.items() if v}
    names = sorted(spinners)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = spinners[a] | spinners[b]
            if spinners[a] & spinners[b] and len(both) < 2:
                out.append(f"{a} and {b} both spin and share core {sorted(both)[0]}: each runs only while the "
                           "other is preempted")
            elif spinners[a] & spinners[b]:
                out.append(f"{a} and {b} both spin and may share a core (affinities {sorted(spinners[a])} and "
                           f"{sorted(spinners[b])} overlap): the scheduler decides")
    return out


def udp_drops(port):
    """Datagrams the kernel dropped at the UDP socket bound to `port` (its receive buffer was full), or None."""
    text = _read("/proc/net/udp") or ""
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) > 12 and int(f[1].rsplit(":", 1)[1], 16) == port:
            return int(f[-1])
    return None
