"""engine/config/: TOML decoded into frozen Structs; every problem names the file, the key path and what was
expected. Broken configs are built in tmp_path from config/test/minimal, never kept in config/."""
import io
import os
import shutil
from pathlib import Path

import msgspec
import pytest

from adapters.base import parse_address
from engine.cli.validate import validate as validate_command
from engine.config import Config, ConfigError, load_config, strategy_hash, validate

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo"
MINIMAL = ROOT / "config" / "test" / "minimal"
BASIC = ROOT / "config" / "test" / "basic"


@pytest.fixture
def config_dir(tmp_path):
    """A writable copy of config/test/minimal."""
    return Path(shutil.copytree(MINIMAL, tmp_path / "cfg"))


def edit(file: Path, old: str, new: str) -> Path:
    text = file.read_text()
    assert old in text, f"{old!r} not in {file}"
    file.write_text(text.replace(old, new, 1))
    return file


def load_error(path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# ------------------------------------------------------------------------------------------------- loading
def test_load_config_when_demo_directory_then_every_part_is_loaded():
    config = load_config(DEMO)

    assert isinstance(config, Config)
    assert config.engine.name == "demo" and config.engine.driver == "event"
    listen = config.engine.listen
    assert ((listen.udp.host, listen.udp.port), (listen.tcp.host, listen.tcp.port)) == \
        (("127.0.0.1", 47100), ("127.0.0.1", 47101))
    assert config.engine.oms.kind == "sim"
    assert 4 <= len(config.instruments) <= 6 and len(config.accounts) == 2
    assert 4 <= len(config.strategies) <= 5
    assert [s.name for s in config.strategies] == sorted(s.name for s in config.strategies)
    es_traders = [s.name for s in config.strategies if "ESZ5" in s.instruments]
    assert len(es_traders) >= 2, "the demo shows two strategies on one instrument"
    assert {i.tick_size for i in config.instruments} == {0.25, 0.01}
    assert any(i.lot_size == 100 for i in config.instruments)


def test_load_config_when_engine_file_path_then_other_parts_come_from_its_directory(tmp_path):
    variant = Path(shutil.copytree(DEMO, tmp_path / "demo")) / "spin.toml"
    variant.write_text((DEMO / "engine.toml").read_text().replace('driver = "event"', 'driver = "spin"'))

    from_file = load_config(DEMO / "engine.toml")
    spin = load_config(variant)

    assert from_file.engine == load_config(DEMO).engine
    assert spin.engine.driver == "spin" and spin.engine_file == str(variant)
    assert spin.strategies == from_file.strategies


def test_load_config_when_keys_omitted_then_loopback_and_safe_defaults_apply():
    config = load_config(MINIMAL)
    engine, strategy = config.engine, config.strategies[0]

    assert ((engine.listen.udp.host, engine.listen.udp.port), (engine.listen.tcp.host, engine.listen.tcp.port)) == \
        (("127.0.0.1", 47100), ("127.0.0.1", 47101))
    assert engine.listen.udp.rcvbuf_bytes == 4 << 20
    assert (engine.oms.tcp.host, engine.oms.tcp.port) == ("127.0.0.1", 47200)
    assert (engine.oms.kind, engine.oms.on_disconnect) == ("sim", "halt")
    assert (engine.rings.signals, engine.rings.orders, engine.rings.rejects, engine.rings.reports) == (4096,) * 4
    assert engine.metrics is None
    assert (engine.journal.enabled, engine.journal.dir, engine.journal.fsync, engine.journal.on_error) == \
        (True, "var/journal", "interval", "halt")
    assert config.instruments[0].lot_size == 1 and config.instruments[0].tradable is True
    assert config.accounts[0].kill_switch is False
    assert strategy.enabled is False, "a strategy starts READY unless it says enabled = true"
    assert (strategy.order_type, strategy.order_logic) == ("limit", None)
    assert (strategy.breakers.action, strategy.breakers.cooldown_ms) == ("halt", 0)


def test_load_config_when_listen_table_names_one_transport_then_only_that_one_is_on(config_dir):
    (config_dir / "engine.toml").write_text('name = "x"\n[listen]\ntcp = { host = "127.0.0.1", port = 5000 }\n')

    listen = load_config(config_dir).engine.listen

    assert listen.udp is None and (listen.tcp.host, listen.tcp.port) == ("127.0.0.1", 5000)


def test_load_config_when_listener_settings_given_then_they_reach_the_adapter_configs(config_dir):
    (config_dir / "engine.toml").write_text(
        'name = "x"\n[listen]\nudp = { host = "0.0.0.0", port = 9, rcvbuf_bytes = 1024, max_datagram_bytes = 1472 }\n'
        'tcp = { port = 10, backlog = 7, rcvbuf_bytes = 2048 }\n[oms]\nkind = "tcp"\n'
        'tcp = { host = "oms.local", port = 11, sndbuf_bytes = 4096 }\n')

    engine = load_config(config_dir).engine

    assert (engine.listen.udp.rcvbuf_bytes, engine.listen.udp.max_datagram_bytes) == (1024, 1472)
    assert (engine.listen.tcp.host, engine.listen.tcp.backlog, engine.listen.tcp.rcvbuf_bytes) == ("127.0.0.1", 7, 2048)
    assert (engine.oms.tcp.host, engine.oms.tcp.port, engine.oms.tcp.sndbuf_bytes) == ("oms.local", 11, 4096)


def test_load_config_when_loaded_then_every_struct_is_frozen():
    config = load_config(MINIMAL)

    for obj, key in ((config, "engine"), (config.engine, "name"), (config.engine.rings, "signals"),
                     (config.strategies[0], "name"), (config.strategies[0].limits, "burst"),
                     (config.instruments[0], "tick_size"), (config.accounts[0], "kill_switch")):
        with pytest.raises(AttributeError):
            setattr(obj, key, None)
    assert isinstance(config.strategies, tuple) and isinstance(config.strategies[0].signals, tuple)


def test_load_config_when_tables_are_listed_out_of_id_order_then_they_are_stored_by_id():
    config = load_config(BASIC)

    assert [i.id for i in config.instruments] == [0, 1]
    assert [i.symbol for i in config.instruments] == ["ESZ5", "AAPL"]


def test_load_config_when_loaded_then_each_strategy_records_its_file_and_hash():
    config = load_config(BASIC)

    assert [Path(f).name for f in config.strategy_files] == ["alpha.toml", "beta.toml", "gamma.toml"]
    assert config.strategy_hashes == tuple(strategy_hash(s) for s in config.strategies)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in config.strategy_hashes)
    assert len(set(config.strategy_hashes)) == 3


