"""`orchestrator simulate`: the input read (a journal, a Parquet stream, a generated one), the run, the report."""
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

EXIT_INPUT = 1  # the input cannot be read or is not a stream


def simulate(config, args):
    from adapters.journal import JournalCorrupt
    from engine.simulate import simulate_journal, simulate_stream
    from sim.stream import StreamError, generate, read_parquet, write_parquet
    try:
        if args.generate is not None:
            stream = generate(config, args.generate, args.seed)
            if args.save:
                write_parquet(stream, args.save)
            result = simulate_stream(config, stream)
        elif args.input is None:
            raise StreamError("give an INPUT (a journal directory or a .parquet stream) or --generate N")
        elif Path(args.input).is_dir():
            result = simulate_journal(config, args.input)
        else:
            result = simulate_stream(config, read_parquet(args.input))
    except (OSError, StreamError, JournalCorrupt) as e:
        print(f"orchestrator: cannot simulate: {e}", file=sys.stderr)
        return EXIT_INPUT
    except ImportError as e:  # pyarrow: a dependency, but say so plainly if a reduced install lacks it
        print(f"orchestrator: cannot read Parquet: {e}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result, Console())
    return 0


def print_summary(result, console):
    console.print(f"{result['events']:,} events in {result['seconds']:.3f} s: "
                  f"[bold]{result['events_per_second'] or 0:,.0f} events/s[/bold]; {result['orders']:,} orders, "
                  f"{result['fills']:,} fills, {result['rejects']['total']:,} rejects")
    table = Table("strategy", "state", "instrument", "position", "realized", "unrealized", "fees", "net")
    for name, s in result["strategies"].items():
        for symbol, p in s["positions"].items():
            if p["qty"] or p["realized"] or p["fees"]:
                table.add_row(name, s["state"], symbol, str(p["qty"]), f"{p['realized']:,.2f}",
                              f"{p['unrealized']:,.2f}", f"{p['fees']:,.2f}",
                              f"{p['realized'] + p['unrealized'] - p['fees']:,.2f}")
    console.print(table)
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(result["rejects"]["by_reason"].items(), key=lambda kv: -kv[1]))
    console.print(f"rejects by reason: {reasons or 'none'}")
    console.print(f"digest {result['digest']}")
