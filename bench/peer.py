"""The harness's peer process: the load generator (bench/loadgen.Sender) and the OMS receiver
(bench/oms_receiver.Receiver) in one busy loop, on one core, so that a 2-core machine holds the engine on one core
and everything else that must react fast on the other, with one spinning process per core.

    python -m bench.peer [--port P] [--role both|send|recv] [--wait spin|block] [--aeron DIR]

It listens for the engine's OMS connection on P (0: any free port), prints `ready PORT`, and then takes one JSON
command per line on stdin, answering each with one JSON line on stdout:
- {"cmd": "run", "transport": "udp"|"tcp"|"aeron", "port": N, "rate": R, "duration": D, "source": S, "out": FILE,
   "quiet_s": Q, "seq_base": B}: build the run's frames (before the clock starts; signal i carries seq B + i + 1),
   send open loop while answering every order, then drain (until an order came back for every signal, or none
   came for Q s) and save FILE (npz: the sender's seq, intended_ns, sent_ns and, per order received, rx_source,
   rx_seq, rx_ts_ns (the signal's, which the order carries back) and rx_recv_ns). The answer is the sender's
   summary with the receiver's: orders, reads, and the share of the run each side spent working (`busy`: time
   from a poll that found work to the end of that work; the rest of the loop is empty polls), so a saturated peer
   is visible in the report.
- {"cmd": "collect", "expected": N, "out": FILE, "quiet_s": Q}: (role recv) drain and save the receiver's side.
- {"cmd": "quit"}.
The loop is compiled (bench/peer_loop.py) unless `--loop python`; the Python loop also takes over for `--wait
block`, for `--aeron DIR` (pyaeron is called from Python: bench/aeron_peer.py) and for an engine whose order
frames are not fixed width (the plain-Python reference). Between commands it
keeps serving the OMS link (and checks stdin every 10 ms). `--role send|recv` splits the two sides into two
processes (the harness's `--peer split`, for comparison); `--wait block` blocks in select() between events instead
of spinning (the old harness's behaviour: a wake-up per order). The garbage collector is off while it runs.
"""
import argparse
import gc
import json
import os
import select
import sys
import time

import numpy as np

from bench import CONFIG_DIR
from bench.aeron_peer import SIGNALS, AeronOms, AeronSignals, Link
from bench.loadgen import Sender, instruments_of, set_timer_slack
from bench.oms_receiver import Receiver
from bench.peer_loop import SLOW

STDIN_CHECK_NS = 10_000_000