def test_load_config_when_a_float_key_is_written_as_an_integer_then_it_is_accepted(config_dir):
    edit(config_dir / "strategies" / "solo.toml", "max_order_notional = 1_000_000.0", "max_order_notional = 1000000")

    assert load_config(config_dir).strategies[0].limits.max_order_notional == 1_000_000.0


def test_strategy_hash_when_only_comments_order_and_formatting_change_then_it_is_the_same(config_dir):
    file = config_dir / "strategies" / "solo.toml"
    before = load_config(config_dir).strategy_hashes[0]
    text = file.read_text()
    file.write_text("# a comment\n" + text.replace('version = "1.0.0"\n', "").replace(
        "[sizing]", 'version   =   "1.0.0"  # moved\n\n[sizing]'))

    assert load_config(config_dir).strategy_hashes[0] == before


def test_strategy_hash_when_a_value_changes_then_it_changes(config_dir):
    before = load_config(config_dir).strategy_hashes[0]
    edit(config_dir / "strategies" / "solo.toml", "burst = 5.0", "burst = 6.0")

    assert load_config(config_dir).strategy_hashes[0] != before


# ------------------------------------------------------------------------------------------------- key errors
def test_load_config_when_unknown_top_level_key_then_error_names_file_and_key(config_dir):
    edit(config_dir / "engine.toml", 'name = "minimal"', 'name = "minimal"\ncolour = "red"')

    error = load_error(config_dir)

    assert str(error).startswith(f"{config_dir / 'engine.toml'}: at $.colour: unknown key; expected one of: name,")


def test_load_config_when_unknown_nested_key_then_error_names_path_and_suggests_the_close_key(config_dir):
    edit(config_dir / "strategies" / "solo.toml", "burst = 5.0", "burts = 5.0")

    message = str(load_error(config_dir))

    assert message.startswith(f"{config_dir / 'strategies' / 'solo.toml'}: at $.limits.burts: unknown key")
    assert 'did you mean "burst"?' in message


def test_load_config_when_unknown_key_in_an_array_table_then_error_names_the_row(config_dir):
    edit(config_dir / "instruments.toml", 'symbol = "ESZ5"', 'symbol = "ESZ5"\nsector = "index"')

    assert str(load_error(config_dir)).startswith(
        f"{config_dir / 'instruments.toml'}: at $.instruments[0].sector: unknown key")


def test_load_config_when_required_key_missing_then_error_names_it_and_its_type(config_dir):
    edit(config_dir / "strategies" / "solo.toml", "max_order_qty = 2\n", "")

    assert str(load_error(config_dir)) == (f"{config_dir / 'strategies' / 'solo.toml'}: at $.limits.max_order_qty: "
                                           f"missing required key; expected int >= 1 and <= 1000000000000000")


