"""`orchestrator`: run an engine, operate a running one (ctl), check a config, replay a journal, and the demo's
feed and simulated OMS."""
import argparse
import json
import logging
import os
import subprocess
import sys
import time

EXIT_CONFIG = 2  # the config is not valid: nothing was started
EXIT_START = 3   # the config is valid but the engine could not start (an address in use, a host unknown)
REPORT_WIDTH_NOT_TERMINAL = 1000  # columns of the human report when stdout is not a terminal: no table is cut


def _config(args):
    """The config at args.config, or None once why it is not valid has been printed (exit with EXIT_CONFIG)."""
    from engine.config import ConfigError, load_config
    try:
        return load_config(args.config)
    except ConfigError as e:
        print(f"orchestrator: config not valid:\n{e}", file=sys.stderr)
        return None


def _run(args):
    config = _config(args)
    if config is None:
        return EXIT_CONFIG
    # the engine's imports load the compiled kernels: only once the config is known to be good
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from adapters.base import TransportClosed
    from adapters.journal import JournalCorrupt
    from engine import service
    from engine.report import LIVE_INTERVAL_S, final_report, live_table, print_report

    try:
        svc = service.build(config, fresh=args.fresh, force=args.force)
    except (OSError, TransportClosed, JournalCorrupt, service.JournalInUse, ValueError) as e:
        # an address in use, no media driver for Aeron, a journal directory that cannot be written or read
        print(f"orchestrator: cannot start engine {config.engine.name!r}: {e}", file=sys.stderr)
        return EXIT_START
    if svc.recovered is not None:
        print(f"orchestrator: {svc.recovered.summary()}", file=sys.stderr, flush=True)
    console = Console(stderr=args.json)
    if not console.is_terminal:  # a log, a pipe, CI: the report whole, never cut to an assumed 80 columns
        console = Console(stderr=args.json, width=REPORT_WIDTH_NOT_TERMINAL)
    driver = args.driver or config.engine.driver
    feed = live = None

    def on_ready(svc):
        nonlocal feed
        addresses = svc.addresses()
        served = svc.monitoring_addresses()  # metrics, dashboard
        oms = config.engine.oms
        print(f"orchestrator: engine {config.engine.name!r} ready: {len(config.strategies)} strategies, "
              f"{len(config.instruments)} instruments, driver {driver}, "
              + ", ".join(f"{kind} {address}" for kind, address in addresses.items())
              + f", oms {oms.kind}{f' {oms.tcp.host}:{oms.tcp.port}' if oms.kind == 'tcp' else ''} "
              f"{'up' if svc.engine.oms_up else 'DOWN'}"
              + "".join(f", {kind} http://{address}/{'metrics' if kind == 'metrics' else ''}"
                        for kind, address in served.items()), file=sys.stderr, flush=True)
        if args.ready_file:
            _write_atomically(args.ready_file, json.dumps(
                {"pid": os.getpid(), "engine": config.engine.name, "driver": driver, **addresses, **served,
                 "oms": {"kind": oms.kind, "up": svc.engine.oms_up}}))
        if args.feed:
            feed = _start_feed(args, addresses)

    drawn = 0.0
    try:
        if not args.quiet and console.is_terminal:
            # drawn by on_tick at most once every LIVE_INTERVAL_S, never by a refresh thread of its own: a redraw
            # holds the GIL, so the spin driver's thread waits while it runs (bench/live_view.py measures it)
            live = Live(Text(live_table(svc)), console=console, auto_refresh=False)
            live.start(refresh=True)

        def on_tick(svc):
            nonlocal drawn
            if live and time.monotonic() - drawn >= LIVE_INTERVAL_S:
                drawn = time.monotonic()
                live.update(Text(live_table(svc)), refresh=True)
            if args.status_file:
                try:
                    _write_atomically(args.status_file, json.dumps(final_report(svc)))
                except OSError as e:  # the run goes on (and still ends on time) without its status file
                    logging.getLogger("orchestrator").warning("status file %s: %s", args.status_file, e)

        service.run(svc, driver=driver, duration_s=args.duration, on_tick=on_tick, cpu=args.cpu,
                    on_ready=on_ready, tick_s=0.1 if args.status_file else 0.5)
        report = final_report(svc)
    finally:
        if live:
            live.stop()
        if feed:
            feed.terminate()
            feed.wait(timeout=10)
        svc.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, console)
    return 0


