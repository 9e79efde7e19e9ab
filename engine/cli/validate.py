"""`orchestrator validate CONFIG`: every problem of a config with its file and key path, or a summary of it."""
import sys

from engine.config import load


def validate(path, out=None) -> int:
    """Print a summary of the config at `path` or its problems; return the exit code (0 valid, 1 not)."""
    out = out or sys.stdout
    config, errors = load(path)
    if errors:
        print(f"{path}: INVALID, {len(errors)} problem{'s' * (len(errors) != 1)}", file=out)
        for error in errors:
            print(f"  {error}", file=out)
        return 1
    engine = config.engine
    listen = ", ".join(f"{kind} {table.host}:{table.port}" for kind, table in (("udp", engine.listen.udp),
                                                                            ("tcp", engine.listen.tcp)) if table)
    if engine.listen.aeron:
        listen += f"{', ' if listen else ''}aeron {engine.aeron.signals} + {engine.aeron.market_data}"
    print(f"{path}: OK  engine {engine.name!r} ({engine.driver} driver; signals on {listen}; "
          f"oms {engine.oms.kind})", file=out)
    print(f"  {_count(config.instruments, 'instrument')}: {', '.join(i.symbol for i in config.instruments)}",
          file=out)
    print(f"  {_count(config.accounts, 'account')}: {', '.join(a.name for a in config.accounts)}", file=out)
    print(f"  {_count(config.strategies, 'strategy', 'strategies')}:", file=out)
    rows = [("name", "version", "starts", "account", "signals", "instruments", "config hash")]
    rows += [(s.name, s.version, "ACTIVE" if s.enabled else "READY", s.account, ",".join(map(str, s.signals)),
              ",".join(s.instruments), digest[:12]) for s, digest in zip(config.strategies, config.strategy_hashes)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("    " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=out)
    return 0


def _count(items, singular, plural=None):
    return f"{len(items)} {singular if len(items) == 1 else plural or singular + 's'}"