def test_load_config_when_value_has_wrong_type_then_error_names_expected_and_given_type(config_dir):
    edit(config_dir / "strategies" / "solo.toml", "max_order_qty = 2", 'max_order_qty = "2"')

    assert str(load_error(config_dir)) == (f"{config_dir / 'strategies' / 'solo.toml'}: at $.limits.max_order_qty: "
                                           'Expected int, got str ("2")')


def test_load_config_when_boolean_given_for_integer_then_it_is_rejected(config_dir):
    edit(config_dir / "strategies" / "solo.toml", "max_order_qty = 2", "max_order_qty = true")

    assert "at $.limits.max_order_qty: Expected int, got bool (true)" in str(load_error(config_dir))


def test_load_config_when_table_given_a_scalar_then_error_says_a_table_was_expected(config_dir):
    edit(config_dir / "engine.toml", 'name = "minimal"', 'name = "minimal"\nrings = 5')

    assert "engine.toml: at $.rings: Expected a table, got int (5)" in str(load_error(config_dir))


def test_load_config_when_value_out_of_range_then_error_names_file_key_bound_and_value(config_dir):
    edit(config_dir / "strategies" / "solo.toml", "max_order_qty = 2", "max_order_qty = -5")

    assert str(load_error(config_dir)) == (
        f"{config_dir / 'strategies' / 'solo.toml'}: at $.limits.max_order_qty: Expected int >= 1, got -5")


@pytest.mark.parametrize("file, old, new, expected", [
    ("strategies/solo.toml", "max_reject_ratio = 0.5", "max_reject_ratio = 0.0",
     "at $.breakers.max_reject_ratio: Expected float > 0.0, got 0.0"),
    ("strategies/solo.toml", "max_reject_ratio = 0.5", "max_reject_ratio = 1.5",
     "at $.breakers.max_reject_ratio: Expected float <= 1.0, got 1.5"),
    ("strategies/solo.toml", "signals = [0]", "signals = [0, -1]", "at $.signals[1]: Expected int >= 0, got -1"),
    ("strategies/solo.toml", "signals = [0]", "signals = []", "at $.signals: Expected an array of length >= 1"),
    ("strategies/solo.toml", "max_drawdown = 20_000.0", "max_drawdown = nan",
     "at $.breakers.max_drawdown: Expected float > 0.0, got nan"),
    ("strategies/solo.toml", "\nloss_limit = 50_000.0", "\nloss_limit = inf",
     "at $.breakers.loss_limit: Expected float <= 1000000000000000.0, got inf"),
    ("strategies/solo.toml", "ratio_window_ms = 1_000", "ratio_window_ms = 0",
     "at $.breakers.ratio_window_ms: Expected int >= 1, got 0"),
    ("strategies/solo.toml", "max_position = 10", "max_position = 0", "at $.sizing.max_position: Expected int >= 1"),
    ("instruments.toml", "tick_size = 0.25", "tick_size = 0", "at $.instruments[0].tick_size: Expected float > 0.0"),
    ("instruments.toml", "price_band_pct = 5.0", "price_band_pct = -1.0",
     "at $.instruments[0].price_band_pct: Expected float > 0.0, got -1.0"),
    ("instruments.toml", 'symbol = "ESZ5"', 'symbol = "ESZ5"\nlot_size = 0',
     "at $.instruments[0].lot_size: Expected int >= 1, got 0"),
    ("accounts.toml", "daily_loss_limit = 100_000.0", "daily_loss_limit = 0.0",
     "at $.accounts[0].daily_loss_limit: Expected float > 0.0, got 0.0"),
    ("engine.toml", 'name = "minimal"', 'name = "minimal"\nsources = 0', "at $.sources: Expected int >= 1, got 0"),
    ("engine.toml", 'name = "minimal"', 'name = "minimal"\nmax_open_orders = 16777217',
     "at $.max_open_orders: Expected int <= 16777216, got 16777217"),
    ("engine.toml", 'name = "minimal"', 'name = "minimal"\nrx_bytes = 100', "at $.rx_bytes: Expected int >= 1032"),
])
def test_load_config_when_value_out_of_range_then_error_names_the_bound(config_dir, file, old, new, expected):
    edit(config_dir / file, old, new)

    assert str(load_error(config_dir)).startswith(f"{config_dir / file}: {expected}")


