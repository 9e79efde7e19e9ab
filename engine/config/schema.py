"""The config schema: frozen msgspec Structs that reject unknown keys, one per table of the config files.

Structs are only ever built by decoding (`msgspec.convert` over `tomllib` output): a Struct constructor does not
validate, decoding does. Ranges are `Meta` constraints; what a constraint cannot say (power of two, min <= max,
each entry once) is checked in `__post_init__`, which msgspec runs while decoding, so any decode path validates.
Cross-references between files (account names, instrument symbols, dense ids) are the loader's (loader.py).

Every transport is set the same way: its table in engine.toml is its adapter's own config Struct
(adapters/udp.py, tcp.py, aeron.py), so every setting an adapter has can be set here, and none it lacks.
"""
import ipaddress
import zoneinfo
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct, field

from adapters.aeron import (
    CHANNEL_PATTERN, CHANNEL_TEXT, AeronDriverConfig, AeronStreamConfig, FragmentLimit, MessageBytes, OfferAttempts,
    PollIntervalUs,
)
from adapters.base import HOST_PATTERN, IPV4_PATTERN, Host, Port
from adapters.journal import JournalConfig
from adapters.prometheus import PrometheusConfig
from adapters.redis_mirror import KEY_PART_PATTERN, RedisMirrorConfig
from adapters.tcp import TcpClientConfig, TcpServerConfig
from adapters.udp import UdpReceiverConfig
from adapters.webhook import URL_PATTERN, WebhookConfig
from engine.config.errors import fail, show, unsupported
from sim.venue import SimOmsConfig
from kernels.dtypes import FRAME_HEADER_SIZE, MAX_FRAME_BODY, MAX_OPEN_ORDERS_CAPACITY

MAX_SIGNAL_ID = 65_535  # the subscription index (sub_ptr) has max_signal_id + 2 entries
MAX_QTY = 10**15        # units; keeps qty * price products and sums far inside int64
MAX_MS = 86_400_000     # one day: windows, cooldowns and backoffs are shorter than a trading day
INT32_MAX = 2**31 - 1
MAX_AMOUNT = 1e15       # currency and prices: finite and far inside float64 exactness for sums
MIN_BUFFER = FRAME_HEADER_SIZE + MAX_FRAME_BODY  # a buffer must hold one whole frame

# ------------------------------------------------------------------------------------------------- field types
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SYMBOL_PATTERN = r"^\S+$"
VERSION_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+$"
PATTERN_TEXT = {  # what a pattern means, for error messages
    NAME_PATTERN: 'a name of letters, digits, "_", "." or "-" (not starting with a punctuation mark)',
    SYMBOL_PATTERN: "a symbol without spaces",
    VERSION_PATTERN: 'a version "major.minor.patch" like "1.2.0"',
    CHANNEL_PATTERN: CHANNEL_TEXT,
    HOST_PATTERN: 'a host name or IP address like "127.0.0.1"',
    URL_PATTERN: 'an http:// or https:// URL like "http://127.0.0.1:9000/alerts"',
    r"^[a-zA-Z_:][a-zA-Z0-9_:]*$": 'a series name like "orchestrator_strategy_rejects_total"',
    IPV4_PATTERN: 'an IPv4 address like "10.0.0.7" (a peer as the socket sees it: no host names)',
    KEY_PART_PATTERN: 'a Redis key part of letters, digits, "_", "." or "-"',
}

Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]
Symbol = Annotated[str, Meta(min_length=1, max_length=32, pattern=SYMBOL_PATTERN)]
SemVer = Annotated[str, Meta(pattern=VERSION_PATTERN)]
Id = Annotated[int, Meta(ge=0, le=INT32_MAX)]
SignalId = Annotated[int, Meta(ge=0, le=MAX_SIGNAL_ID)]
Positive = Annotated[float, Meta(gt=0, le=MAX_AMOUNT)]
Quantity = Annotated[int, Meta(ge=1, le=MAX_QTY)]
Count = Annotated[int, Meta(ge=1, le=INT32_MAX)]
Milliseconds = Annotated[int, Meta(ge=1, le=MAX_MS)]
RingSize = Annotated[int, Meta(ge=2, le=1 << 24)]
Sides = Literal["both", "buy_only", "sell_only"]


