"""A kernel state and the reference held to each other: every table field by field, floats bit for bit (any NaN
equals any NaN), ring records by their bytes in the kernels' layout. Each function returns the differences in
words (empty when they agree), so a failing test says where: `strategies[1].realized: kernel ..., reference ...`.
"""
import numpy as np

from kernels.arena import S_CLOCK_NS, S_FREE_TOP, S_NEXT_COOLDOWN_NS, S_ORDER_GEN
from kernels.dtypes import COUNTER_NAMES
from reference.records import WORKING_FIELDS, as_rows

# of an exposure, what it is (its working_head is how the kernels find its working orders)
EXPOSURE_FIELDS = ("qty", "open_buy", "open_sell", "gross", "net", "best_buy_ticks", "best_buy_count",
                   "best_sell_ticks", "best_sell_count")
VENUE_COUNTS = ("orders", "acks", "rejects", "partial_fills", "fills", "canceled", "filled_qty", "fees")
SHOWN = 30  # differences listed at most


def same(a, b):
    """Element-wise equality of two arrays of one dtype field: bits for floats (NaN = NaN), values otherwise."""
    if a.dtype.kind == "f":
        bits = np.dtype(f"u{a.itemsize}")
        return (a.view(bits) == b.view(bits)) | (np.isnan(a) & np.isnan(b))
    return a == b


def rows_differences(where, kernel_rows, reference_rows, fields=None, labels=None):
    """Two arrays of one structured dtype, field by field; `labels[n]` names row n (default `[n]`)."""
    out = []
    if len(kernel_rows) != len(reference_rows):
        return [f"{where}: kernel has {len(kernel_rows)} records, reference {len(reference_rows)}"]
    for name in fields or kernel_rows.dtype.names:
        for n in np.flatnonzero(~same(kernel_rows[name], reference_rows[name]))[:SHOWN]:
            label = labels[n] if labels else f"[{n}]"
            out.append(f"{where}{label}.{name}: kernel {kernel_rows[name][n].item()!r}, "
                       f"reference {reference_rows[name][n].item()!r}")
    return out


def records_differences(where, kernel_rows, records):
    """A kernel ring's records (a structured array, in ring order) and the reference's records of that ring."""
    return rows_differences(where, kernel_rows, as_rows(records, kernel_rows.dtype))


def table_differences(k, ref, ignore_counters=()):
    """Kernel state k and reference.rules.Reference ref: instruments, strategies, accounts, positions, exposures
    (with the best working prices and how many orders sit at each), the live working orders, the free slots, the
    order generation, the clock and the next cool-down, per-source sequences, reason and trip counts, counters
    (those in `ignore_counters` excepted)."""
    n_strategies, n_instruments = k.positions.shape
    n_accounts = len(k.accounts)
    out = []
    for name in ("instruments", "strategies", "accounts"):
        table = getattr(k, name)
        out += rows_differences(name, table, as_rows(getattr(ref, name), table.dtype))
    cells = [(s, i) for s in range(n_strategies) for i in range(n_instruments)]
    out += rows_differences("positions", k.positions.reshape(-1), as_rows([ref.positions[c] for c in cells],
                                                                           k.positions.dtype),
                            labels=[f"[{s}, {i}]" for s, i in cells])
    cells = [(a, i) for a in range(n_accounts) for i in range(n_instruments)]
    exposures = as_rows([ref.exposures[c] for c in cells], k.exposures.dtype)
    for row, (a, i) in zip(exposures, cells):
        (row["best_buy_ticks"], row["best_buy_count"]), (row["best_sell_ticks"], row["best_sell_count"]) = \
            ref.best_prices(a, i)
    out += rows_differences("exposures", k.exposures.reshape(-1), exposures, EXPOSURE_FIELDS,
                            labels=[f"[{a}, {i}]" for a, i in cells])
    live = np.flatnonzero(k.open_orders["live"]).tolist()
    if live != sorted(ref.working):
        out.append(f"working order slots: kernel {live}, reference {sorted(ref.working)}")
    else:
        out += rows_differences("open_orders", k.open_orders[live], as_rows([ref.working[s] for s in live],
                                                                            k.open_orders.dtype, WORKING_FIELDS),
                                WORKING_FIELDS, labels=[f"[{s}]" for s in live])
    top = int(k.scalars[S_FREE_TOP])
    if k.free_slots[:top].tolist() != ref.free:
        out.append(f"free slots: kernel {k.free_slots[:top].tolist()}, reference {ref.free}")
    scalars = [int(k.scalars[s]) for s in (S_ORDER_GEN, S_CLOCK_NS, S_NEXT_COOLDOWN_NS)]
    if scalars != [ref.order_gen, ref.clock_ns, ref.next_cooldown_ns]:
        out.append(f"order gen, clock, next cool-down: kernel {scalars}, "
                   f"reference {[ref.order_gen, ref.clock_ns, ref.next_cooldown_ns]}")
    counters = k.counters.tolist()
    for c in ignore_counters:
        counters[c] = ref.counters[c]
    if counters != ref.counters:
        out += [f"counters.{COUNTER_NAMES[c]}: kernel {a}, reference {b}"
                for c, (a, b) in enumerate(zip(counters, ref.counters)) if a != b]
    for name, kernel_table, ref_table in (("source_seq", k.source_seq.tolist(), ref.last_seq),
                                          ("reason_counts", k.reason_counts.tolist(), ref.reason_counts),
                                          ("trip_counts", k.trip_counts.tolist(), ref.trip_counts)):
        if kernel_table != ref_table:
            out.append(f"{name}: kernel {kernel_table}, reference {ref_table}")
    return out


def venue_differences(k, venue):
    """The compiled venue of kernel state k and a sim.venue.SimulatedOms: counts, fees, what is still pending and
    resting."""
    v = k.venue[0]
    out = [f"venue.{name}: kernel {v[name].item()!r}, reference {getattr(venue.stats, name)!r}"
           for name in VENUE_COUNTS if v[name].item() != getattr(venue.stats, name)]
    resting = int(k.venue_orders["resting"].sum())
    if (int(v["pending"]), resting) != (venue.pending(), venue.resting()):
        out.append(f"venue pending, resting: kernel {(int(v['pending']), resting)}, "
                   f"reference {(venue.pending(), venue.resting())}")
    return out
