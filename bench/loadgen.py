"""Open-loop signal load for the end-to-end harness: `python -m bench.loadgen --transport udp --port P --rate R`.

Open loop: signal i is *intended* at start + i / rate, whatever the engine does. Each pass sends every signal due
by now (at most `--max-batch`), then sleeps until the next is due (with the timer slack set to 1 ns, so a wake-up
is a few microseconds late, not the default 50; `--spin-us` spins the last stretch instead, which only pays on an
idle machine: on a busy one the spinning steals the CPU the engine and the receiver need). A signal's ts_ns is its
intended time on the wall clock (time.time_ns, the clock the receiver stamps with), so the latency the receiver
computes, receive time - ts_ns, charges every stall (sender, kernel, engine, OMS side) to the signals it delayed: the
coordinated-omission-free way (as wrk2 does). The actual send time of every signal is saved too, so the report can
also show the latency from the actual send.

`--rate 0` saturates: passes of `--max-batch` signals back to back, each stamped with its pass's time.
UDP: `--frames-per-datagram` frames per datagram (1 by default: one signal per datagram). TCP: one write per pass.
Content is the bench workload of bench/frames.py with `--source` as the source id and seq counting from 1.
Saves (npz): seq, intended_ns, sent_ns, and a JSON summary; prints the summary line.
"""
import argparse
import ctypes
import json
import math
import socket
import sys
import time

import numpy as np

from bench import CONFIG_DIR
from bench.frames import Instruments, fill_signals, signal_frames
from wire.records import SIGNAL_FRAME_SIZE


def set_timer_slack(ns=1):
    """Linux: let sleeps wake `ns` late at most (the default slack is 50 us)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(29, ns, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def instruments_of(config_dir):
    from engine.config import load_config
    return Instruments(load_config(config_dir))


def run(args):
    set_timer_slack()
    instruments = instruments_of(args.config)
    rate = args.rate
    total = math.ceil(rate * args.duration) if rate > 0 else args.max_count
    capacity = total if rate > 0 else 1 << 20  # saturation: grown as needed
    intended = np.zeros(capacity, np.int64)
    sent_ns = np.zeros(capacity, np.int64)
    frames = signal_frames(args.max_batch)
    raw = frames.view(np.uint8)
    if args.transport == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect((args.host, args.port))
    else:
        sock = socket.create_connection((args.host, args.port), timeout=10)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    step = SIGNAL_FRAME_SIZE * args.frames_per_datagram
    spin_ns = int(args.spin_us * 1000)
    perf, wall = time.perf_counter_ns, time.time_ns
    offset = wall() - perf()  # perf_counter -> wall clock
    t0 = perf() + 5_000_000
    deadline = t0 + int(args.duration * 1e9)
    sent = errors = 0
    passes = 0
    send, sendall = sock.send, sock.sendall
    try:
        while sent < total:
            now = perf()
            if rate > 0:
                due = min(total, int((now - t0) * rate // 1_000_000_000) + 1) if now >= t0 else 0
                if due <= sent:
                    wait = t0 + int(sent * 1e9 / rate) - now
                    if wait > spin_ns:
                        time.sleep((wait - spin_ns) / 1e9)
                    continue
                hi = min(due, sent + args.max_batch)
                first = np.arange(sent, hi, dtype=np.float64)
                stamps = offset + t0 + (first * 1e9 / rate).astype(np.int64)
            else:
                if now >= deadline:
                    break
                hi = min(total, sent + args.max_batch)
                stamps = np.full(hi - sent, offset + now, np.int64)
            n = hi - sent
            if hi > len(intended):
                intended = np.concatenate((intended, np.zeros_like(intended)))
                sent_ns = np.concatenate((sent_ns, np.zeros_like(sent_ns)))
            recs = fill_signals(frames[:n], instruments, sent, sent + 1, args.source, stamps)
            intended[sent:hi] = stamps
            if args.transport == "udp":
                view = memoryview(raw[:n * SIGNAL_FRAME_SIZE])
                k = 0
                for pos in range(0, n * SIGNAL_FRAME_SIZE, step):
                    sent_ns[sent + k] = wall()
                    try:
                        send(view[pos:pos + step])
                    except OSError:
                        errors += 1
                    k += args.frames_per_datagram
                if args.frames_per_datagram > 1:  # stamp every frame of a datagram with its send time
                    idx = np.arange(sent, hi)
                    sent_ns[sent:hi] = sent_ns[sent + (idx - sent) // args.frames_per_datagram
                                               * args.frames_per_datagram]
            else:
                sent_ns[sent:hi] = wall()
                sendall(recs.view(np.uint8))
            sent = hi
            passes += 1
    finally:
        sock.close()
    intended, sent_ns = intended[:sent], sent_ns[:sent]
    seq = np.arange(1, sent + 1, dtype=np.uint64)
    elapsed = (sent_ns[-1] - sent_ns[0]) / 1e9 if sent > 1 else 0.0
    lag = sent_ns - intended
    summary = {"transport": args.transport, "rate": rate, "source": args.source, "sent": int(sent),
               "passes": passes, "send_errors": errors, "elapsed_s": elapsed,
               "achieved_rate": sent / elapsed if elapsed > 0 else 0.0,
               "lag_us": {"p50": float(np.percentile(lag, 50) / 1e3) if sent else 0.0,
                          "p99": float(np.percentile(lag, 99) / 1e3) if sent else 0.0,
                          "max": float(lag.max() / 1e3) if sent else 0.0}}
    if args.out:
        np.savez(args.out, seq=seq, intended_ns=intended, sent_ns=sent_ns, summary=json.dumps(summary))
    print(json.dumps(summary), flush=True)
    return 0


def parser():
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG_DIR), help="engine config (instruments)")
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=10_000, help="signals per second; 0 saturates")
    p.add_argument("--duration", type=float, default=3.0, help="seconds")
    p.add_argument("--source", type=int, default=1, help="signal source id (one per run: the receiver splits on it)")
    p.add_argument("--max-batch", type=int, default=4096, help="signals per pass at most")
    p.add_argument("--max-count", type=int, default=50_000_000, help="saturation: stop after this many signals")
    p.add_argument("--frames-per-datagram", type=int, default=1)
    p.add_argument("--spin-us", type=float, default=0.0,
                   help="spin (instead of sleeping) the last SPIN_US before a signal is due; 0: always sleep")
    p.add_argument("--out", default=None, help="npz file for seq, intended_ns, sent_ns")
    return p


if __name__ == "__main__":
    sys.exit(run(parser().parse_args()))
