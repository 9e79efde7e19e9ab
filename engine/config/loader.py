"""Loading a config directory: each file decoded on its own, then the files checked against each other.

Every problem is reported as `FILE: at $.key.path: what was expected, got what`. `load` returns every problem
found (one bad file does not hide another) and never a partial config.
"""
import hashlib
import re
import tomllib
from pathlib import Path

import msgspec

from engine.config.errors import ConfigError, close_match, explain
from engine.config.schema import PATTERN_TEXT, AccountsFile, Config, EngineConfig, InstrumentsFile, Strategy

ENGINE_FILE = "engine.toml"
INSTRUMENTS_FILE = "instruments.toml"
ACCOUNTS_FILE = "accounts.toml"
STRATEGIES_DIR = "strategies"
STRATEGY_SUFFIX = ".toml"

_CONTENTS = {EngineConfig: "the engine settings", InstrumentsFile: "the [[instruments]] tables",
             AccountsFile: "the [[accounts]] tables", Strategy: "a strategy"}


def load_config(path: str | Path) -> Config:
    """Load and validate a config directory (or engine .toml file); raise ConfigError listing every problem."""
    config, errors = load(path)
    if errors:
        raise ConfigError(errors)
    return config


def validate(path: str | Path) -> list[str]:
    """The problems in a config, one line each; empty when it loads."""
    return load(path)[1]


def strategy_hash(strategy: Strategy) -> str:
    """sha256 of the strategy's canonical JSON (sorted keys, defaults included): comments, key order and
    formatting do not change it, any value does."""
    return hashlib.sha256(msgspec.json.encode(strategy, order="sorted")).hexdigest()


def load(path: str | Path) -> tuple[Config | None, list[str]]:
    """(config, []) when the config at `path` is valid, else (None, every problem found).

    `path` is a config directory, or an engine .toml file whose directory holds the other parts (so several
    engine variants can share them)."""
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
    decoded: list[tuple[Strategy, Path]] = []
    first_file: dict[str, Path] = {}
    for file in _strategy_files(root / STRATEGIES_DIR, errors):  # file by file: problems come out in file order
        strategy = _decode(file, Strategy, errors)
        if strategy is None:
            continue
        decoded.append((strategy, file))
        if strategy.name in first_file:
            errors.append(f'{file}: at $.name: strategy "{strategy.name}" is already defined in '
                          f'{first_file[strategy.name]}')
        first_file.setdefault(strategy.name, file)
        _check_strategy(file, strategy, symbols, accounts_by_name, engine, errors)
    if engine is not None and len(decoded) > engine.max_strategies:
        errors.append(f"{engine_file}: at $.max_strategies: {len(decoded)} strategy files, room for "
                      f"{engine.max_strategies}; raise max_strategies")
    subscriptions = sum(len(strategy.signals) for strategy, _ in decoded)
    if engine is not None and subscriptions > engine.max_subscriptions:
        errors.append(f"{engine_file}: at $.max_subscriptions: the strategy files subscribe {subscriptions} "
                      f"(signal id, strategy) pairs, room for {engine.max_subscriptions}; raise max_subscriptions")
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


def load_strategy(config: Config, file_name: str) -> tuple[Strategy, Path, str]:
    """(strategy, its path, its hash) from a file of the config's strategies/ (a name, not a path: deploys come only
    from there), checked against the running config's instruments, accounts and capacities; ConfigError with
    every problem otherwise."""
    directory = Path(config.root) / STRATEGIES_DIR
    file = directory / file_name
    if Path(file_name).name != file_name or file.suffix != STRATEGY_SUFFIX:
        raise ConfigError([f"{file_name}: not a strategy file name; expected NAME{STRATEGY_SUFFIX} in {directory}"])
    errors: list[str] = []
    strategy = _decode(file, Strategy, errors)
    if strategy is not None:
        _check_strategy(file, strategy, {i.symbol for i in config.instruments}, {a.name for a in config.accounts},
                        config.engine, errors)
    if errors:
        raise ConfigError(errors)
    return strategy, file, strategy_hash(strategy)


def _check_strategy(file, strategy, symbols, accounts_by_name, engine, errors):
    """What a strategy file must agree with beyond its own schema: names it refers to, the engine's capacities."""
    if accounts_by_name is not None and strategy.account not in accounts_by_name:
        errors.append(f"{file}: at $.account: {_unknown('account', strategy.account, accounts_by_name)}")
    if symbols is not None:
        for index, symbol in enumerate(strategy.instruments):
            if symbol not in symbols:
                errors.append(f"{file}: at $.instruments[{index}]: "
                              f"{_unknown('instrument symbol', symbol, symbols)}")
    if engine is not None:
        for index, signal_id in enumerate(strategy.signals):
            if signal_id > engine.max_signal_id:
                errors.append(f"{file}: at $.signals[{index}]: Expected a signal id <= {engine.max_signal_id} "
                              f"(engine.toml max_signal_id), got {signal_id}")


def _strategy_files(directory: Path, errors: list[str]) -> list[Path]:
    """The strategy files, one strategy each. Anything else in the directory is an error: a strategy file
    misnamed (`x.tml`) must not vanish from the config without a word."""
    files = []
    for entry in sorted(directory.iterdir()) if directory.is_dir() else ():
        if entry.is_file() and entry.suffix == STRATEGY_SUFFIX:
            files.append(entry)
        else:
            kind = "a directory" if entry.is_dir() else f"not a {STRATEGY_SUFFIX} file"
            errors.append(f"{entry}: {kind}; {directory} holds one strategy per {STRATEGY_SUFFIX} file and nothing "
                          f"else")
    if not files and not errors:
        errors.append(f"{directory}: no strategy files (*{STRATEGY_SUFFIX}); expected at least one")
    return files


def _decode(file: Path, struct_type, errors: list[str]):
    """Decode one TOML file into struct_type; on failure append one explained error and return None."""
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        errors.append(f"{file}: file not found; expected {_CONTENTS[struct_type]} here")
        return None
    except OSError as exc:
        errors.append(f"{file}: cannot read: {exc.strerror or exc}")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        errors.append(f"{file}: not a text file: byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8 "
                      f"(TOML files are UTF-8 text)")
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
        errors.append(f"{file}: {explain(str(exc), data, struct_type, PATTERN_TEXT)}")
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
    return f'unknown {what} "{value}"; expected one of: {", ".join(known)}{close_match(value, known)}'
