"""Configuration: TOML files decoded into frozen msgspec Structs, validated on the way in.

A config directory holds
    engine.toml        engine settings (a single .toml path may be given instead: it is the engine file and the
                       other parts are read from its directory, so several engine variants can share them)
    instruments.toml   [[instruments]] tables, ids dense 0..n-1
    accounts.toml      [[accounts]] tables, ids dense 0..n-1
    strategies/*.toml  one strategy per file, at the top level of the file

Structs are only ever built by decoding (`msgspec.convert` over `tomllib` output): a Struct constructor does not
validate, decoding does. Ranges are `Meta` constraints; what a constraint cannot say (power of two, host:port,
min <= max) is checked in `__post_init__`, which msgspec runs while decoding, so any decode path validates.
Cross-references (account names, instrument symbols, dense ids, duplicate names across files) are checked by
the loader, which needs all files.

Every problem is reported as `FILE: at $.key.path: what was expected, got what`. `load_config` raises one
`ConfigError` listing every problem found (each file is decoded on its own, so one bad file does not hide
another) and never returns a partial config.
"""
from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

from adapters.aeron import CHANNEL_PATTERN, CHANNEL_TEXT, AeronDriverConfig, AeronStreamConfig, MessageBytes
from adapters.base import parse_address
from kernels.dtypes import FRAME_HEADER_SIZE, MAX_FRAME_BODY, MAX_OPEN_ORDERS_CAPACITY

__all__ = [
    "Account", "Aeron", "Breakers", "Config", "ConfigError", "EngineConfig", "Instrument", "Journal", "Limits",
    "Listen", "Metrics", "Oms", "Rings", "Sizing", "Strategy", "load_config", "parse_address", "strategy_hash",
    "validate", "load",
]

ENGINE_FILE = "engine.toml"
INSTRUMENTS_FILE = "instruments.toml"
ACCOUNTS_FILE = "accounts.toml"
STRATEGIES_DIR = "strategies"

MAX_SIGNAL_ID = 65_535  # the subscription index (SUB_PTR) has max_signal_id + 2 entries
MAX_QTY = 10**15        # units; keeps qty * price products and sums far inside int64
MAX_MS = 86_400_000     # one day: windows, cooldowns and backoffs are shorter than a trading day
INT32_MAX = 2**31 - 1
MAX_AMOUNT = 1e15       # currency and prices: finite and far inside float64 exactness for sums
MIN_BUFFER = FRAME_HEADER_SIZE + MAX_FRAME_BODY  # a buffer must hold one whole frame

# ------------------------------------------------------------------------------------------------- field types
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SYMBOL_PATTERN = r"^\S+$"
VERSION_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+$"
ORDER_LOGIC_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
_PATTERN_TEXT = {  # what a pattern means, for error messages
    NAME_PATTERN: 'a name of letters, digits, "_", "." or "-" (not starting with a punctuation mark)',
    SYMBOL_PATTERN: "a symbol without spaces",
    VERSION_PATTERN: 'a version "major.minor.patch" like "1.2.0"',
    ORDER_LOGIC_PATTERN: 'a "module:function" reference like "mypackage.logic:decide"',
    CHANNEL_PATTERN: CHANNEL_TEXT,
}

Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]
Symbol = Annotated[str, Meta(min_length=1, max_length=32, pattern=SYMBOL_PATTERN)]
Address = Annotated[str, Meta(min_length=3, max_length=255)]  # "host:port", checked by parse_address
SemVer = Annotated[str, Meta(pattern=VERSION_PATTERN)]
OrderLogic = Annotated[str, Meta(pattern=ORDER_LOGIC_PATTERN)]
Id = Annotated[int, Meta(ge=0, le=INT32_MAX)]
SignalId = Annotated[int, Meta(ge=0, le=MAX_SIGNAL_ID)]
Positive = Annotated[float, Meta(gt=0, le=MAX_AMOUNT)]
Quantity = Annotated[int, Meta(ge=1, le=MAX_QTY)]
Count = Annotated[int, Meta(ge=1, le=INT32_MAX)]
Milliseconds = Annotated[int, Meta(ge=1, le=MAX_MS)]
RingSize = Annotated[int, Meta(ge=2, le=1 << 24)]