@pytest.mark.parametrize("file, old, new, expected", [
    ("engine.toml", 'name = "minimal"', 'name = "minimal"\ndriver = "poll"',
     'at $.driver: Expected one of "event", "spin", got "poll"'),
    ("strategies/solo.toml", "[breakers]", '[breakers]\naction = "explode"',
     'at $.breakers.action: Expected one of "halt", "reduce", got "explode"'),
    ("strategies/solo.toml", 'instruments = ["ESZ5"]', 'instruments = ["ESZ5"]\norder_type = "stop"',
     'at $.order_type: Expected one of "ioc", "limit", "market", got "stop"'),
])
def test_load_config_when_value_not_among_choices_then_error_lists_the_choices(config_dir, file, old, new, expected):
    edit(config_dir / file, old, new)

    assert str(load_error(config_dir)) == f"{config_dir / file}: {expected}"


# ------------------------------------------------------------------------------------------------- format errors
@pytest.mark.parametrize("key, size", [("signals", 1000), ("orders", 3), ("rejects", 6), ("reports", 4097)])
def test_load_config_when_ring_size_is_not_a_power_of_two_then_error_names_the_ring(config_dir, key, size):
    (config_dir / "engine.toml").write_text(f'name = "x"\n[rings]\n{key} = {size}\n')

    assert str(load_error(config_dir)) == (
        f"{config_dir / 'engine.toml'}: at $.rings.{key}: Expected a power of two, got {size}")


def test_load_config_when_ring_sizes_are_powers_of_two_then_they_load(config_dir):
    (config_dir / "engine.toml").write_text('name = "x"\n[rings]\nsignals = 2\norders = 1024\nreports = 65536\n')

    rings = load_config(config_dir).engine.rings

    assert (rings.signals, rings.orders, rings.rejects, rings.reports) == (2, 1024, 4096, 65536)


def test_load_config_when_backoff_minimum_exceeds_maximum_then_error_names_the_maximum(config_dir):
    (config_dir / "engine.toml").write_text(
        'name = "x"\n[oms]\nreconnect_backoff_min_ms = 500\nreconnect_backoff_max_ms = 100\n')

    assert str(load_error(config_dir)) == (f"{config_dir / 'engine.toml'}: at $.oms.reconnect_backoff_max_ms: "
                                           f"Expected int >= reconnect_backoff_min_ms (500), got 100")


@pytest.mark.parametrize("table, key, expected", [
    ('{ host = "a b", port = 1 }', "host", 'Expected a host name or IP address like "127.0.0.1", got "a b"'),
    ('{ host = "", port = 1 }', "host", "Expected str of length >= 1"),
    ('{ port = 65536 }', "port", "Expected int <= 65535"),
    ('{ port = -1 }', "port", "Expected int >= 0"),
    ('{ port = 1, rcvbuf_bytes = -5 }', "rcvbuf_bytes", "Expected int >= 0"),
    ('{ port = 1, max_datagram_bytes = 4 }', "max_datagram_bytes", "Expected int >= 8"),
    ('{ port = 1, allow = ["localhost"] }', "allow[0]",
     'Expected an IPv4 address like "10.0.0.7" (a peer as the socket sees it: no host names), got "localhost"'),
])
def test_load_config_when_a_listener_setting_is_out_of_range_then_error_names_it(config_dir, table, key, expected):
    (config_dir / "engine.toml").write_text(f'name = "x"\n[listen]\nudp = {table}\n')

    assert str(load_error(config_dir)).startswith(f'{config_dir / "engine.toml"}: at $.listen.udp.{key}: {expected}')


def test_load_config_when_a_listener_is_given_as_an_address_string_then_error_asks_for_its_table(config_dir):
    (config_dir / "engine.toml").write_text('name = "x"\n[listen]\nudp = "127.0.0.1:5000"\n')

    assert str(load_error(config_dir)) == (
        f'{config_dir / "engine.toml"}: at $.listen.udp: Expected a table with keys host, port, rcvbuf_bytes, '
        f'max_datagram_bytes, allow, got "127.0.0.1:5000"')


@pytest.mark.parametrize("text", ["localhost", "127.0.0.1:", ":80", "127.0.0.1:65536", "host:port", "a b:1"])
def test_parse_address_when_not_host_port_then_value_error_says_what_it_expected(text):
    with pytest.raises(ValueError, match='expected "host:port" with port 0..65535'):
        parse_address(text)


def test_load_config_when_listen_table_is_empty_then_error_asks_for_a_transport(config_dir):
    (config_dir / "engine.toml").write_text('name = "x"\n[listen]\n')

    assert str(load_error(config_dir)) == (
        f"{config_dir / 'engine.toml'}: at $.listen: Expected at least one of udp, tcp, aeron, got none")


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:47100", ("127.0.0.1", 47100)), ("[::1]:0", ("::1", 0)),
    ("gateway.local:65535", ("gateway.local", 65535)),
])
def test_parse_address_when_host_port_then_split(text, expected):
    assert parse_address(text) == expected


