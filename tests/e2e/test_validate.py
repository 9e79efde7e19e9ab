"""`orchestrator validate` and `run` on good and broken configs: errors name the file and the key path, and a
broken config never starts an engine."""
import re
import socket

from tests.e2e.e2e_kit import derive_config, free_port


def break_config(config):
    """Three files, three problems: an unknown (misspelt) key, a wrong type, a TOML syntax error."""
    momentum = config / "strategies" / "momentum.toml"
    momentum.write_text(momentum.read_text().replace("max_order_qty =", "max_order_qtty ="))
    mean_reversion = config / "strategies" / "mean_reversion.toml"
    mean_reversion.write_text(re.sub(r"(?m)^max_open_orders = \d+", 'max_open_orders = "twenty"',
                                     mean_reversion.read_text()))
    engine = config / "engine.toml"
    engine.write_text(engine.read_text() + "\n[rings\nsignals = 64\n")
    return momentum, mean_reversion, engine


def test_validate_when_config_is_good_then_exits_0_with_a_summary(procs, tmp_path):
    config = derive_config(tmp_path / "config")
    code, out, err = procs.run("validate", str(config))
    assert code == 0, out + err
    assert out.startswith(f"{config}: OK  engine 'demo'")
    for name in ("index_arbitrage", "mean_reversion", "momentum", "pairs", "scalper"):
        assert re.search(rf"(?m)^\s+{name}\s+\d+\.\d+\.\d+\s+(ACTIVE|READY)\s", out), name


def test_validate_when_config_is_broken_then_exits_1_naming_each_file_and_key(procs, tmp_path):
    momentum, mean_reversion, engine = break_config(derive_config(tmp_path / "config"))
    code, out, err = procs.run("validate", str(tmp_path / "config"))
    assert code == 1, out + err
    assert "INVALID, 3 problems" in out
    assert re.search(rf"{momentum}: at \$\.limits\.max_order_qtty: unknown key; .*did you mean \"max_order_qty\"", out)
    assert re.search(rf"{mean_reversion}: at \$\.limits\.max_open_orders: Expected `?int`?.*\"twenty\"", out), out
    assert re.search(rf"{engine}:\d+: invalid TOML at line \d+, column \d+", out)


def test_run_when_config_is_broken_then_exits_2_and_nothing_listens(procs, tmp_path):
    port = free_port()
    config = derive_config(tmp_path / "config", engine={"listen": {"tcp": {"host": "127.0.0.1", "port": port}}})
    momentum, _, _ = break_config(config)
    engine = procs.engine(config, ready=False)
    assert engine.wait(30) == 2
    assert not engine.ready_path.exists() and engine.stdout == ""
    assert engine.stderr.startswith("orchestrator: config not valid:") and str(momentum) in engine.stderr
    with socket.socket() as probe:  # nobody took the port
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_run_when_address_in_use_then_exits_3_naming_the_engine(procs, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = derive_config(tmp_path / "config",
                               engine={"listen": {"tcp": {"host": "127.0.0.1", "port": taken.getsockname()[1]}}})
        engine = procs.engine(config, ready=False)
        assert engine.wait(30) == 3
    assert "cannot start engine 'demo'" in engine.stderr and "Address already in use" in engine.stderr
    assert not engine.ready_path.exists() and engine.stdout == ""


def misname_and_corrupt(config):
    """A strategy file misnamed (it would vanish from the config) and a binary instruments.toml."""
    momentum = config / "strategies" / "momentum.toml"
    misnamed = momentum.rename(momentum.with_suffix(".tml"))
    instruments = config / "instruments.toml"
    instruments.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return misnamed, instruments


def test_validate_when_a_strategy_file_is_misnamed_or_a_file_is_binary_then_exits_1_naming_them(procs, tmp_path):
    misnamed, instruments = misname_and_corrupt(derive_config(tmp_path / "config"))
    code, out, err = procs.run("validate", str(tmp_path / "config"))
    assert code == 1, out + err
    assert f"{misnamed}: not a .toml file; " in out, out
    assert f"{instruments}: not a text file: byte 0x89 at offset 0 is not UTF-8" in out, out
    assert "Traceback" not in out + err and "codec" not in out + err


def test_run_when_a_strategy_file_is_misnamed_or_a_file_is_binary_then_exits_2_naming_them(procs, tmp_path):
    misnamed, instruments = misname_and_corrupt(derive_config(tmp_path / "config"))
    engine = procs.engine(tmp_path / "config", ready=False)
    assert engine.wait(30) == 2
    assert engine.stderr.startswith("orchestrator: config not valid:"), engine.stderr
    assert f"{misnamed}: not a .toml file; " in engine.stderr and f"{instruments}: not a text file" in engine.stderr
    assert "Traceback" not in engine.stderr