class _Config(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config Struct: immutable, unknown keys rejected. Subclasses repeat `kw_only=True` (it
    applies to the fields a class defines, so required fields may follow defaulted ones)."""


def _fail(key: str, expected: str, got: Any) -> None:
    """Raise from __post_init__ so that the loader reports `$.<parent>.<key>` (see _explain)."""
    raise ValueError(f"`{key}`: {expected}, got {_show(got)}")


def _check_address(key: str, text: str | None) -> None:
    if text is not None:
        try:
            parse_address(text)
        except ValueError:
            _fail(key, 'Expected "host:port" with port 0..65535', text)


# ------------------------------------------------------------------------------------------------- engine
class Listen(_Config, kw_only=True):
    """Where signals arrive. A missing [listen] table means UDP and TCP on loopback; a present table
    enables only the transports it names."""
    udp: Address | None = None
    tcp: Address | None = None
    aeron: bool = False  # subscribe to the [aeron] signals and market_data streams

    def __post_init__(self):
        _check_address("udp", self.udp)
        _check_address("tcp", self.tcp)
        if self.udp is None and self.tcp is None and not self.aeron:
            raise ValueError("Expected at least one of udp, tcp, aeron, got none")


class Oms(_Config, kw_only=True):
    kind: Literal["sim", "tcp", "aeron"] = "sim"  # aeron: the [aeron] orders and reports streams
    address: Address = "127.0.0.1:47200"  # used when kind = "tcp"
    on_disconnect: Literal["halt", "reduce"] = "halt"
    reconnect_backoff_min_ms: Milliseconds = 100
    reconnect_backoff_max_ms: Milliseconds = 5_000

    def __post_init__(self):
        _check_address("address", self.address)
        if self.reconnect_backoff_max_ms < self.reconnect_backoff_min_ms:
            _fail("reconnect_backoff_max_ms", f"Expected int >= reconnect_backoff_min_ms "
                  f"({self.reconnect_backoff_min_ms})", self.reconnect_backoff_max_ms)


class Rings(_Config, kw_only=True):
    """Ring capacities in records; each a power of two (a sequence maps to a slot with a mask)."""
    signals: RingSize = 4096
    orders: RingSize = 4096
    rejects: RingSize = 4096
    reports: RingSize = 4096

    def __post_init__(self):
        for key in self.__struct_fields__:
            size = getattr(self, key)
            if size & (size - 1):
                _fail(key, "Expected a power of two", size)


class Journal(_Config, kw_only=True):
    path: Annotated[str, Meta(min_length=1)]  # as written: a relative path is relative to the working directory


class Metrics(_Config, kw_only=True):
    address: Address = "127.0.0.1:9464"

    def __post_init__(self):
        _check_address("address", self.address)


def _default(struct_type, value=None):
    """A default nested Struct, built by decoding like everything else."""
    return field(default_factory=lambda: msgspec.convert(value or {}, struct_type))


class Aeron(AeronDriverConfig, kw_only=True):
    """[aeron]: the media driver (keys of AeronDriverConfig: driver, directory, threading, idle_strategy,
    idle_strategy_args, timeout_ms) and the streams that `listen.aeron = true` and `oms.kind = "aeron"` use.
    market_data may be the signals stream itself (then it is subscribed once)."""
    signals: AeronStreamConfig = _default(AeronStreamConfig, {"stream_id": 1001})
    market_data: AeronStreamConfig = _default(AeronStreamConfig, {"stream_id": 1002})
    orders: AeronStreamConfig = _default(AeronStreamConfig, {"stream_id": 1003})
    reports: AeronStreamConfig = _default(AeronStreamConfig, {"stream_id": 1004})
    max_message_bytes: MessageBytes = 65536  # the largest message a sender makes (and a receiver's room rule)
    offer_attempts: Annotated[int, Meta(ge=1, le=1 << 20)] = 32  # per message before a send counts back-pressure


class EngineConfig(_Config, kw_only=True):
    name: Name
    driver: Literal["event", "spin"] = "event"
    listen: Listen = _default(Listen, {"udp": "127.0.0.1:47100", "tcp": "127.0.0.1:47101"})
    oms: Oms = _default(Oms)
    rings: Rings = _default(Rings)
    rx_bytes: Annotated[int, Meta(ge=MIN_BUFFER, le=1 << 30)] = 1 << 20
    rx_chunks: Annotated[int, Meta(ge=1, le=1 << 20)] = 4096  # reads (datagrams, TCP reads) per batch
    tx_bytes: Annotated[int, Meta(ge=MIN_BUFFER, le=1 << 30)] = 1 << 20
    max_open_orders: Annotated[int, Meta(ge=1, le=MAX_OPEN_ORDERS_CAPACITY)] = 65_536
    sources: Annotated[int, Meta(ge=1, le=65_536)] = 1  # signal source ids are 0..sources-1
    journal: Journal | None = None
    metrics: Metrics | None = None
    aeron: Aeron = _default(Aeron)  # used only by listen.aeron and oms.kind = "aeron"


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

    def __post_init__(self):
        ticks = self.reference_price / self.tick_size
        if not 0.5 <= ticks < 2**53:
            _fail("reference_price", f"Expected between one tick ({self.tick_size}) and 2**53 ticks",
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


class Breakers(_Config, kw_only=True):
    max_consecutive_rejects: Count
    max_reject_ratio: Annotated[float, Meta(gt=0, le=1)]
    ratio_window_ms: Milliseconds
    ratio_min_orders: Count                 # the ratio breaker waits for this many orders in the window
    max_drawdown: Positive                  # currency, from the peak of net P&L
    loss_limit: Positive                    # currency
    action: Literal["halt", "reduce"] = "halt"
    cooldown_ms: Annotated[int, Meta(ge=0, le=MAX_MS)] = 0  # 0: only an explicit reset re-arms the strategy


class Strategy(_Config, kw_only=True):
    name: Name
    version: SemVer
    account: Name
    signals: Annotated[tuple[SignalId, ...], Meta(min_length=1)]
    instruments: Annotated[tuple[Symbol, ...], Meta(min_length=1)]  # the others are restricted
    enabled: bool = False  # true: starts ACTIVE; false: starts READY
    order_type: Literal["limit", "market", "ioc"] = "limit"
    order_logic: OrderLogic | None = None  # "module:function", loaded and checked later
    sizing: Sizing
    limits: Limits
    breakers: Breakers

    def __post_init__(self):
        for key in ("signals", "instruments"):
            values = getattr(self, key)
            for index, value in enumerate(values):
                if value in values[:index]:
                    raise ValueError(f"`{key}[{index}]`: Expected each entry once, got {_show(value)} again")


# ------------------------------------------------------------------------------------------------- the whole
class Config(_Config, kw_only=True):
    """A loaded, cross-checked configuration. Tables are in id order: instruments[i].id == i, accounts[a].id == a,
    strategies in name order (a strategy's id is its index). strategy_files[s] is the file strategy s came from,
    strategy_hashes[s] the sha256 of its canonical form (see strategy_hash)."""
    root: str
    engine_file: str
    engine: EngineConfig
    instruments: tuple[Instrument, ...]
    accounts: tuple[Account, ...]
    strategies: tuple[Strategy, ...]
    strategy_files: tuple[str, ...]
    strategy_hashes: tuple[str, ...]


def strategy_hash(strategy: Strategy) -> str:
    """sha256 of the strategy's canonical JSON (sorted keys, defaults included): comments, key order and
    formatting do not change it, any value does."""
    return hashlib.sha256(msgspec.json.encode(strategy, order="sorted")).hexdigest()


class ConfigError(ValueError):
    """Every problem found, one per line, each `FILE: at $.key.path: expected ..., got ...`."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = list(errors)


# ------------------------------------------------------------------------------------------------- loading
def load_config(path: str | Path) -> Config:
    """Load and validate a config directory (or engine .toml file); raise ConfigError listing every problem."""
    config, errors = load(path)
    if errors:
        raise ConfigError(errors)
    return config


def validate(path: str | Path) -> list[str]:
    """The problems in a config, one line each; empty when it loads."""
    return load(path)[1]


def load(path: str | Path) -> tuple[Config | None, list[str]]:
    """(config, []) when the config at `path` is valid, else (None, every problem found)."""
    path = Path(path)
    if path.is_file():
        root, engine_file = path.parent, path
    elif path.is_dir():
        root, engine_file = path, path / ENGINE_FILE
    else:
        return None, [f"{path}: no such config directory or file"]
    errors: list[str] = []
    engine = _decode(engine_file, EngineConfig, errors)
    instruments = _decode(root / INSTRUMENTS_FILE, InstrumentsFile, errors)
    symbols = accounts_by_name = None
    if instruments is not None:
        symbols = _check_table(root / INSTRUMENTS_FILE, "instruments", instruments.instruments, "symbol", errors)
    accounts = _decode(root / ACCOUNTS_FILE, AccountsFile, errors)
    if accounts is not None:
        accounts_by_name = _check_table(root / ACCOUNTS_FILE, "accounts", accounts.accounts, "name", errors)
    strategy_paths = sorted((root / STRATEGIES_DIR).glob("*.toml"))
    if not strategy_paths:
        errors.append(f"{root / STRATEGIES_DIR}: no strategy files (*.toml); expected at least one")
    decoded: list[tuple[Strategy, Path]] = []
    first_file: dict[str, Path] = {}
    for file in strategy_paths:  # decode and cross-check file by file, so problems come out in file order
        strategy = _decode(file, Strategy, errors)
        if strategy is None:
            continue
        decoded.append((strategy, file))
        if strategy.name in first_file:
            errors.append(f'{file}: at $.name: strategy "{strategy.name}" is already defined in '
                          f'{first_file[strategy.name]}')
        first_file.setdefault(strategy.name, file)
        if accounts_by_name is not None and strategy.account not in accounts_by_name:
            errors.append(f"{file}: at $.account: {_unknown('account', strategy.account, accounts_by_name)}")
        if symbols is not None:
            for index, symbol in enumerate(strategy.instruments):
                if symbol not in symbols:
                    errors.append(f"{file}: at $.instruments[{index}]: "
                                  f"{_unknown('instrument symbol', symbol, symbols)}")
    if errors:
        return None, errors

    strategies = sorted(decoded, key=lambda pair: pair[0].name)
    config = msgspec.convert({
        "root": str(root), "engine_file": str(engine_file), "engine": engine,
        "instruments": sorted(instruments.instruments, key=lambda i: i.id),
        "accounts": sorted(accounts.accounts, key=lambda a: a.id),
        "strategies": [s for s, _ in strategies],
        "strategy_files": [str(f) for _, f in strategies],
        "strategy_hashes": [strategy_hash(s) for s, _ in strategies],
    }, Config)
    return config, []


_CONTENTS = {EngineConfig: "the engine settings", InstrumentsFile: "the [[instruments]] tables",
             AccountsFile: "the [[accounts]] tables", Strategy: "a strategy"}


def _decode(file: Path, struct_type, errors: list[str]):
    """Decode one TOML file into struct_type; on failure append one explained error and return None."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        errors.append(f"{file}: file not found; expected {_CONTENTS[struct_type]} here")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"{file}: cannot read: {exc}")
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\(at line (\d+), column (\d+)\)$", message)
        if where:
            message = message[:where.start()].rstrip()
            errors.append(f"{file}:{where[1]}: invalid TOML at line {where[1]}, column {where[2]}: {message}")
        else:
            errors.append(f"{file}: invalid TOML: {message}")
        return None
    try:
        return msgspec.convert(data, struct_type, strict=True)
    except msgspec.ValidationError as exc:
        errors.append(f"{file}: {_explain(str(exc), data, struct_type)}")
        return None


def _check_table(file: Path, key: str, rows, name_key: str, errors: list[str]) -> dict[str, int]:
    """Ids dense 0..n-1 and names unique; return name -> id."""
    by_id: dict[int, int] = {}    # id -> first row index
    by_name: dict[str, int] = {}  # name -> first row index
    for index, row in enumerate(rows):
        if row.id in by_id:
            errors.append(f"{file}: at $.{key}[{index}].id: duplicate id {row.id} "
                          f"(also at $.{key}[{by_id[row.id]}].id); expected ids 0..{len(rows) - 1}, each once")
        by_id.setdefault(row.id, index)
        name = getattr(row, name_key)
        if name in by_name:
            errors.append(f'{file}: at $.{key}[{index}].{name_key}: duplicate {name_key} "{name}" '
                          f"(also at $.{key}[{by_name[name]}].{name_key})")
        by_name.setdefault(name, index)
    missing = [str(i) for i in range(len(rows)) if i not in by_id]
    if missing:
        beyond = [str(i) for i in sorted(by_id) if i >= len(rows)]
        errors.append(f"{file}: at $.{key}: Expected ids exactly 0..{len(rows) - 1}, got no row with id "
                      f"{', '.join(missing)}" + (f" (and id {', '.join(beyond)} beyond the range)" if beyond else ""))
    return {name: rows[index].id for name, index in by_name.items()}


def _unknown(what: str, value: str, known) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f'unknown {what} "{value}"; expected one of: {", ".join(known)}{hint}'


# ------------------------------------------------------------------------------------------------- messages
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _explain(message: str, data: Any, struct_type) -> str:
    """Turn a msgspec ValidationError message into `at $.key.path: Expected ..., got ...`."""
    text, sep, where = message.rpartition(" - at `")
    if sep:
        path = where.rstrip("`")
    else:
        text, path = message, "$"
    lifted = re.match(r"^`([^`]+)`: (.*)$", text, re.S)  # a __post_init__ error names its own key
    if lifted:
        key, text = lifted.groups()
        return f"at {path}.{key}: {text}"
    if match := re.match(r"^Object contains unknown field `(.+)`$", text):
        key = match[1]
        known = [f.encode_name for f in _struct_fields(struct_type, path)]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        return f"at {path}.{key}: unknown key; expected one of: {', '.join(known)}{hint}"
    if match := re.match(r"^Object missing required field `(.+)`$", text):
        key = match[1]
        kind = _type_at(struct_type, f"{path}.{key}")
        return f"at {path}.{key}: missing required key; expected {_describe(kind)}"
    got = _value_at(data, path)
    if text.startswith("Invalid enum value") or text.startswith("Expected `str` matching regex"):
        return f"at {path}: Expected {_describe(_type_at(struct_type, path))}, got {_show(got)}"
    text = text.replace("`object`", "a table").replace("`array`", "an array").replace("`", "")
    if ", got " in text:
        text += f" ({_show(got)})" if isinstance(got, (str, bool, int, float)) else ""
    elif got is not _MISSING:
        text += f", got {_show(got)}"
    return f"at {path}: {text}"


_MISSING = object()


def _segments(path: str):
    return [key if key else int(index) for key, index in _SEGMENT.findall(path)]


def _value_at(data: Any, path: str):
    for segment in _segments(path):
        try:
            data = data[segment]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _unwrap(info):
    while True:
        if isinstance(info, msgspec.inspect.Metadata):
            info = info.type
        elif isinstance(info, msgspec.inspect.UnionType):
            others = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
            if len(others) != 1:
                return info
            info = others[0]
        else:
            return info


def _type_at(struct_type, path: str):
    info = msgspec.inspect.type_info(struct_type)
    for segment in _segments(path):
        info = _unwrap(info)
        if isinstance(segment, int) and hasattr(info, "item_type"):
            info = info.item_type
        elif isinstance(info, msgspec.inspect.StructType):
            matches = [f.type for f in info.fields if f.encode_name == segment]
            if not matches:
                return None
            info = matches[0]
        else:
            return None
    return _unwrap(info)


def _struct_fields(struct_type, path: str):
    info = _type_at(struct_type, path)
    return info.fields if isinstance(info, msgspec.inspect.StructType) else ()


def _bounds(info) -> str:
    parts = [f"{op} {getattr(info, name)}" for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
             if getattr(info, name, None) is not None]
    return " " + " and ".join(parts) if parts else ""


def _describe(info) -> str:
    inspect = msgspec.inspect
    if isinstance(info, inspect.IntType):
        return "int" + _bounds(info)
    if isinstance(info, inspect.FloatType):
        return "float" + _bounds(info)
    if isinstance(info, inspect.BoolType):
        return "true or false"
    if isinstance(info, inspect.StrType):
        return _PATTERN_TEXT.get(info.pattern, f"string matching {info.pattern}") if info.pattern else "string"
    if isinstance(info, inspect.LiteralType):
        return "one of " + ", ".join(_show(v) for v in info.values)
    if isinstance(info, inspect.StructType):
        return "a table with keys " + ", ".join(f.encode_name for f in info.fields)
    if hasattr(info, "item_type"):
        return f"an array of {_describe(_unwrap(info.item_type))}"
    return "a value"


def _show(value: Any) -> str:
    """A value as TOML spells it."""
    if value is _MISSING:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)
