"""Configuration: TOML files decoded into frozen msgspec Structs, validated on the way in.

A config directory holds
    engine.toml        engine settings (a single .toml path may be given instead: it is the engine file and the
                       other parts are read from its directory, so several engine variants can share them)
    instruments.toml   [[instruments]] tables, ids dense 0..n-1
    accounts.toml      [[accounts]] tables, ids dense 0..n-1
    strategies/*.toml  one strategy per file, at the top level of the file; nothing else in that directory

By concern: schema.py (the Structs and what each key means), loader.py (files, cross-references), errors.py
(problems in words: `FILE: at $.key.path: expected ..., got ...`). A key that nothing reads yet is refused
with "not supported yet", never accepted and ignored.
"""
from engine.config.errors import ConfigError
from engine.config.loader import load, load_config, strategy_hash, validate
from engine.config.schema import Config

__all__ = ["Config", "ConfigError", "load", "load_config", "strategy_hash", "validate"]
