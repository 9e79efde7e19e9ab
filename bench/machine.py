"""The machine and versions every published figure is recorded with, and the machine class baselines are keyed on."""
import datetime
import os
import platform
import re
import subprocess
from importlib import metadata

from bench import ROOT

_PACKAGES = ("numba", "numpy", "msgspec", "uvloop", "llvmlite", "hdrhistogram", "pytest-benchmark")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_class(model=None, cores=None):
    """A short stable name for 'this kind of machine': the CPU model and core count, e.g. `amd-epyc-2c`.
    Baselines are only compared within a class (bench/baselines/<class>.json)."""
    model = (model or cpu_model()).lower()
    model = re.sub(r"\((r|tm)\)|cpu|processor|\d+-core|@.*$", " ", model)
    slug = re.sub(r"[^a-z0-9]+", "-", model).strip("-")
    return f"{slug}-{cores or os.cpu_count()}c"


def _git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions():
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_info():
    """Everything a reader needs to judge a figure: CPU, cores, load, versions, commit, date (UTC)."""
    cores = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_model(),
        "cores": cores,
        "cores_usable": len(os.sched_getaffinity(0)),
        "machine_class": machine_class(cores=cores),
        "kernel": platform.release(),
        "loadavg_1_5_15": load,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "worktree_dirty": bool(dirty) if dirty is not None else None,
        "versions": versions(),
    }


def one_line(info):
    v = info["versions"]
    return (f"{info['date']} · {info['cpu']} · {info['cores']} cores · load {info['loadavg_1_5_15']} · "
            f"Python {v['python']} · numba {v['numba']} · numpy {v['numpy']} · msgspec {v['msgspec']} · "
            f"commit {info['commit']}{' (dirty)' if info['worktree_dirty'] else ''}")