def test_load_config_when_order_logic_is_given_then_it_is_refused_as_not_supported_yet(config_dir):
    edit(config_dir / "strategies" / "solo.toml", 'instruments = ["ESZ5"]',
         'instruments = ["ESZ5"]\norder_logic = "pkg.mod:decide"')

    assert str(load_error(config_dir)) == (
        f"{config_dir / 'strategies' / 'solo.toml'}: at $.order_logic: not supported yet: custom order logic is not "
        f"loaded, so the strategy would trade without it; remove it")


def test_load_config_when_metrics_table_is_given_then_it_is_the_exporters_config_with_its_defaults(config_dir):
    (config_dir / "engine.toml").write_text('name = "x"\n[metrics]\nport = 9464\n')

    metrics = load_config(config_dir).engine.metrics

    assert (metrics.enabled, metrics.host, metrics.port, metrics.interval_ms) == (True, "127.0.0.1", 9464, 1000)


@pytest.mark.parametrize("text, where", [
    ('[metrics]\npath = "var/x"', "at $.metrics.path: unknown key; expected one of: enabled, host, port"),
    ("[metrics]\ninterval_ms = 1", "at $.metrics.interval_ms: Expected int >= 10, got 1"),
    ('[dashboard]\nport = 70000', "at $.dashboard.port: Expected int <= 65535, got 70000"),
    ('[pnl]\ntime_zone = "Mars/Olympus"', 'at $.pnl.time_zone: Expected an IANA time zone name'),
    ('[pnl]\nday_start = "25:00"', "at $.pnl.day_start: "),
    ('[alerts.webhook]\nurl = "ftp://x"', "at $.alerts.webhook.url: "),
    ('[[alerts.rules]]\nname = "r"\nmetric = "x"\nthreshold = 1\nop = "~"', "at $.alerts.rules[0].op: "),
    ('[[alerts.rules]]\nname = "r"\nmetric = "x"\nthreshold = 1\n[[alerts.rules]]\nname = "r"\nmetric = "y"\n'
     'threshold = 2', "at $.alerts.rules[1].name: Expected each rule name once"),
])
def test_load_config_when_a_monitoring_table_is_wrong_then_the_error_names_its_key(config_dir, text, where):
    (config_dir / "engine.toml").write_text(f'name = "x"\n{text}\n')

    assert str(load_error(config_dir)).startswith(f"{config_dir / 'engine.toml'}: {where}")


@pytest.mark.parametrize("name", ["momo.tml", "momo.toml.bak", "README", "drafts"])
def test_load_config_when_strategies_holds_anything_but_toml_files_then_error_names_the_entry(config_dir, name):
    entry = config_dir / "strategies" / name
    if name == "drafts":
        entry.mkdir()
    else:
        entry.write_text((config_dir / "strategies" / "solo.toml").read_text())

    errors = load_error(config_dir).errors

    assert errors == [f"{entry}: {'a directory' if name == 'drafts' else 'not a .toml file'}; "
                      f"{config_dir / 'strategies'} holds one strategy per .toml file and nothing else"]


def test_load_config_when_a_file_is_binary_then_error_says_it_is_not_text(config_dir):
    (config_dir / "strategies" / "solo.toml").write_bytes(b'name = "solo"\n\xff\xfe\x00binary')

    assert load_error(config_dir).errors == [
        f"{config_dir / 'strategies' / 'solo.toml'}: not a text file: byte 0xff at offset 14 is not UTF-8 "
        f"(TOML files are UTF-8 text)"]