def _write_atomically(path, text):
    """Readers see the whole file or none of it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def _start_feed(args, addresses):
    """The demo's signal feed: a separate process sending over loopback, as a real Signal Engine would."""
    if "udp" not in addresses and "tcp" not in addresses:  # Aeron only: the feed reads the config's streams
        command = [sys.executable, "-m", "engine.cli", "feed", "--config", args.config, "--transport", "aeron"]
    else:
        transport = "udp" if "udp" in addresses else "tcp"
        host, port = addresses[transport].rsplit(":", 1)
        command = [sys.executable, "-m", "engine.cli", "feed", "--config", args.config, "--transport", transport,
                   "--host", host, "--port", port]
    # the same content every run (seed 7), numbered above any earlier run's, which a recovered engine remembers
    command += ["--rate", str(args.feed), "--seed", "7", "--seq-base", str(time.time_ns() // 1000)]
    if args.bad_ratio is not None:
        command += ["--bad-ratio", str(args.bad_ratio)]
    if args.duration:
        command += ["--duration", str(args.duration)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, env=dict(os.environ))


def _validate(args):
    from engine.cli.validate import validate
    return validate(args.config)


def _over_the_journal(args, verb, work):
    """`work(config, journal directory)` for replay and export: the config loaded (EXIT_CONFIG when it is not
    valid), the journal directory `--journal` or the config's; its result, or 1 with `cannot VERB: why`."""
    from adapters.journal import JournalCorrupt
    from engine.service import journal_directory
    config = _config(args)
    if config is None:
        return EXIT_CONFIG
    directory = args.journal or journal_directory(config)
    try:
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"no journal directory {directory}")
        return work(config, directory)
    except (OSError, JournalCorrupt, ValueError) as e:
        print(f"orchestrator: cannot {verb}: {e}", file=sys.stderr)
        return 1


def _replay(args):
    from engine.recovery import replay
    result = _over_the_journal(args, "replay", replay)
    if isinstance(result, int):
        return result
    print(json.dumps(result, indent=2) if args.json else
          f"replayed {result['records']} journal records: {result['counters']['signals']} signals, "
          f"{result['counters']['orders']} orders (digest {result['orders_digest']})")
    return 0


def _export(args):
    from engine.export import export
    result = _over_the_journal(args, "export", lambda config, directory: export(config, args.out, directory))
    if isinstance(result, int):
        return result
    print(json.dumps(result, indent=2) if args.json else
          f"exported {result['records']} journal records to {args.out}: " +
          ", ".join(f"{name} {f['rows']} rows" for name, f in result["files"].items()))
    return 0


def _simulate(args):
    config = _config(args)
    if config is None:
        return EXIT_CONFIG
    from engine.cli.simulate import simulate
    return simulate(config, args)


def _feed(args):
    from engine.cli.peers import feed
    return feed(args)


def _sim_oms(args):
    from engine.cli.peers import sim_oms
    return sim_oms(args)


def parser():
    p = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the engine on a config until SIGINT/SIGTERM or --duration",
                         description="Load CONFIG, listen for signals, send orders to the OMS, show a live table "
                                     "of strategies; on SIGINT/SIGTERM (or after --duration) drain the rings and "
                                     "print the final report. Once ready, one line on stderr gives the bound "
                                     "addresses and the REST API's URL (a port 0 in the config is the OS's pick; "
                                     "`orchestrator ctl --url` takes that URL). If the OMS link drops, "
                                     "[oms] on_disconnect halts (or reduces) the strategies and the engine "
                                     "reconnects with backoff; the strategies stay so after the link is back. "
                                     "At start the engine recovers its state from the journal ([journal] dir): "
                                     "the latest snapshot and the records after it. "
                                     "Exit codes: 0 done, 2 config not valid, 3 could not start (e.g. address in "
                                     "use, journal not writable).")
    run.add_argument("config", help="config directory (engine.toml, instruments.toml, accounts.toml, strategies/)")
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    run.add_argument("--driver", choices=("event", "spin"), default=None, help="override the config's driver")
    run.add_argument("--cpu", type=int, default=None, help="spin driver: pin the engine to this core")
    run.add_argument("--json", action="store_true", help="print the final report as JSON on stdout")
    run.add_argument("--quiet", action="store_true", help="no live table")
    run.add_argument("--fresh", action="store_true",
                     help="start from an empty state instead of recovering the journal (refused over an existing "
                          "journal without --force)")
    run.add_argument("--force", action="store_true", help="with --fresh: move an existing journal aside")
    run.add_argument("--feed", type=float, default=0, metavar="RATE",
                     help="also start the synthetic feed at RATE signals/s against this config (the demo)")
    run.add_argument("--bad-ratio", type=float, default=None,
                     help="with --feed: share of deliberately bad signals (default: the config's feed.toml, else 0)")
    run.add_argument("--ready-file", metavar="FILE",
                     help="once listening (and the OMS link tried), write the bound addresses to FILE as JSON "
                          "(the API's URL under \"api\")")
    run.add_argument("--status-file", metavar="FILE",
                     help="rewrite FILE every 0.1 s with the report so far (JSON, the same keys as --json)")
    run.set_defaults(handler=_run)

    validate = sub.add_parser("validate", help="check a config without starting",
                              description="Load and check every file of CONFIG; print a summary or every problem "
                                          "with its file and key path. Exit 0 when valid, 1 otherwise.")
    validate.add_argument("config")
    validate.set_defaults(handler=_validate)

    replay = sub.add_parser("replay", help="replay a journal through a fresh engine, deterministically",
                            description="Feed every record of the journal of CONFIG (or of --journal DIR) through a "
                                        "fresh engine on CONFIG, at the recorded clock: the same journal gives the "
                                        "same orders every time (compare the digest).")
    replay.add_argument("config")
    replay.add_argument("--journal", metavar="DIR", default=None, help="journal directory (default: the config's)")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(handler=_replay)

    export = sub.add_parser("export", help="replay a journal into Parquet files (orders, fills, P&L, latency)",
                            description="Replay the journal of CONFIG (or of --journal DIR) through a fresh engine "
                                        "and write orders, rejects, fills, pnl (per strategy, instrument and "
                                        "version) and latency (per order) as Parquet files into --out DIR "
                                        "(docs/export.md has the schema).")
    export.add_argument("config")
    export.add_argument("--out", metavar="DIR", required=True, help="directory for the .parquet files")
    export.add_argument("--journal", metavar="DIR", default=None, help="journal directory (default: the config's)")
    export.add_argument("--json", action="store_true", help="print the summary as JSON")
    export.set_defaults(handler=_export)

    simulate = sub.add_parser("simulate", help="run a recorded stream through the kernels and the simulated venue",
                              description="Run INPUT (an engine's journal directory, or a Parquet stream of signals "
                                          "and market data: docs/simulate.md) through a fresh engine on CONFIG with "
                                          "the simulated venue in the batch, as fast as one core allows; print what "
                                          "it traded, events/s and a digest (same input, same digest).")
    simulate.add_argument("config")
    simulate.add_argument("input", nargs="?", help="journal directory or .parquet file (or --generate)")
    simulate.add_argument("--generate", type=int, metavar="N", help="a seeded stream of N events for CONFIG")
    simulate.add_argument("--seed", type=int, default=0, help="with --generate (default 0)")
    simulate.add_argument("--save", metavar="FILE", help="with --generate: also write the stream as Parquet")
    simulate.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    simulate.set_defaults(handler=_simulate)

    from engine.cli import ctl
    ctl.add_parser(sub)

    from engine.cli.peers import add_feed_arguments, add_sim_oms_arguments
    add_feed_arguments(sub.add_parser(
        "feed", help="send synthetic signals and market data (open loop)",
        description="Send seeded synthetic signals and market data over UDP, TCP or Aeron at a fixed rate, "
                    "open loop."))\
        .set_defaults(handler=_feed)
    add_sim_oms_arguments(sub.add_parser(
        "sim-oms", help="run the simulated OMS as a TCP (or Aeron) server",
        description="Accept the engine's OMS connection; answer orders with acks, fills and rejects."))\
        .set_defaults(handler=_sim_oms)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