class _Config(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config Struct: immutable, unknown keys rejected. Subclasses repeat `kw_only=True` (it
    applies to the fields a class defines, so required fields may follow defaulted ones)."""


def _default(struct_type, value=None):
    """A default nested Struct, built by decoding like everything else."""
    return field(default_factory=lambda: msgspec.convert(value or {}, struct_type))


# ------------------------------------------------------------------------------------------------- engine
class Listen(_Config, kw_only=True):
    """Where signals and market data arrive: each table is its adapter's config (host, port and its buffers). A
    missing [listen] table means UDP and TCP on loopback; a present table enables only the transports it names."""
    udp: UdpReceiverConfig | None = None
    tcp: TcpServerConfig | None = None
    aeron: bool = False  # subscribe to the [aeron] signals and market_data streams

    def __post_init__(self):
        if self.udp is None and self.tcp is None and not self.aeron:
            raise ValueError("Expected at least one of udp, tcp, aeron, got none")


class Oms(_Config, kw_only=True):
    """The OMS link. kind "sim": the simulated venue runs inside the engine's batch, in stream time ([oms.sim]:
    its latencies, reject and partial-fill ratios, fees, seed); "tcp": an OMS at [oms.tcp]; "aeron": an OMS on
    the [aeron] orders and reports streams."""
    kind: Literal["sim", "tcp", "aeron"] = "sim"
    tcp: TcpClientConfig = _default(TcpClientConfig, {"port": 47200})
    sim: SimOmsConfig = _default(SimOmsConfig)
    on_disconnect: Literal["halt", "reduce"] = "halt"
    # what a reconciliation difference (the OMS sees an order otherwise than the books) does beyond the log and
    # the counters: "reduce" moves every trading strategy to reduce-only until an operator acts
    on_mismatch: Literal["report", "reduce"] = "report"
    # the link is watched: more than max_unacked orders without an acknowledgement after ack_timeout_ms, or orders
    # it has refused to take for stall_ms, and it is treated as lost (on_disconnect applies, it is dropped)
    ack_timeout_ms: Milliseconds = 2_000
    max_unacked: Annotated[int, Meta(ge=0, le=INT32_MAX)] = 8
    stall_ms: Milliseconds = 2_000
    reconnect_backoff_min_ms: Milliseconds = 100
    reconnect_backoff_max_ms: Milliseconds = 5_000

    def __post_init__(self):
        if self.reconnect_backoff_max_ms < self.reconnect_backoff_min_ms:
            fail("reconnect_backoff_max_ms", f"Expected int >= reconnect_backoff_min_ms "
                 f"({self.reconnect_backoff_min_ms})", self.reconnect_backoff_max_ms)


class Rings(_Config, kw_only=True):
    """Ring capacities in records; each a power of two (a sequence maps to a slot with a mask)."""
    signals: RingSize = 4096
    orders: RingSize = 4096
    rejects: RingSize = 4096
    reports: RingSize = 4096
    fills: RingSize = 4096  # applied fills, for the metrics and the mirror

    def __post_init__(self):
        for key in self.__struct_fields__:
            size = getattr(self, key)
            if size & (size - 1):
                fail(key, "Expected a power of two", size)


class Aeron(AeronDriverConfig, kw_only=True):
    """[aeron]: the media driver (keys of AeronDriverConfig: driver, directory, threading, idle_strategy,
    idle_strategy_args, timeout_ms), the streams that `listen.aeron = true` and `oms.kind = "aeron"` use, and the
    settings of their adapters (AeronReceiverConfig, AeronClientConfig). market_data may be the signals stream
    itself (then it is subscribed once)."""
    signals: AeronStreamConfig = _default(AeronStreamConfig, {"stream_id": 1001})
    market_data: AeronStreamConfig = _default(AeronStreamConfig, {"stream_id": 1002})
    orders: AeronStreamConfig = _default(AeronStreamConfig, {"stream_id": 1003})
    reports: AeronStreamConfig = _default(AeronStreamConfig, {"stream_id": 1004})
    max_message_bytes: MessageBytes = 65536  # the largest message a sender makes (and a receiver's room rule)
    offer_attempts: OfferAttempts = 32
    fragment_limit: FragmentLimit = 256
    event_poll_interval_us: PollIntervalUs = 1000  # event driver only: the spin driver polls in its loop


class Journal(JournalConfig, kw_only=True):
    """[journal]: every arrival and command, appended before anything leaves (adapters/journal.py: dir, fsync,
    fsync_interval_ms, segment_bytes), snapshots of the whole state beside it (<dir>/snapshots), and what the
    engine does when the disk refuses a write: "halt" every strategy (nothing is sent that is not journaled)
    or "alarm" (log, keep trading, retry). `orchestrator run` recovers from it at start."""
    enabled: bool = True
    on_error: Literal["halt", "alarm"] = "halt"
    snapshot_interval_s: Annotated[float, Meta(ge=0, le=86_400)] = 60.0  # 0: only at a clean shutdown
    snapshots_kept: Annotated[int, Meta(ge=1, le=1000)] = 3


# ------------------------------------------------------------------------------------------------- monitoring
SeriesName = Annotated[str, Meta(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", max_length=200)]
Seconds = Annotated[float, Meta(ge=0, le=86_400)]


class Dashboard(_Config, kw_only=True):
    """[dashboard]: the operator's web page (engine/dashboard.py) on its own address, read from what the engine
    publishes between batches (never from the arena)."""
    enabled: bool = True
    host: Annotated[str, Meta(min_length=1, max_length=253, pattern=HOST_PATTERN)] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 0  # 0: the OS picks one (the ready line says which)
    refresh_ms: Annotated[int, Meta(ge=100, le=60_000)] = 1000  # how often the page polls, and the view is taken
    history: Annotated[int, Meta(ge=2, le=10_000)] = 300        # points per P&L sparkline


class AlertRule(_Config, kw_only=True):
    """One rule over an exported series (docs/metrics.md; the name as served, counters with `_total`): every
    series of that name whose labels include `labels` is its own alert. A counter's value is its increase over
    the last `window_s` seconds; a gauge's is its value, and the condition must hold for `window_s` seconds
    (0: at once). It fires once when the condition starts to hold and resolves when it stops."""
    name: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    metric: SeriesName
    labels: dict[str, str] = {}
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float
    window_s: Seconds = 0.0
    severity: Literal["info", "warning", "critical"] = "warning"
    enabled: bool = True


class Alerts(_Config, kw_only=True):
    """[alerts]: built-in events (breaker trips, lifecycle changes, stale feeds, reports for unknown orders, the
    journal failing, the OMS link down) and [[alerts.rules]], evaluated by a thread of their own from the
    snapshots the engine publishes (engine/alerts.py); sinks: the log (structured, one JSON line per
    notification) and an optional [alerts.webhook] (adapters/webhook.py)."""
    enabled: bool = True
    interval_ms: Annotated[int, Meta(ge=10, le=60_000)] = 500  # how often the engine hands a snapshot over
    log: bool = True
    stale_feed_s: Seconds = 10.0       # no market data for an instrument a strategy trades for this long; 0: off
    unknown_order_quiet_s: Seconds = 60.0  # reports for unknown orders: resolved after this long without one
    events_quiet_s: Seconds = 60.0  # report mismatches, the OMS link given up: resolved this long after the last
    webhook: WebhookConfig | None = None
    rules: tuple[AlertRule, ...] = ()

    def __post_init__(self):
        names = [rule.name for rule in self.rules]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(f"`rules[{index}].name`: Expected each rule name once, got {show(name)} again")


class Quality(_Config, kw_only=True):
    """[quality]: execution quality per strategy x instrument, from the fills (engine/quality.py)."""
    enabled: bool = True
    markouts_ms: Annotated[tuple[Annotated[int, Meta(ge=1, le=MAX_MS)], ...], Meta(max_length=8)] = (
        1_000, 10_000, 60_000)  # horizons after each fill at which the mark is read


class Pnl(_Config, kw_only=True):
    """[pnl]: P&L attribution per strategy x instrument x deploy, with a day that starts at `day_start` (HH:MM)
    in `time_zone` (an IANA name)."""
    day_start: Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "00:00"
    time_zone: Annotated[str, Meta(min_length=1, max_length=64)] = "UTC"
    days_kept: Annotated[int, Meta(ge=1, le=3660)] = 31  # closed days kept in the report

    def __post_init__(self):
        try:
            zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            fail("time_zone", "Expected an IANA time zone name like \"America/New_York\"", self.time_zone)


# ------------------------------------------------------------------------------------------------- api
TokenName = Annotated[str, Meta(min_length=1, max_length=48, pattern=NAME_PATTERN)]  # + " (operator)" fits an actor
EnvName = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
SECRET_CHARS = (16, 256)  # a bearer token's length; printable ASCII without spaces (it travels in a header)


def secret_problem(secret: str) -> str | None:
    """What is wrong with a token's secret, in words that never repeat it; None when it will do."""
    low, high = SECRET_CHARS
    if not low <= len(secret) <= high or not all("!" <= c <= "~" for c in secret):
        return f"Expected {low} to {high} printable ASCII characters without spaces (the value is not shown)"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiToken(_Config, kw_only=True):
    """One bearer token of the REST API: `name` is who acts (a command is journaled with the actor
    "name (role)"), `role` what it may do ("read": every GET; "operator": every command too), and the secret
    itself is in the file (`token`) or, better, in an environment variable named by `token_env`, read at start."""
    name: TokenName
    role: Literal["read", "operator"]
    token: str | None = None  # never shown in an error message
    token_env: EnvName | None = None

    def __post_init__(self):
        if (self.token is None) == (self.token_env is None):
            raise ValueError("Expected exactly one of token, token_env")
        if self.token is not None and (problem := secret_problem(self.token)):
            raise ValueError(f"`token`: {problem}")