class Peer:
    def __init__(self, rx, instruments, wait="spin", loop="compiled", acks=True, aeron=None):
        self.rx, self.instruments, self.block = rx, instruments, wait == "block"
        # `aeron` (bench/aeron_peer.Link): runs over transport "aeron" send on its signals publication
        self._signals = aeron.publication(SIGNALS) if aeron is not None else None
        self.loop = None
        if loop == "compiled" and not self.block:
            from bench.peer_loop import Loop
            self.loop = Loop(acks)
        self._stdin = b""

    # ------------------------------------------------------------------------------------------ commands
    def _command(self, timeout):
        """The next whole command line on stdin within timeout s (None if none yet); {'cmd': 'quit'} on EOF."""
        while b"\n" not in self._stdin:
            ready, _, _ = select.select([0], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(0, 1 << 16)
            if not chunk:
                return {"cmd": "quit"}
            self._stdin += chunk
            timeout = 0
        line, self._stdin = self._stdin.split(b"\n", 1)
        return json.loads(line) if line.strip() else None

    def serve(self):
        while True:
            cmd = self._idle()
            if cmd["cmd"] == "quit":
                return
            try:
                reply = {"run": self.run, "collect": self.collect}[cmd["cmd"]](cmd)
            except (OSError, ValueError, KeyError, TypeError) as e:
                reply = {"error": f"{type(e).__name__}: {e}"}
            print(json.dumps(reply), flush=True)

    def _idle(self):
        """Serve the OMS link until a command arrives."""
        rx, wall = self.rx, time.time_ns
        next_check = 0
        while True:
            if self.block or rx is None:
                cmd = self._command(0.05 if rx is not None else None)
                if cmd is not None:
                    return cmd
                if rx is not None:
                    select.select([rx.fileno()], [], [], 0.05)
                    rx.poll()
                    rx.flush()
                continue
            if not rx.poll():
                rx.flush()
            now = wall()
            if now >= next_check:
                cmd = self._command(0)
                if cmd is not None:
                    return cmd
                next_check = now + STDIN_CHECK_NS

    # ------------------------------------------------------------------------------------------ a run
    def run(self, cmd):
        rx, block = self.rx, self.block
        if cmd["transport"] == "aeron":
            if self._signals is None:
                raise ValueError("transport aeron: this peer was started without --aeron DIR")
            sender = AeronSignals(self._signals, cmd["rate"], cmd["duration"], cmd["source"], self.instruments,
                                  cmd.get("max_batch"), seq_base=cmd.get("seq_base", 0))
        else:
            sender = Sender(cmd["transport"], cmd.get("host", "127.0.0.1"), cmd["port"], cmd["rate"],
                            cmd["duration"], cmd["source"], self.instruments, cmd.get("max_batch"),
                            seq_base=cmd.get("seq_base", 0))
        before = dict(rx.stats) if rx is not None else {}
        if rx is not None:
            rx.source = cmd["source"]  # the drain waits for this run's orders, not a previous run's stragglers
        quiet_s, max_drain_s = cmd.get("quiet_s", 1.0), cmd.get("max_drain_s", 20.0)
        gc.collect()
        gc.disable()
        try:
            sender.start()
            t0 = sender.t0
            if self.loop is not None and (rx is None or not rx.slow):
                code = self.loop.run(sender, rx, -1, int(quiet_s * 1e9), sender.deadline + int(max_drain_s * 1e9))
                send_busy, recv_busy, sent_end = self.loop.send_busy_ns, self.loop.recv_busy_ns, self.loop.sent_end
                if code == SLOW:  # frames the compiled loop does not read: on in Python, frame by frame
                    rx._go_slow(time.time_ns())
                    more = self._python_run(sender)
                    send_busy, recv_busy = send_busy + more[0], recv_busy + more[1]
                    sent_end = more[2] or sent_end
                    drain = self._drain(sender.sent, quiet_s, max_drain_s, sent_end)
                else:
                    drain = time.time_ns() - sent_end
            else:
                send_busy, recv_busy, sent_end = self._python_run(sender)
                drain = self._drain(sender.sent, quiet_s, max_drain_s, sent_end) if rx is not None else 0
        finally:
            gc.enable()
            sender.close()
        seq, intended, sent_ns, summary = sender.result()
        window = max(sent_end - t0, 1)
        summary.update({"send_busy": send_busy / window, "recv_busy": recv_busy / window, "window_s": window / 1e9,
                        "drain_s": drain / 1e9, "wait": "block" if block else "spin",
                        "loop": "compiled" if self.loop is not None and not (rx and rx.slow) else "python",
                        "affinity": sorted(os.sched_getaffinity(0))})
        if rx is not None:
            rx.flush()
            got = rx.collect()
            summary["receiver"] = {k: v - before.get(k, 0) for k, v in rx.stats.items()}
            summary["received"] = int(len(got["seq"]))
        else:
            got = {}
        if cmd.get("out"):
            np.savez(cmd["out"], seq=seq, intended_ns=intended, sent_ns=sent_ns, summary=json.dumps(summary),
                     **{"rx_" + k: v for k, v in got.items()})
        return summary

    def _python_run(self, sender):
        """The send phase in Python (the --loop python comparison, --wait block, and frames of another width);
        returns (send busy ns, receive busy ns, when the last signal went)."""
        rx, wall, block = self.rx, time.time_ns, self.block
        send_busy = recv_busy = 0
        while not sender.done:
            now = wall()
            if now >= sender.next_due and sender.poll(now):
                t = wall()
                send_busy += t - now
                now = t
            if rx is not None:
                if rx.poll():
                    recv_busy += wall() - now
                elif rx.owed or rx.pending:
                    t = wall()
                    if rx.flush_if(t, sender.next_due - t):
                        recv_busy += wall() - t
                elif block:
                    wait = (sender.next_due - wall()) / 1e9
                    if wait > 0:
                        select.select([rx.fileno()], [], [], min(wait, 0.05))
            elif block:
                wait = (sender.next_due - wall()) / 1e9
                if wait > 0:
                    time.sleep(wait)
        return send_busy, recv_busy, wall()

    def _drain(self, expected, quiet_s, max_s, since):
        """Keep answering until `expected` orders arrived in this window, or none for quiet_s; returns ns spent."""
        rx, wall = self.rx, time.time_ns
        quiet, limit = int(quiet_s * 1e9), since + int(max_s * 1e9)
        while rx.window_orders < expected:
            if rx.poll():
                continue
            rx.flush()
            now = wall()
            if now - max(rx.last_data_ns, since) > quiet or now > limit:
                break
            if self.block:
                select.select([rx.fileno()], [], [], 0.01)
        return wall() - since

    def collect(self, cmd):
        """Role recv: drain, then save what this window received."""
        before = dict(self.rx.stats)
        self.rx.source = cmd.get("source", -1)
        start = time.time_ns()
        expected, quiet_s, max_s = cmd.get("expected", 0), cmd.get("quiet_s", 1.0), cmd.get("max_drain_s", 20.0)
        if self.loop is not None and not self.rx.slow and self.rx.conn is not None:
            if self.loop.run(None, self.rx, expected, int(quiet_s * 1e9), start + int(max_s * 1e9)) == SLOW:
                self.rx._go_slow(time.time_ns())
                self._drain(expected, quiet_s, max_s, start)
        else:
            self._drain(expected, quiet_s, max_s, start)
        drain = time.time_ns() - start
        self.rx.flush()
        got = self.rx.collect()
        summary = {"received": int(len(got["seq"])), "drain_s": drain / 1e9,
                   "receiver": {k: v - before.get(k, 0) for k, v in self.rx.stats.items()},
                   "affinity": sorted(os.sched_getaffinity(0))}
        if cmd.get("out"):
            np.savez(cmd["out"], summary=json.dumps(summary), **{"rx_" + k: v for k, v in got.items()})
        return summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="OMS port to listen on (0: any)")
    p.add_argument("--role", choices=("both", "send", "recv"), default="both")
    p.add_argument("--wait", choices=("spin", "block"), default="spin")
    p.add_argument("--loop", choices=("compiled", "python"), default="compiled",
                   help="the busy loop compiled (bench/peer_loop.py, default) or in Python (for comparison)")
    p.add_argument("--no-acks", action="store_true", help="answer each order with a FILL only")
    p.add_argument("--config", default=str(CONFIG_DIR), help="engine config (the workload's instruments)")
    p.add_argument("--aeron", default=None, metavar="DIR",
                   help="over Aeron IPC with the media driver in DIR (bench/aeron_peer.py): signals published, the "
                        "OMS side subscribed; the loop is then Python (pyaeron), and --wait spin")
    args = p.parse_args(argv)
    if args.aeron and args.wait == "block":
        p.error("--aeron: Aeron has no descriptor to block on (--wait spin)")
    set_timer_slack()
    link = Link(args.aeron) if args.aeron else None
    loop = "python" if link is not None else args.loop
    if args.role == "send":
        rx = None
    else:
        rx = AeronOms(link, acks=not args.no_acks) if link else Receiver(args.host, args.port, acks=not args.no_acks)
    peer = Peer(rx, instruments_of(args.config) if args.role != "recv" else None, args.wait, loop,
                not args.no_acks, aeron=link if args.role != "recv" else None)
    print(f"ready {rx.port if rx else 0}", flush=True)
    try:
        peer.serve()
    finally:
        if rx is not None:
            print(json.dumps({"bye": rx.stats}), flush=True)
            rx.close()
        if link is not None:
            link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
