"""P&L attribution per strategy x instrument x deploy (version), with a trading day that rolls at a set time.

An engine listener and housekeeper, off the hot path like engine/quality.py: `on_batch` copies the batch's
fills, `maintain(now)` folds them in and rolls the day when it is due.

Attribution rules (docs/metrics.md "P&L attribution"):
- realized P&L and fees belong to the deploy that made the fill (every fill carries its deploy number);
- unrealized P&L belongs to the deploy running now: positions belong to the strategy's name and carry across
  versions, so the version that holds the position answers for its marks;
- what the positions held when this engine started (a recovered journal) is the running deploy's at start.
So for each strategy x instrument the deploys add up to the position's own realized, unrealized and fees.

The day: it starts at `day_start` (HH:MM) in `time_zone` ([pnl], zoneinfo, so daylight saving is the zone's).
At the roll the day's figures (each measure now minus at the day's start) are closed into `days` (the last
`days_kept`) and the next day starts from there. The first day counts from the engine's start.
"""
import datetime as dt
import zoneinfo
from collections import deque

import numpy as np

from engine.quality import concat_fields

MEASURES = ("realized", "unrealized", "fees")
FIELDS = ("strategy", "deploy", "instrument", "realized", "fee")


class PnlAttribution:
    def __init__(self, state, config, now_ns):
        self.state = state
        self.zone = zoneinfo.ZoneInfo(config.time_zone)
        hours, minutes = map(int, config.day_start.split(":"))
        self.day_start = dt.time(hours, minutes)
        self.days = deque(maxlen=config.days_kept)
        n_instruments = len(state.instruments)
        self.rows = {}  # (strategy, deploy number) -> row of the arrays below
        self.keys = []  # row -> (strategy, deploy number)
        self.realized = np.zeros((0, n_instruments))
        self.fees = np.zeros((0, n_instruments))
        self.fills = np.zeros((0, n_instruments), np.int64)
        self._staged = []
        n = len(state.strategy_names)
        for s in range(n):  # what the positions hold at start is the running deploy's
            self._row(s, int(state.strategies[s]["deploy"]))
        start = np.array([self.rows[s, int(state.strategies[s]["deploy"])] for s in range(n)], np.int64)
        self.realized[start] = state.positions["realized"][:n]
        self.fees[start] = state.positions["fees"][:n]
        self._open_day(now_ns)

    def _row(self, s, deploy):
        key = (s, deploy)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = len(self.keys)
            self.keys.append(key)
            width = self.realized.shape[1]
            self.realized = np.vstack([self.realized, np.zeros((1, width))])
            self.fees = np.vstack([self.fees, np.zeros((1, width))])
            self.fills = np.vstack([self.fills, np.zeros((1, width), np.int64)])
        return row

    # ------------------------------------------------------------------------------------------ engine thread
    def on_batch(self, orders, rejects, fills, now_ns):
        """Keep copies of the batch's fills (the ring's slots are written again by later batches)."""
        for chunk in fills:
            self._staged.append({name: chunk[name].copy() for name in FIELDS})

    def maintain(self, now_ns, engine=None):
        if self._staged:
            staged, self._staged = self._staged, []
            f = concat_fields(staged, FIELDS)
            keys = f["strategy"].astype(np.int64) << 32 | f["deploy"].astype(np.int64)
            unique, inverse = np.unique(keys, return_inverse=True)
            rows = np.array([self._row(int(k) >> 32, int(k) & 0xFFFF_FFFF) for k in unique], np.int64)[inverse]
            i = f["instrument"].astype(np.int64)
            np.add.at(self.realized, (rows, i), f["realized"])
            np.add.at(self.fees, (rows, i), f["fee"])
            np.add.at(self.fills, (rows, i), 1)
        if now_ns >= self.next_roll_ns:
            self.roll(now_ns)

    def unrealized(self):
        """Unrealized P&L by row: each strategy's positions at their marks, on its running deploy's row."""
        state = self.state
        n = len(state.strategy_names)
        rows = [self._row(s, int(state.strategies[s]["deploy"])) for s in range(n)]  # first: a strategy registered
        out = np.zeros_like(self.realized)  # since the last look gets its row now, so the table has grown
        out[rows] = state.positions["unrealized"][:n]
        return out

    def measures(self):
        unrealized = self.unrealized()  # before the copies: it may add the rows of newly registered strategies
        return {"realized": self.realized.copy(), "unrealized": unrealized, "fees": self.fees.copy(),
                "fills": self.fills.copy()}

    # ------------------------------------------------------------------------------------------ the day
    def _open_day(self, now_ns):
        local = dt.datetime.fromtimestamp(now_ns / 1e9, self.zone)
        start = dt.datetime.combine(local.date(), self.day_start, self.zone)
        if start > local:
            start = dt.datetime.combine(local.date() - dt.timedelta(days=1), self.day_start, self.zone)
        following = dt.datetime.combine(start.date() + dt.timedelta(days=1), self.day_start, self.zone)
        self.day = start.date().isoformat()
        self.day_started_ns = now_ns
        self.next_roll_ns = int(following.timestamp() * 1e9)
        self._day_base = self.measures()

    def day_measures(self, now=None):
        """Each measure since the day started, by row."""
        now = now or self.measures()
        out = {}
        for key in MEASURES + ("fills",):
            base = self._day_base[key]
            padded = np.zeros_like(now[key])
            padded[:len(base)] = base
            out[key] = now[key] - padded
        return out

    def roll(self, now_ns):
        """Close the day: its figures into `days`; the next day starts now."""
        self.days.append({"day": self.day, "started_ns": self.day_started_ns, "ended_ns": now_ns,
                          "strategies": self._table(self.day_measures())})
        self._open_day(now_ns)

    # ------------------------------------------------------------------------------------------ reading
    def _table(self, measures):
        """{strategy: {instrument: {deploy: {version, realized, unrealized, fees, net}}}} for non-zero rows."""
        state = self.state
        out = {}
        for row, (s, deploy) in enumerate(self.keys):
            for i, symbol in enumerate(state.instrument_symbols):
                values = {key: float(measures[key][row, i]) for key in MEASURES}
                fills = int(measures["fills"][row, i])
                if not any(values.values()) and not fills:
                    continue
                values["net"] = values["realized"] + values["unrealized"] - values["fees"]
                out.setdefault(state.strategy_names[s], {}).setdefault(symbol, {})[str(deploy)] = {
                    "version": self.version(s, deploy), "fills": fills, **values}
        return out

    def version(self, s, deploy):
        for d in self.state.deploys[s]:
            if d.number == deploy:
                return d.version
        return "?"

    def rows_for_export(self):
        """(strategy, instrument, deploy, version, {measure: total}, {measure: today}) of every non-zero row."""
        total = self.measures()
        day = self.day_measures(total)
        out = []
        for row, (s, deploy) in enumerate(self.keys):
            for i in range(total["realized"].shape[1]):
                values = {key: float(total[key][row, i]) for key in MEASURES}
                if not any(values.values()) and not self.fills[row, i]:
                    continue
                out.append((s, i, deploy, self.version(s, deploy), values,
                            {key: float(day[key][row, i]) for key in MEASURES}))
        return out

    def report(self):
        total = self.measures()
        return {"time_zone": self.zone.key, "day": self.day, "day_started_ns": self.day_started_ns,
                "next_roll_ns": self.next_roll_ns, "total": self._table(total),
                "today": self._table(self.day_measures(total)), "days": list(self.days)}
