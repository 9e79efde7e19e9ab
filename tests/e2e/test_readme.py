"""The README's commands, run as written, in a fresh copy of the demo (the repository's .venv, the README's
relative paths): every `.venv/bin/orchestrator ...` line of its ```sh blocks, and the operator transcripts
(`$ ...` lines) of "Operating it" against a running engine. A command that runs until stopped (a `run` without
--duration, sim-oms) must come up and end cleanly on SIGINT; one that talks to an engine (feed, ctl) runs
beside the demo engine; the others must exit 0. The kill -9 transcript is tests/e2e/test_crash.py's.
"""
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest

from tests.e2e.e2e_kit import ROOT

README = ROOT / "README.md"
LONG_RUNNING = ("sim-oms",)


def sh_blocks(text):
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def commands():
    """The README's command lines: (the line as written, whether it is a transcript line)."""
    found = []
    for block in sh_blocks(README.read_text()):
        for line in block.splitlines():
            transcript = line.startswith("$ ")
            command = line[2:] if transcript else line
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command.startswith((".venv/bin/orchestrator", "sed ")) and not command.endswith("&"):
                found.append((command, transcript))
    return found


@pytest.fixture
def clone(tmp_path):
    """A directory laid out as a fresh clone for the README's relative paths: the demo config, the .venv."""
    shutil.copytree(ROOT / "config" / "demo", tmp_path / "config" / "demo", ignore=shutil.ignore_patterns("var"))
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    return tmp_path


def argv(command, cwd):
    """The command's words as a shell would split them, and where its stdout goes (`> FILE`, else a file of
    ours: a pipe nobody reads could stall it). No shell runs: a signal reaches the command itself."""
    words = shlex.split(command)
    if ">" in words:
        k = words.index(">")
        words, target = words[:k] + words[k + 2:], cwd / words[k + 1]
    else:
        target = cwd / (re.sub(r"\W+", "_", command)[:80] + ".out")
    return words, target


def start(command, cwd):
    """A command left running."""
    words, target = argv(command, cwd)
    out, err = open(target, "w+"), open(f"{target}.err", "w+")
    proc = subprocess.Popen(words, cwd=cwd, stdout=out, stderr=err, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.files = out, err
    return proc


def interrupt(proc, timeout=60):
    """SIGINT, as Ctrl-C sends it; the exit code and the output."""
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout)
    texts = []
    for f in proc.files:
        f.seek(0)
        texts.append(f.read())
        f.close()
    return proc.returncode, *texts


def wait_until(predicate, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.1)


def run_to_end(command, cwd, timeout=180):
    done = subprocess.run(shlex.split(command), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return done.returncode, done.stdout, done.stderr


def test_readme_when_read_then_its_commands_are_the_ones_this_test_runs():
    listed = commands()
    assert len(listed) >= 10, listed
    assert all(c.split()[1] in {"validate", "run", "replay", "simulate", "feed", "sim-oms", "ctl"} for c, _ in listed
               if c.startswith(".venv")), listed


# What the prose before a transcript line says the engine is in: made so first (the README shows the way out of
# an OMS outage; the test halts the strategy instead of dropping an OMS)
PRECONDITIONS = {".venv/bin/orchestrator ctl reset momentum": ".venv/bin/orchestrator ctl halt momentum"}


def kind(command):
    words = command.split()
    if words[0] == "sed":
        return "edit"
    if words[1] == "run" and "--duration" not in words:
        return "until_stopped"
    if words[1] in LONG_RUNNING:
        return "server"
    if words[1] in ("feed", "ctl"):
        return "needs_engine"
    return "to_end"


def run_a_while(command, cwd, seconds=2):
    """A command that serves until stopped: still running after `seconds`, then stopped with SIGINT."""
    proc = start(command, cwd)
    time.sleep(seconds)
    assert proc.poll() is None, interrupt(proc)
    return interrupt(proc)


def check_until_stopped(command, cwd, ready):
    """A command that runs until Ctrl-C: it comes up (its ready file), then ends cleanly on SIGINT."""
    proc = start(f"{command} --ready-file {ready}", cwd)  # after a `> FILE` too: argv() takes the redirect out
    wait_until(lambda: ready.exists() or proc.poll() is not None, "ready file")
    assert proc.poll() is None, interrupt(proc)
    return proc


def test_readme_when_its_commands_run_as_written_then_each_works(clone):
    """First what stands alone (one engine at a time on the demo's journal and ports), then an engine started
    by the README's first run-until-stopped line serves the feed, ctl and the transcripts, then the other
    run-until-stopped lines come up and stop."""
    listed = [c for c, _ in commands()]
    alone = [c for c in listed if kind(c) in ("to_end", "server")]
    beside = [c for c in listed if kind(c) in ("needs_engine", "edit")]
    until_stopped = [c for c in listed if kind(c) == "until_stopped"]
    assert until_stopped, "the README starts no engine for ctl and feed"

    for command in alone:
        if kind(command) == "server":
            code, out, err = run_a_while(command, clone)
        else:
            code, out, err = run_to_end(command, clone)
        assert code == 0, f"{command!r} exited {code}:\n{out}\n{err}"

    serving = check_until_stopped(until_stopped[0], clone, clone / "engine.ready")
    try:
        for command in beside:
            if command in PRECONDITIONS:  # already so (a breaker halted it) is as good
                code, out, err = run_to_end(PRECONDITIONS[command], clone)
                assert code == 0 or "in state HALTED" in err, f"precondition of {command!r} exited {code}:\n{err}"
            if command.split()[1:2] == ["feed"]:  # sends until stopped
                code, out, err = run_a_while(command, clone)
            else:
                code, out, err = run_to_end(command, clone)
            assert code == 0, f"{command!r} exited {code}:\n{out}\n{err}"
    finally:
        code, out, err = interrupt(serving)
    assert code == 0, f"{until_stopped[0]!r} exited {code}:\n{err}"
    if "--json >" in until_stopped[0]:  # its report went where the README sends it
        assert '"state_digest"' in (clone / until_stopped[0].split(">")[1].strip()).read_text()

    for k, command in enumerate(until_stopped[1:]):
        code, out, err = interrupt(check_until_stopped(command, clone, clone / f"engine-{k}.ready"))
        assert code == 0, f"{command!r} exited {code}:\n{err}"