def test_load_config_when_a_file_cannot_be_read_then_error_names_it_and_why(config_dir):
    """Unreadable (here a directory where a file belongs; a file without read permission reads the same way),
    the problem is one line naming the file, never an OSError traceback."""
    (config_dir / "accounts.toml").unlink()
    (config_dir / "accounts.toml").mkdir()

    assert load_error(config_dir).errors == [f"{config_dir / 'accounts.toml'}: cannot read: Is a directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_load_config_when_a_file_has_no_read_permission_then_error_names_it(config_dir):
    solo = config_dir / "strategies" / "solo.toml"
    solo.chmod(0)

    assert load_error(config_dir).errors == [f"{solo}: cannot read: Permission denied"]


@pytest.mark.parametrize("version", ["1.2", "v1.2.0", "1.2.0.4", ""])
def test_load_config_when_version_is_not_major_minor_patch_then_it_is_rejected(config_dir, version):
    edit(config_dir / "strategies" / "solo.toml", 'version = "1.0.0"', f'version = "{version}"')

    assert str(load_error(config_dir)) == (f"{config_dir / 'strategies' / 'solo.toml'}: at $.version: "
                                           f'Expected a version "major.minor.patch" like "1.2.0", got "{version}"')


def test_load_config_when_signal_is_listed_twice_then_error_names_the_repeat(config_dir):
    edit(config_dir / "strategies" / "solo.toml", "signals = [0]", "signals = [0, 3, 0]")

    assert str(load_error(config_dir)) == (
        f"{config_dir / 'strategies' / 'solo.toml'}: at $.signals[2]: Expected each entry once, got 0 again")


def test_load_config_when_reference_price_is_below_one_tick_then_it_is_rejected(config_dir):
    edit(config_dir / "instruments.toml", "reference_price = 6000.0", "reference_price = 0.1")

    assert str(load_error(config_dir)) == (f"{config_dir / 'instruments.toml'}: at $.instruments[0].reference_price: "
                                           f"Expected between one tick (0.25) and 2**53 ticks, got 0.1")


def test_load_config_when_toml_syntax_is_broken_then_error_names_file_and_line(config_dir):
    edit(config_dir / "strategies" / "solo.toml", "[limits]", "[limits")

    message = str(load_error(config_dir))

    file = config_dir / "strategies" / "solo.toml"
    line = file.read_text().splitlines().index("[limits") + 1
    assert message.startswith(f"{file}:{line}: invalid TOML at line {line}, column ")


def test_load_config_when_a_toml_key_is_repeated_then_error_names_file_and_line(config_dir):
    file = (config_dir / "engine.toml")
    file.write_text('name = "minimal"\nsources = 2\nname = "again"\n')

    assert str(load_error(config_dir)) == (
        f"{file}:3: invalid TOML at line 3, column 15: Cannot overwrite a value")


# ------------------------------------------------------------------------------------------------- cross references
def test_load_config_when_strategy_name_is_defined_twice_then_error_names_both_files(config_dir):
    shutil.copy(config_dir / "strategies" / "solo.toml", config_dir / "strategies" / "solo_copy.toml")

    assert str(load_error(config_dir)) == (
        f"{config_dir / 'strategies' / 'solo_copy.toml'}: at $.name: strategy \"solo\" is already defined in "
        f"{config_dir / 'strategies' / 'solo.toml'}")


def test_load_config_when_account_is_unknown_then_error_names_it_and_the_known_ones(config_dir):
    edit(config_dir / "strategies" / "solo.toml", 'account = "main"', 'account = "mian"')

    assert str(load_error(config_dir)) == (f'{config_dir / "strategies" / "solo.toml"}: at $.account: unknown '
                                           f'account "mian"; expected one of: main; did you mean "main"?')


def test_load_config_when_instrument_symbol_is_unknown_then_error_names_its_position(config_dir):
    edit(config_dir / "strategies" / "solo.toml", 'instruments = ["ESZ5"]', 'instruments = ["ESZ5", "NQZ5"]')

    assert str(load_error(config_dir)) == (f'{config_dir / "strategies" / "solo.toml"}: at $.instruments[1]: '
                                           f'unknown instrument symbol "NQZ5"; expected one of: ESZ5')


def test_load_config_when_symbols_repeat_then_error_names_both_rows(tmp_path):
    cfg = Path(shutil.copytree(BASIC, tmp_path / "cfg"))
    edit(cfg / "instruments.toml", 'symbol = "AAPL"', 'symbol = "ESZ5"')

    assert load_error(cfg).errors[0] == (f'{cfg / "instruments.toml"}: at $.instruments[1].symbol: '
                                         f'duplicate symbol "ESZ5" (also at $.instruments[0].symbol)')


def test_load_config_when_account_names_repeat_then_error_names_both_rows(tmp_path):
    cfg = Path(shutil.copytree(BASIC, tmp_path / "cfg"))
    edit(cfg / "accounts.toml", 'name = "equities"', 'name = "futures"')

    assert f'{cfg / "accounts.toml"}: at $.accounts[1].name: duplicate name "futures" (also at $.accounts[0].name)' \
        in load_error(cfg).errors


def test_load_config_when_an_id_is_missing_then_error_names_the_missing_id(tmp_path):
    cfg = Path(shutil.copytree(BASIC, tmp_path / "cfg"))
    edit(cfg / "instruments.toml", "id = 1", "id = 2")

    assert load_error(cfg).errors == [f"{cfg / 'instruments.toml'}: at $.instruments: Expected ids exactly 0..1, "
                                      f"got no row with id 1 (and id 2 beyond the range)"]


def test_load_config_when_an_id_repeats_then_error_names_the_duplicate_and_the_missing_id(tmp_path):
    cfg = Path(shutil.copytree(BASIC, tmp_path / "cfg"))
    edit(cfg / "accounts.toml", "id = 1", "id = 0")

    assert load_error(cfg).errors == [
        f"{cfg / 'accounts.toml'}: at $.accounts[1].id: duplicate id 0 (also at $.accounts[0].id); "
        f"expected ids 0..1, each once",
        f"{cfg / 'accounts.toml'}: at $.accounts: Expected ids exactly 0..1, got no row with id 1",
    ]


# ------------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("missing", ["engine.toml", "instruments.toml", "accounts.toml"])
def test_load_config_when_a_part_file_is_missing_then_error_names_it(config_dir, missing):
    (config_dir / missing).unlink()

    assert str(load_error(config_dir)).startswith(f"{config_dir / missing}: file not found")


def test_load_config_when_no_strategy_files_then_error_names_the_directory(config_dir):
    shutil.rmtree(config_dir / "strategies")

    assert str(load_error(config_dir)) == (
        f"{config_dir / 'strategies'}: no strategy files (*.toml); expected at least one")


def test_load_config_when_path_does_not_exist_then_error_names_it(tmp_path):
    assert str(load_error(tmp_path / "nope")) == f"{tmp_path / 'nope'}: no such config directory or file"


def test_load_config_when_several_files_are_broken_then_it_raises_with_every_problem(config_dir):
    edit(config_dir / "engine.toml", 'name = "minimal"', 'name = "minimal"\ndriver = "poll"')
    edit(config_dir / "strategies" / "solo.toml", "max_order_qty = 2", "max_order_qty = 0")
    shutil.copy(MINIMAL / "strategies" / "solo.toml", config_dir / "strategies" / "other.toml")
    edit(config_dir / "strategies" / "other.toml", 'name = "solo"', 'name = "other"')
    edit(config_dir / "strategies" / "other.toml", 'account = "main"', 'account = "nobody"')

    error = load_error(config_dir)

    assert [line.split(": at ")[0] for line in error.errors] == [
        str(config_dir / "engine.toml"), str(config_dir / "strategies" / "other.toml"),
        str(config_dir / "strategies" / "solo.toml")]
    assert str(error) == "\n".join(error.errors)


# ------------------------------------------------------------------------------------------------- validate
def test_validate_when_config_is_valid_then_no_problems():
    assert validate(DEMO) == [] and validate(MINIMAL) == [] and validate(BASIC) == []


def test_validate_when_config_is_broken_then_problems_are_returned_not_raised(config_dir):
    edit(config_dir / "strategies" / "solo.toml", "max_order_qty = 2", "max_order_qty = -5")

    assert validate(config_dir) == [
        f"{config_dir / 'strategies' / 'solo.toml'}: at $.limits.max_order_qty: Expected int >= 1, got -5"]


def test_validate_command_when_config_is_valid_then_prints_summary_and_returns_zero():
    out = io.StringIO()

    code = validate_command(DEMO, out=out)

    text = out.getvalue()
    assert code == 0
    assert text.startswith(f"{DEMO}: OK  engine 'demo' (event driver;")
    for strategy in load_config(DEMO).strategies:
        assert strategy.name in text and strategy.version in text


def test_validate_command_when_config_is_broken_then_prints_problems_and_returns_one(config_dir):
    edit(config_dir / "strategies" / "solo.toml", "burst = 5.0", "burts = 5.0")
    out = io.StringIO()

    code = validate_command(config_dir, out=out)

    assert code == 1
    assert out.getvalue().splitlines() == [
        f"{config_dir}: INVALID, 1 problem",
        f"  {config_dir / 'strategies' / 'solo.toml'}: at $.limits.burts: unknown key; expected one of: "
        f"max_order_qty, max_order_notional, max_open_orders, rate_per_second, burst, daily_loss_limit, sides, "
        f'duplicate_window_ms; did you mean "burst"?',
    ]


def test_config_when_decoded_from_json_then_the_same_validation_applies():
    strategy = load_config(MINIMAL).strategies[0]
    raw = msgspec.json.decode(msgspec.json.encode(strategy))
    raw["signals"] = [1, 1]

    with pytest.raises(msgspec.ValidationError, match=r"`signals\[1\]`: Expected each entry once"):
        msgspec.convert(raw, type(strategy))


def test_load_config_when_name_has_spaces_then_error_describes_a_valid_name(config_dir):
    edit(config_dir / "strategies" / "solo.toml", 'name = "solo"', 'name = "my strategy"')

    assert str(load_error(config_dir)) == (
        f"{config_dir / 'strategies' / 'solo.toml'}: at $.name: Expected a name of letters, digits, \"_\", \".\" or "
        f'"-" (not starting with a punctuation mark), got "my strategy"')


@pytest.mark.parametrize("journal, expected", [
    ('fsync = "sometimes"', 'at $.journal.fsync: Expected one of "batch", "interval", "never", got "sometimes"'),
    ("fsync_interval_ms = 0", "at $.journal.fsync_interval_ms: Expected int >= 1, got 0"),
    ('on_error = "ignore"', 'at $.journal.on_error: Expected one of "alarm", "halt", got "ignore"'),
    ("snapshot_interval_s = -1", "at $.journal.snapshot_interval_s: Expected float >= 0.0, got -1"),
    ('path = "var/x"', "at $.journal.path: unknown key; expected one of: dir, fsync, fsync_interval_ms"),
])
def test_load_config_when_a_journal_key_is_wrong_then_the_error_names_it(config_dir, journal, expected):
    (config_dir / "engine.toml").write_text(f'name = "x"\n[journal]\n{journal}\n')

    assert expected in str(load_error(config_dir))


# ------------------------------------------------------------------------------------------------- api
SECRET = "s3cret-token-0123456789"


def api_config(config_dir, table):
    (config_dir / "engine.toml").write_text(f'name = "x"\n[api]\n{table}\n')
    return config_dir


def test_load_config_when_no_api_table_then_the_api_is_off_on_loopback_without_tokens(config_dir):
    api = load_config(config_dir).engine.api
    assert (api.enabled, api.host, api.port, api.tokens) == (False, "127.0.0.1", 47300, ())


def test_load_config_when_api_tokens_are_given_then_each_has_a_name_role_and_one_secret(config_dir):
    api = load_config(api_config(config_dir, f'enabled = true\nhost = "0.0.0.0"\ntokens = [\n'
                                             f'  {{ name = "ops", role = "operator", token_env = "OPS" }},\n'
                                             f'  {{ name = "dash", role = "read", token = "{SECRET}" }}]')).engine.api
    assert [(t.name, t.role, t.token, t.token_env) for t in api.tokens] == [
        ("ops", "operator", None, "OPS"), ("dash", "read", SECRET, None)]


@pytest.mark.parametrize("table, expected", [
    ('enabled = true\nhost = "0.0.0.0"', "at $.api.tokens: Expected at least one token: without tokens anyone who "
                                         "reaches 0.0.0.0 could trade"),
    ('enabled = true\nhost = "10.1.2.3"', "at $.api.tokens: Expected at least one token"),
    ('tokens = [{ name = "ops", role = "operator" }]', "at $.api.tokens[0]: Expected exactly one of token, token_env"),
    (f'tokens = [{{ name = "ops", role = "operator", token = "{SECRET}", token_env = "X" }}]',
     "at $.api.tokens[0]: Expected exactly one of token, token_env"),
    ('tokens = [{ name = "ops", role = "admin", token_env = "X" }]',
     'at $.api.tokens[0].role: Expected one of "operator", "read", got "admin"'),
    ('tokens = [{ name = "ops", role = "read", token_env = "X" }, { name = "ops", role = "read", token_env = "Y" }]',
     'at $.api.tokens: Expected each name once, got "ops" again'),
    ('port = 70000', "at $.api.port: Expected int <= 65535, got 70000"),
    ('listen = true', "at $.api.listen: unknown key; expected one of: enabled, host, port, tokens"),
])
def test_load_config_when_an_api_key_is_wrong_then_the_error_names_it(config_dir, table, expected):
    assert expected in str(load_error(api_config(config_dir, table)))


@pytest.mark.parametrize("value", ['"short"', '"has spaces in it, 0123456789"', "12345678901234567890",
                                   f'"{SECRET}"'])
def test_load_config_when_a_token_is_refused_then_the_error_never_shows_it(config_dir, value):
    tokens = (f'tokens = [{{ name = "a", role = "read", token = {value} }}, '
              f'{{ name = "b", role = "read", token = {value} }}]')
    error = str(load_error(api_config(config_dir, tokens)))
    assert "at $.api.tokens" in error and value.strip('"') not in error


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.9", "::1", "localhost"])
def test_load_config_when_the_api_is_on_loopback_then_it_needs_no_tokens(config_dir, host):
    assert load_config(api_config(config_dir, f'enabled = true\nhost = "{host}"')).engine.api.host == host
