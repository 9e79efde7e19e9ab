"""The [redis] table of engine.toml: off by default, every key reaches the mirror, bad values name the key."""
import shutil
from pathlib import Path

import pytest

from adapters.redis_mirror import RedisMirrorConfig
from engine.config import ConfigError, load_config
from engine.config.schema import Redis

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ROOT / "config" / "test" / "minimal"


@pytest.fixture
def config_dir(tmp_path):
    return Path(shutil.copytree(MINIMAL, tmp_path / "cfg"))


def with_redis(config_dir, body):
    (config_dir / "engine.toml").write_text(f'name = "x"\n[redis]\n{body}\n')
    return config_dir


def load_error(path):
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_load_config_when_no_redis_table_then_the_mirror_is_off_with_loopback_defaults():
    redis = load_config(MINIMAL).engine.redis

    assert redis.enabled is False
    assert (redis.host, redis.port, redis.db, redis.url, redis.key_prefix) == ("127.0.0.1", 6379, 0, None,
                                                                               "orchestrator")
    assert redis.mirror_config() == RedisMirrorConfig()


def test_load_config_when_every_redis_key_is_given_then_each_reaches_the_feed_or_the_writer(config_dir):
    config = load_config(with_redis(config_dir, "\n".join([
        "enabled = true", 'host = "10.0.0.5"', "port = 6380", "db = 2", 'key_prefix = "risk"',
        "queue_size = 1000", "stream_max_length = 500", "backoff_min_ms = 50", "backoff_max_ms = 800",
        "timeout_ms = 250", "batch_records = 64", "snapshot_interval_ms = 200", "replay_records = 300",
        "shutdown_flush_ms = 700"])))
    redis = config.engine.redis

    assert redis.mirror_config() == RedisMirrorConfig(
        host="10.0.0.5", port=6380, db=2, key_prefix="risk", queue_size=1000, stream_max_length=500,
        backoff_min_ms=50, backoff_max_ms=800, timeout_ms=250, batch_records=64)
    assert (redis.enabled, redis.snapshot_interval_ms, redis.replay_records, redis.shutdown_flush_ms) == \
        (True, 200, 300, 700)
    # the feed's keys are the only ones beyond the writer's: each of them is read by engine/mirror.py
    assert set(Redis.__struct_fields__) - set(RedisMirrorConfig.__struct_fields__) == {
        "enabled", "url", "snapshot_interval_ms", "replay_records", "shutdown_flush_ms"}


@pytest.mark.parametrize("url, expected", [
    ("redis://cache.internal:6390/3", ("cache.internal", 6390, 3)),
    ("redis://127.0.0.1", ("127.0.0.1", 6379, 0)),
    ("redis://localhost/", ("localhost", 6379, 0)),
])
def test_load_config_when_url_given_then_host_port_and_db_come_from_it(config_dir, url, expected):
    mirror = load_config(with_redis(config_dir, f'url = "{url}"')).engine.redis.mirror_config()

    assert (mirror.host, mirror.port, mirror.db) == expected


@pytest.mark.parametrize("url", ["http://h:1/0", "redis://", "redis://h:99999/0", "redis://h/x",
                                 "redis://user:secret@h/0", "redis://h/0?timeout=1"])
def test_load_config_when_url_is_not_redis_host_port_db_then_error_names_the_url_key(config_dir, url):
    message = load_error(with_redis(config_dir, f'url = "{url}"'))

    assert message.startswith(f"{config_dir / 'engine.toml'}: at $.redis.url: "
                              f'Expected "redis://host[:port][/db]"'), message


def test_load_config_when_url_and_host_both_given_then_error_says_one_of_them(config_dir):
    message = load_error(with_redis(config_dir, 'url = "redis://h/0"\nhost = "other"'))

    assert "at $.redis.url: Expected url or host/port/db, not both" in message, message


@pytest.mark.parametrize("body, key, expected", [
    ("queue_size = 0", "queue_size", "Expected int >= 1"),
    ("port = 70000", "port", "Expected int <= 65535"),
    ('key_prefix = "a b"', "key_prefix", 'Expected a Redis key part of letters, digits, "_", "." or "-"'),
    ("snapshot_interval_ms = 0", "snapshot_interval_ms", "Expected int >= 1"),
    ("replay_records = -1", "replay_records", "Expected int >= 0"),
    ("enabled = 1", "enabled", "Expected bool, got int (1)"),
    ("backoff_min_ms = 500\nbackoff_max_ms = 100", "backoff_max_ms", "Expected int >= backoff_min_ms (500)"),
])
def test_load_config_when_a_redis_value_is_bad_then_error_names_the_key(config_dir, body, key, expected):
    message = load_error(with_redis(config_dir, body))

    assert f"at $.redis.{key}: {expected}" in message, message


def test_load_config_when_a_redis_key_is_unknown_then_error_names_it(config_dir):
    message = load_error(with_redis(config_dir, "maxlen = 5"))

    assert "at $.redis.maxlen: unknown key; expected one of: host, port" in message, message