class Api(_Config, kw_only=True):
    """[api]: the REST management API (docs/api.md), served by the engine process (on the event driver's own loop,
    or a thread of its own beside the spin driver). Without tokens every caller is an operator, so a host beyond
    loopback needs tokens."""
    enabled: bool = False
    host: Host = "127.0.0.1"
    port: Port = 47300  # 0: the OS picks one (`orchestrator run` prints it)
    tokens: tuple[ApiToken, ...] = ()

    def __post_init__(self):
        names = [t.name for t in self.tokens]
        secrets = [t.token for t in self.tokens if t.token is not None]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"`tokens`: Expected each name once, got {show(repeated[0])} again")
        if len(set(secrets)) < len(secrets):
            raise ValueError("`tokens`: Expected a different token for each name, got one token twice (not shown)")
        if self.enabled and not self.tokens and not is_loopback(self.host):
            raise ValueError(f"`tokens`: Expected at least one token: without tokens anyone who reaches "
                             f"{self.host} could trade; list tokens, or listen on a loopback address")


# ------------------------------------------------------------------------------------------------- redis mirror
class Redis(RedisMirrorConfig, kw_only=True):
    """[redis]: the optional mirror of strategy states, versions, positions, P&L and a stream of state changes and
    fills in Redis (adapters/redis_mirror.py has the writer's keys: host, port, db, key_prefix, queue_size,
    stream_max_length, backoff_min_ms, backoff_max_ms, timeout_ms, batch_records), fed between batches by
    engine/mirror.py (docs/redis.md). `url` ("redis://host:port/db") instead of host, port and db."""
    enabled: bool = False
    url: str | None = None
    snapshot_interval_ms: Milliseconds = 1_000  # a changed strategy's hash is rewritten at most this late
    replay_records: Annotated[int, Meta(ge=0, le=1 << 22)] = 65_536  # recent records kept for the catch-up
    shutdown_flush_ms: Annotated[int, Meta(ge=0, le=60_000)] = 2_000  # a clean stop waits this long for Redis

    def __post_init__(self):
        super().__post_init__()
        if self.url is not None:
            if (self.host, self.port, self.db) != ("127.0.0.1", 6379, 0):
                fail("url", "Expected url or host/port/db, not both", self.url)
            parse_redis_url(self.url)

    def mirror_config(self) -> RedisMirrorConfig:
        """The writer's own config: its keys from this table, host, port and db from `url` when it is given."""
        fields = {name: getattr(self, name) for name in RedisMirrorConfig.__struct_fields__}
        if self.url is not None:
            fields["host"], fields["port"], fields["db"] = parse_redis_url(self.url)
        return msgspec.convert(fields, RedisMirrorConfig)


