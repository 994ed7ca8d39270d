"""Replicates: every number of the tables and claims as a mean over N replicates, with its spread.

A study with `[verdict] replicates = N` trains every SAE N times (replicate 0 from the study's
own seeds, replicate r from seed + r * REPLICATE_SEED_STRIDE) and measures each the same
way, so the analysis stage computes the six tables and the claims N times. This module turns
those N copies into one: each cell becomes the mean over the replicates where it is a finite
number, with the sample standard deviation, a 95 % t-interval of the mean and the replicate
values beside it (`Spread`). Cells the replicates do not move (ids, sparsities, the
perplexities, which no SAE touches) stay exactly as computed.

What the interval means: the SAE-training noise of this run (initialisation and data
order), measured, not assumed. It does not cover what the replicates share (the model, the
tokens, the pruning masks).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats

LEVEL = 0.95
"""Coverage of the interval of the mean."""


@dataclass(frozen=True)
class Spread:
    """One number over replicates: the mean, its spread, and the values it came from."""

    n: int
    """Replicates with a finite value (the others are NaN or missing)."""
    mean: float
    sd: float
    """Sample standard deviation (ddof 1); 0 with one replicate, where it says nothing."""
    ci_low: float
    ci_high: float
    """95 % t-interval of the mean (mean +- t * sd / sqrt(n)); the mean itself when n < 2."""
    values: tuple[float, ...]
    """Every replicate's value in replicate order, NaN where it had none."""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "values": list(self.values)}


def _number(x: Any) -> float | None:
    """A cell as a float (true/false as 1/0, None as NaN); None when it is text."""
    if x is None:
        return math.nan
    if isinstance(x, bool | int | float):
        return float(x)
    return None


def spread(values: list[float]) -> Spread:
    """Mean, sample SD and t-interval of the finite values among `values`."""
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return Spread(0, math.nan, math.nan, math.nan, math.nan, tuple(values))
    mean = math.fsum(finite) / n
    if n == 1:
        return Spread(1, mean, 0.0, mean, mean, tuple(values))
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * sd / math.sqrt(n)
    return Spread(n, mean, sd, mean - half, mean + half, tuple(values))


def _same(cells: list[Any]) -> bool:
    first = cells[0]
    if isinstance(first, float) and math.isnan(first):
        return all(isinstance(c, float) and math.isnan(c) for c in cells)
    return all(type(c) is type(first) and c == first for c in cells)


def combine(cells: list[Any]) -> tuple[Any, Spread | None]:
    """One cell from its replicates: unchanged when they agree exactly, else the mean of the
    numbers with its spread. Text that differs between replicates is kept as the list. A
    yes/no cell of several replicates is always the fraction that say yes (1.0 when all do),
    so its column has one type whether or not the replicates agree."""
    if len(cells) >= 2 and all(isinstance(c, bool) for c in cells):
        s = spread([float(c) for c in cells])
        return s.mean, s
    if _same(cells):
        number = _number(cells[0])
        if number is None or isinstance(cells[0], bool) or len(cells) < 2 \
                or math.isnan(number):
            return cells[0], None
        return cells[0], spread([number] * len(cells))
    numbers = [n for n in map(_number, cells) if n is not None]
    if len(numbers) < len(cells):
        return list(cells), None
    s = spread(numbers)
    return s.mean, s


def combine_tables(per_replicate: list[dict[str, list[dict]]]
                   ) -> tuple[dict[str, list[dict]], list[dict]]:
    """The tables of N replicates as one set of tables (means) and the long list of spreads.

    Every replicate has the same rows in the same order (the study's conditions and seeds do
    not depend on the replicate); a row missing from one replicate is a bug, not data.
    """
    first = per_replicate[0]
    tables: dict[str, list[dict]] = {}
    spreads: list[dict] = []
    for name, rows in first.items():
        tables[name] = []
        for i, row in enumerate(rows):
            copies = [rep[name][i] for rep in per_replicate]
            if any(c["id"] != row["id"] for c in copies):
                raise ValueError(f"{name}: replicates disagree on row {i} ({row['id']})")
            out = {}
            for column in row:
                out[column], s = combine([c.get(column) for c in copies])
                if s is not None:
                    spreads.append({"table": name, "id": row["id"], "column": column,
                                    **s.as_dict()})
            tables[name].append(out)
    return tables, spreads


def combine_claims(per_replicate: list[dict[str, dict]]) -> dict[str, dict]:
    """The claims of N replicates: each field the mean over replicates (`combine`), and per
    claim a `spread` entry {field: Spread} and a `replicates` entry with every replicate's
    own version of the claim."""
    out: dict[str, dict] = {}
    for name in per_replicate[0]:
        copies = [rep.get(name) or {} for rep in per_replicate]
        entry: dict[str, Any] = {}
        spreads: dict[str, dict] = {}
        for field in copies[0]:
            cells = [c.get(field) for c in copies]
            if any(isinstance(c, dict | list) for c in cells):
                continue  # per-condition detail: kept per replicate below
            entry[field], s = combine(cells)
            if s is not None:
                spreads[field] = s.as_dict()
        out[name] = {**entry, "n_replicates": len(copies), "spread": spreads,
                     "replicates": copies}
    return out
