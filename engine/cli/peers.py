"""`orchestrator feed` and `orchestrator sim-oms`: the simulated peers (sim/), their options, and the configs the
CLI builds for them from an engine config (sim/ never reads engine configs itself)."""
import argparse
import sys
import tomllib
from pathlib import Path

import msgspec

from adapters.aeron import AeronDriverConfig, AeronUnavailable
from adapters.base import TransportClosed
from engine.config import load_config
from sim.feed import ALL_BAD_KINDS, Feed, FeedConfig
from sim.servers import IDLE_STRATEGIES, serve, serve_aeron
from sim.venue import SimOmsConfig


# ---------------------------------------------------------------------------------------------- feed
FEED_FILE = "feed.toml"  # beside engine.toml: the FeedConfig keys a config's own feed uses (the demo's)


def _routes(text):
    """`--routes 0:0,1:3`: (signal id, instrument id) pairs."""
    try:
        return [[int(x) for x in pair.split(":")] for pair in text.split(",") if pair.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIGNAL_ID:INSTRUMENT_ID pairs separated by commas, got {text!r}")


def _list(kind):
    def parse(text):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")
    return parse


_OPTIONS = (  # flag, FeedConfig key, type, help
    ("--transport", "transport", str, "udp, tcp or aeron"),
    ("--host", "host", str, "receiver host"),
    ("--port", "port", int, "receiver port"),
    ("--rate", "rate", float, "signals per second"),
    ("--duration", "duration_s", float, "seconds to run (0: until --count)"),
    ("--count", "count", int, "signals to send (0: until --duration)"),
    ("--seed", "seed", int, "random seed: same seed, same content"),
    ("--seq-base", "seq_base", int, "seqs count from this + 1 (above what an engine remembers of the source)"),
    ("--source", "source", int, "signal source id"),
    ("--signal-ids", "signal_ids", _list(int), "comma-separated signal ids"),
    ("--instruments", "instruments", _list(int), "comma-separated instrument ids"),
    ("--routes", "routes", _routes, "SIGNAL_ID:INSTRUMENT_ID pairs to draw signals from (with --config: each "
                                    "signal id with the tradable instruments all its subscribers trade)"),
    ("--start-prices", "start_prices", _list(float), "starting mid: one, or one per instrument"),
    ("--tick-sizes", "tick_sizes", _list(float), "tick size: one, or one per instrument"),
    ("--ttl-ms", "ttl_ms", float, "signal time-to-live (0: none)"),
    ("--target-step", "target_step", float, "0: target values uniform in [-1, 1]; else each (signal id, "
                                            "instrument) target is the sine of a walk with this step (radians)"),
    ("--target-drift", "target_drift", float, "the walks' mean step (radians, times a factor per pair)"),
    ("--md-rate", "md_rate", float, "market data updates per second, over all instruments"),
    ("--volatility-bps", "volatility_bps", float, "standard deviation of one update's mid move"),
    ("--spread-bps", "spread_bps", float, "quoted spread"),
    ("--aggression-bps", "aggression_bps", float, "signal price distance from mid, toward the value's side"),
    ("--bad-ratio", "bad_ratio", float, "share of signals replaced by bad ones"),
    ("--bad-every", "bad_every", int, "every N-th signal bad too, --bad-kinds in turn (0: none)"),
    ("--bad-kinds", "bad_kinds", _list(str), "comma-separated subset of " + ",".join(ALL_BAD_KINDS)),
    ("--frames-per-datagram", "frames_per_datagram", int, "frames per UDP datagram or Aeron message"),
    ("--to-sim-oms", "to_sim_oms", str, "host:port: copy market data to the simulated OMS over UDP"),
    ("--max-batch", "max_batch", int, "signals per send pass at most"),
    ("--aeron-directory", "aeron_directory", str, "Aeron: the running media driver's directory"),
    ("--aeron-channel", "aeron_channel", str, "Aeron: channel of the signals stream"),
    ("--aeron-stream", "aeron_stream", int, "Aeron: signals stream id"),
    ("--aeron-market-data-channel", "aeron_market_data_channel", str, "Aeron: market data channel"),
    ("--aeron-market-data-stream", "aeron_market_data_stream", int, "Aeron: market data stream id"),
)


def add_feed_arguments(parser):
    """The `orchestrator feed` options; each defaults to FeedConfig's default (or to --config's value)."""
    parser.add_argument("--config", default=None,
                        help="engine config dir or file: its listen address, instruments (ids, reference prices, "
                             "tick sizes), strategies' signal ids and routes become the defaults, and the keys of "
                             f"its {FEED_FILE} if it has one")
    defaults = FeedConfig()
    for flag, key, kind, text in _OPTIONS:
        default = getattr(defaults, key)
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        parser.add_argument(flag, dest=key, type=kind, default=None, metavar=flag[2:].upper().replace("-", "_"),
                            help=f"{text} (default {default})")
    parser.add_argument("--max-send-errors", type=int, default=100, metavar="N",
                        help="UDP: stop and exit 1 after N sends refused because nothing listens (a full buffer "
                             "does not count); 0: never (default 100)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def config_from_engine(path, transport=None):
    """FeedConfig fields taken from an engine config: where it listens, its instruments and signal ids. With no
    transport given, the engine's first of udp, tcp, aeron: an engine that listens on Aeron only gets Aeron."""
    config = load_config(path)
    listen, aeron = config.engine.listen, config.engine.aeron
    if transport is None:
        transport = "udp" if listen.udp else "tcp" if listen.tcp else "aeron"
    listener = listen.tcp if transport == "tcp" else listen.udp
    fields = {"transport": transport}
    if transport == "aeron":
        fields.update(aeron_directory=aeron.directory, aeron_channel=aeron.signals.channel,
                      aeron_stream=aeron.signals.stream_id, aeron_market_data_channel=aeron.market_data.channel,
                      aeron_market_data_stream=aeron.market_data.stream_id)
    elif listener:
        fields["host"], fields["port"] = listener.host, listener.port
    fields["instruments"] = [i.id for i in config.instruments]
    fields["start_prices"] = [i.reference_price for i in config.instruments]
    fields["tick_sizes"] = [i.tick_size for i in config.instruments]
    fields["signal_ids"] = sorted({sid for s in config.strategies for sid in s.signals})
    fields["routes"] = subscribed_routes(config)
    feed_file = Path(config.root) / FEED_FILE
    if feed_file.is_file():
        try:
            with open(feed_file, "rb") as f:
                fields.update(tomllib.load(f))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SystemExit(f"feed: cannot read {feed_file}: {e}") from None
        if transport == "tcp" and isinstance(fields.get("bad_kinds"), list):  # a stream cannot pass an oversize frame
            fields["bad_kinds"] = [k for k in fields["bad_kinds"] if k != "oversize"] or ["garbage"]
    return fields


def subscribed_routes(config):
    """(signal id, instrument id) pairs as the strategies subscribe: for each signal id (in order), each tradable
    instrument that every subscriber trades, so no subscriber rejects it as `restricted` or `not_tradable`, and
    that no lower signal id drives already for one of them, so each (strategy, instrument) follows one target."""
    ids = {i.symbol: i.id for i in config.instruments if i.tradable}
    routes, driven = [], set()  # driven: (strategy name, symbol)
    for signal_id in sorted({sid for s in config.strategies for sid in s.signals}):
        subscribers = [s for s in config.strategies if signal_id in s.signals]
        common = set(ids).intersection(*(s.instruments for s in subscribers))
        for symbol in sorted(common, key=ids.get):
            if not any((s.name, symbol) in driven for s in subscribers):
                routes.append([signal_id, ids[symbol]])
                driven.update((s.name, symbol) for s in subscribers)
    return routes


def feed_config_from_args(args):
    """FeedConfig from --config and the flags given (flags win); a bad value exits naming the key."""
    fields = {}
    given = {key: getattr(args, key) for _, key, _, _ in _OPTIONS if getattr(args, key, None) is not None}
    if getattr(args, "config", None):
        fields.update(config_from_engine(args.config, given.get("transport")))
        if ("signal_ids" in given or "instruments" in given) and "routes" not in given:
            fields.pop("routes", None)  # ids chosen by hand: paired at random, unless routes are given too
    fields.update(given)
    if getattr(args, "max_send_errors", None) is not None:
        fields["max_send_errors"] = args.max_send_errors
    try:
        return msgspec.convert(fields, FeedConfig)
    except msgspec.ValidationError as e:
        raise SystemExit(f"feed: bad option: {e}") from None


def feed(args):
    """Run `orchestrator feed` with parsed args: print the summary line (or JSON); return the exit code."""
    config = feed_config_from_args(args)
    runner = Feed(config)
    try:
        summary = runner.run()
    except KeyboardInterrupt:
        summary = runner.summary
    except (OSError, TransportClosed) as e:
        where = (f"aeron {config.aeron_channel} stream {config.aeron_stream}" if config.transport == "aeron" else
                 f"{config.transport} {config.host}:{config.port}")
        print(f"feed: cannot send to {where}: {e}", file=sys.stderr)
        return 1
    print(msgspec.json.encode(summary.as_dict()).decode() if args.json else summary.line(), flush=True)
    if summary.gave_up:
        print(f"feed: gave up after {summary.refused} sends refused: nothing is listening at {config.transport} "
              f"{config.host}:{config.port} (--max-send-errors {config.max_send_errors})", file=sys.stderr)
    elif summary.send_errors:
        print(f"feed: {summary.send_errors} sends refused by {config.transport} {config.host}:{config.port}: "
              f"those frames were lost", file=sys.stderr)
    return 1 if summary.closed or summary.gave_up else 0


# ---------------------------------------------------------------------------------------------- sim-oms
def add_sim_oms_arguments(parser):
    """The `orchestrator sim-oms` options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=47200, help="TCP port for the engine's OMS link (0: any)")
    parser.add_argument("--market-data-port", type=int, default=None,
                        help="UDP port for MarketData frames to fill against (default: none)")
    parser.add_argument("--config", default=None,
                        help="TOML file whose [sim_oms] table (or top level) sets the options below")
    for name, kind, text in (
            ("ack-latency-us", int, "order -> ACK latency"),
            ("fill-latency-us", int, "order fillable -> fill latency"),
            ("reject-ratio", float, "share of valid orders rejected at random"),
            ("partial-fill-ratio", float, "share of fills split into 2-3 partial fills"),
            ("fee-per-unit", float, "fee in currency per unit filled"),
            ("resting-ttl-us", int, "cancel resting limit orders after this long (0: never)"),
            ("seed", int, "random seed")):
        default = getattr(SimOmsConfig(), name.replace("-", "_"))
        parser.add_argument(f"--{name}", type=kind, default=None, help=f"{text} (default {default})")
    parser.add_argument("--drop-after", type=int, default=0, metavar="N",
                        help="fault: close each connection after its N-th order (0: never)")
    parser.add_argument("--stall-ms", type=int, default=0,
                        help="fault: stop reading a connection for this long, once (0: never)")
    parser.add_argument("--stall-after", type=int, default=0, metavar="N",
                        help="fault: stall after the connection's N-th order (default 0: on connect)")
    parser.add_argument("--aeron", metavar="ENGINE_CONFIG", default=None,
                        help="serve over Aeron instead of TCP: the orders, reports and market_data streams and the "
                             "driver directory of this engine config's [aeron] table")
    parser.add_argument("--aeron-idle", choices=sorted(IDLE_STRATEGIES), default="backoff",
                        help="with --aeron: what the OMS loop does when a round finds nothing (default backoff)")
    return parser


def sim_oms_config_from_args(args):
    """SimOmsConfig from --config and the flags given (flags win); errors name the key at fault."""
    fields = {}
    if args.config:
        with open(args.config, "rb") as f:
            doc = tomllib.load(f)
        fields.update(doc.get("sim_oms", doc))
    for key in SimOmsConfig.__struct_fields__:
        value = getattr(args, key, None)
        if value is not None:
            fields[key] = value
    try:
        return msgspec.convert(fields, SimOmsConfig)
    except msgspec.ValidationError as e:
        where = f" in {args.config}" if args.config else ""
        raise SystemExit(f"sim-oms: bad config{where}: {e}") from None


def sim_oms(args):
    """Run `orchestrator sim-oms` with parsed args; return the exit code."""
    config = sim_oms_config_from_args(args)
    for key in ("drop_after", "stall_ms", "stall_after"):
        if getattr(args, key) < 0:
            raise SystemExit(f"sim-oms: --{key.replace('_', '-')} must be >= 0")
    if getattr(args, "aeron", None):
        aeron = load_config(args.aeron).engine.aeron
        driver = msgspec.convert({"driver": "external", "directory": aeron.directory,
                                  "timeout_ms": aeron.timeout_ms}, AeronDriverConfig)
        try:
            serve_aeron(config, driver, aeron.orders, aeron.reports, aeron.market_data, args.aeron_idle)
        except AeronUnavailable as e:
            raise SystemExit(f"sim-oms: {e}") from None
        return 0
    serve(config, args.host, args.port, args.market_data_port, drop_after=args.drop_after,
          stall_ms=args.stall_ms, stall_after=args.stall_after)
    return 0
