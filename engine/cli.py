"""`orchestrator`: run an engine, check a config, replay a recording, and the demo's feed and simulated OMS."""
import argparse
import json
import logging
import os
import subprocess
import sys
import time

EXIT_CONFIG = 2


def _run(args):
    from rich.console import Console
    from rich.live import Live

    from adapters.replay import ReplayWriter, ReplayWriterConfig
    from engine import service
    from engine.config import ConfigError, load_config
    from engine.report import final_report, live_table, print_report

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"orchestrator: config not valid:\n{e}", file=sys.stderr)
        return EXIT_CONFIG
    console = Console(stderr=args.json)
    svc = service.build(config)
    feed = None
    live = None
    try:
        if args.record:
            recorder = ReplayWriter(ReplayWriterConfig(path=args.record))
            recorder.open()
            svc.transports.append(recorder)
            svc.engine.recorder = recorder
        console.print(f"engine {config.engine.name!r}: {len(config.strategies)} strategies, "
                      f"{len(config.instruments)} instruments, driver {args.driver or config.engine.driver}, "
                      f"listening {svc.addresses()}")
        if args.feed:
            feed = _start_feed(args)
        if not args.quiet and console.is_terminal:
            live = Live(live_table(svc), console=console, refresh_per_second=4)
            live.start()
        on_tick = (lambda s: live.update(live_table(s))) if live else None
        service.run(svc, driver=args.driver or config.engine.driver, duration_s=args.duration, on_tick=on_tick,
                    cpu=args.cpu)
    finally:
        if live:
            live.stop()
        if feed:
            feed.terminate()
            feed.wait(timeout=10)
        svc.close()
    report = final_report(svc)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, console)
    return 0


def _start_feed(args):
    """The demo's signal feed: a separate process sending over loopback, as a real Signal Engine would."""
    command = [sys.executable, "-m", "engine.cli", "feed", "--config", args.config, "--rate", str(args.feed),
               "--bad-ratio", str(args.bad_ratio), "--seed", "7"]
    if args.duration:
        command += ["--duration", str(args.duration)]
    time.sleep(0.05)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, env=dict(os.environ))


def _validate(args):
    from engine.config import validate_command
    return validate_command(args.config)


def _replay(args):
    from engine.replay import replay
    from engine.config import ConfigError, load_config
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"orchestrator: config not valid:\n{e}", file=sys.stderr)
        return EXIT_CONFIG
    result = replay(config, args.file)
    print(json.dumps(result, indent=2) if args.json else
          f"replayed {result['batches']} batches: {result['counters']['signals']} signals, "
          f"{result['counters']['orders']} orders (digest {result['orders_digest']})")
    return 0


def _feed(args):
    from engine import feed
    return feed.main(args)


def _sim_oms(args):
    from engine import sim_oms
    return sim_oms.main(args)


def parser():
    p = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the engine on a config until SIGINT/SIGTERM or --duration",
                         description="Load CONFIG, listen for signals, send orders to the OMS, show a live table "
                                     "of strategies; on SIGINT/SIGTERM (or after --duration) drain the rings and "
                                     "print the final report.")
    run.add_argument("config", help="config directory (engine.toml, instruments.toml, accounts.toml, strategies/)")
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    run.add_argument("--driver", choices=("event", "spin"), default=None, help="override the config's driver")
    run.add_argument("--cpu", type=int, default=None, help="spin driver: pin the engine to this core")
    run.add_argument("--json", action="store_true", help="print the final report as JSON on stdout")
    run.add_argument("--quiet", action="store_true", help="no live table")
    run.add_argument("--record", metavar="FILE", help="record every inbound chunk to FILE, for `replay`")
    run.add_argument("--feed", type=float, default=0, metavar="RATE",
                     help="also start the synthetic feed at RATE signals/s against this config (the demo)")
    run.add_argument("--bad-ratio", type=float, default=0.02, help="with --feed: share of deliberately bad signals")
    run.set_defaults(handler=_run)

    validate = sub.add_parser("validate", help="check a config without starting",
                              description="Load and check every file of CONFIG; print a summary or every problem "
                                          "with its file and key path. Exit 0 when valid, 1 otherwise.")
    validate.add_argument("config")
    validate.set_defaults(handler=_validate)

    replay = sub.add_parser("replay", help="replay a recording through a fresh engine, deterministically",
                            description="Feed the chunks of FILE (recorded with `run --record`) through a fresh "
                                        "engine on CONFIG with the recorded clock: the same file gives the same "
                                        "orders every time (compare the digest).")
    replay.add_argument("config")
    replay.add_argument("file")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(handler=_replay)

    from engine import feed, sim_oms
    feed.add_arguments(sub.add_parser(
        "feed", help="send synthetic signals and market data (open loop)",
        description="Send seeded synthetic signals and market data over UDP or TCP at a fixed rate, open loop."))\
        .set_defaults(handler=_feed)
    sim_oms.add_arguments(sub.add_parser(
        "sim-oms", help="run the simulated OMS as a TCP server",
        description="Accept the engine's OMS connection; answer orders with acks, fills and rejects."))\
        .set_defaults(handler=_sim_oms)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