def parse_redis_url(url):
    """(host, port, db) of "redis://host[:port][/db]"; anything else (a password, a query, another scheme) is
    refused with the key named."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
        db = int(parts.path.lstrip("/") or 0)
    except ValueError:
        parts = None
    if (parts is None or parts.scheme != "redis" or not parts.hostname or parts.username or parts.password
            or parts.query or parts.fragment or not 0 <= db <= 1 << 16):
        fail("url", 'Expected "redis://host[:port][/db]"', url)
    return parts.hostname, port, db


class EngineConfig(_Config, kw_only=True):
    name: Name
    driver: Literal["event", "spin"] = "event"
    listen: Listen = _default(Listen, {"udp": {"port": 47100}, "tcp": {"port": 47101}})
    oms: Oms = _default(Oms)
    rings: Rings = _default(Rings)
    rx_bytes: Annotated[int, Meta(ge=MIN_BUFFER, le=1 << 30)] = 1 << 20
    rx_chunks: Annotated[int, Meta(ge=1, le=1 << 20)] = 4096  # reads (datagrams, TCP reads) per batch
    tx_bytes: Annotated[int, Meta(ge=MIN_BUFFER, le=1 << 30)] = 1 << 20
    max_open_orders: Annotated[int, Meta(ge=1, le=MAX_OPEN_ORDERS_CAPACITY)] = 65_536
    sources: Annotated[int, Meta(ge=1, le=65_536)] = 1  # signal source ids are 0..sources-1
    # room for strategies registered (or run as shadows) while trading: the arena is sized once, at start
    max_strategies: Annotated[int, Meta(ge=1, le=100_000)] = 64
    max_signal_id: Annotated[int, Meta(ge=0, le=MAX_SIGNAL_ID)] = 1023
    max_subscriptions: Annotated[int, Meta(ge=1, le=1 << 20)] = 4096  # (signal id, strategy) pairs
    aeron: Aeron = _default(Aeron)  # used only by listen.aeron and oms.kind = "aeron"
    journal: Journal = _default(Journal)
    api: Api = _default(Api)
    redis: Redis = _default(Redis)  # the Redis mirror: off unless enabled
    metrics: PrometheusConfig | None = None  # /metrics (adapters/prometheus.py); none: nothing is served
    dashboard: Dashboard | None = None       # the web page (engine/dashboard.py); none: not served
    alerts: Alerts = _default(Alerts)
    quality: Quality = _default(Quality)
    pnl: Pnl = _default(Pnl)


# ------------------------------------------------------------------------------------------------- instruments
class Instrument(_Config, kw_only=True):
    id: Id
    symbol: Symbol
    tick_size: Positive  # currency
    lot_size: Annotated[int, Meta(ge=1, le=10**9)] = 1  # units
    multiplier: Positive = 1.0  # currency per unit per price point
    price_band_pct: Annotated[float, Meta(gt=0, le=100)]  # collar around the reference price, in percent
    tradable: bool = True
    reference_price: Positive  # currency; used until market data arrives
    max_mark_age_ms: Annotated[int, Meta(ge=0, le=MAX_MS)] = 0  # orders need market data this fresh (0: no rule)

    def __post_init__(self):
        ticks = self.reference_price / self.tick_size
        if not 0.5 <= ticks < 2**53:
            fail("reference_price", f"Expected between one tick ({self.tick_size}) and 2**53 ticks",
                 self.reference_price)


class InstrumentsFile(_Config, kw_only=True):
    instruments: Annotated[tuple[Instrument, ...], Meta(min_length=1)]


# ------------------------------------------------------------------------------------------------- accounts
class Account(_Config, kw_only=True):
    id: Id
    name: Name
    max_gross_notional: Positive  # currency
    max_net_notional: Positive    # currency
    daily_loss_limit: Positive    # currency
    kill_switch: bool = False
    sides: Sides = "both"         # the sides new risk may take; an order that reduces a position always may


class AccountsFile(_Config, kw_only=True):
    accounts: Annotated[tuple[Account, ...], Meta(min_length=1)]


# ------------------------------------------------------------------------------------------------- strategies
class Sizing(_Config, kw_only=True):
    max_position: Quantity  # units, absolute position the strategy may hold per instrument


class Limits(_Config, kw_only=True):
    max_order_qty: Quantity                 # units
    max_order_notional: Positive            # currency
    max_open_orders: Annotated[int, Meta(ge=1, le=MAX_OPEN_ORDERS_CAPACITY)]
    rate_per_second: Positive               # order tokens refilled per second
    burst: Annotated[float, Meta(ge=1, le=1e9)]  # bucket size in orders
    daily_loss_limit: Positive              # currency
    sides: Sides = "both"                   # the sides new risk may take; reducing orders always may
    duplicate_window_ms: Annotated[int, Meta(ge=0, le=MAX_MS)] = 0  # deny a repeat of the last order (0: off)


class Breakers(_Config, kw_only=True):
    max_consecutive_rejects: Count
    max_reject_ratio: Annotated[float, Meta(gt=0, le=1)]
    ratio_window_ms: Milliseconds
    ratio_min_orders: Count                 # the ratio breaker waits for this many orders in the window
    max_drawdown: Positive                  # currency, from the peak of net P&L
    loss_limit: Positive                    # currency
    action: Literal["halt", "reduce"] = "halt"
    cooldown_ms: Annotated[int, Meta(ge=0, le=MAX_MS)] = 0  # 0: only an explicit reset re-arms the strategy
    max_fills_per_window: Annotated[int, Meta(ge=0, le=INT32_MAX)] = 0  # more fills in fill_window_ms trip (0: off)
    fill_window_ms: Milliseconds = 1_000
    max_off_band_fills: Annotated[int, Meta(ge=0, le=INT32_MAX)] = 0  # this many fills off the band trip (0: off)


class Strategy(_Config, kw_only=True):
    name: Name
    version: SemVer  # the strategy's own label; each deploy of it gets a deploy number
    account: Name
    signals: Annotated[tuple[SignalId, ...], Meta(min_length=1)]
    instruments: Annotated[tuple[Symbol, ...], Meta(min_length=1)]  # the others are restricted
    enabled: bool = False  # true: starts ACTIVE; false: starts READY
    order_type: Literal["limit", "market", "ioc"] = "limit"
    order_logic: str | None = None  # refused until it does something (below)
    sizing: Sizing
    limits: Limits
    breakers: Breakers

    def __post_init__(self):
        for key in ("signals", "instruments"):
            values = getattr(self, key)
            for index, value in enumerate(values):
                if value in values[:index]:
                    raise ValueError(f"`{key}[{index}]`: Expected each entry once, got {show(value)} again")
        if self.order_logic is not None:
            unsupported("order_logic", "custom order logic is not loaded, so the strategy would trade without it")


# ------------------------------------------------------------------------------------------------- the whole
class Config(_Config, kw_only=True):
    """A loaded, cross-checked configuration. Tables are in id order: instruments[i].id == i, accounts[a].id == a,
    strategies in name order (a strategy's id is its index). strategy_files[s] is the file strategy s came from,
    strategy_hashes[s] the sha256 of its canonical form (see loader.strategy_hash)."""
    root: str
    engine_file: str
    engine: EngineConfig
    instruments: tuple[Instrument, ...]
    accounts: tuple[Account, ...]
    strategies: tuple[Strategy, ...]
    strategy_files: tuple[str, ...]
    strategy_hashes: tuple[str, ...]
