"""How wide a band: the multiple of the pooled sd, measured per table by leave-one-out.

Each replicate in turn is verified against bands made from the others, and each table takes
the smallest multiple of `MULTIPLES` at which none of its cells, and no claim read from it,
fails (`choose_multiples`); `verify_multiple` converts it to the comparison `repro verify`
makes. The sds, floors and scales the bands are made of: repro.outputs.bands (whose
docstring says why per table, and why converted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from repro.outputs.bands import (
    EXACT_CLAIMS,
    Sd,
    Tables,
    band_tolerance,
    claim_band,
    claim_on_log_scale,
    claim_table,
    claim_values,
    column_band,
    column_scales,
    column_sds,
    dof_of,
    feature_floors,
    finite_mean,
    model_of,
    number,
    sample_sd,
)
from repro.outputs.expected import ClaimSpec
from repro.outputs.scales import LINEAR, LOG

MULTIPLES = (2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0)
"""Tried in order; a pooled sd of few degrees of freedom has heavy tails (Student's t with
2 dof exceeds 10 sd-estimates 1 % of the time), so the grid reaches far."""
MIN_MULTIPLE = 3.0
"""The narrowest band verify uses, in widened sds, however well the replicates agree."""


def outside(got: float, expected: float, band: float, scale: str = LINEAR,
             floor: float = 0.0) -> bool:
    """Whether verify would fail `got` against `expected` with this band."""
    if math.isnan(got) or math.isnan(expected):
        return math.isnan(got) != math.isnan(expected)
    low, high = band_tolerance(band, scale, floor).bounds(expected)
    return not low <= got <= high


@dataclass(frozen=True)
class LeaveOneOut:
    """How a multiple fares when each replicate is verified against bands from the others."""

    multiple: float
    checked: int
    """Cells and claims compared, over all replicates left out."""
    failed: int
    worst: list[str]
    """Up to five of the failing checks, for the bless report."""

    @property
    def rate(self) -> float:
        return self.failed / self.checked if self.checked else 0.0


@dataclass(frozen=True)
class _Comparison:
    """One cell or claim of a held-out replicate against the mean and spread of the others:
    everything of it that does not depend on the multiple."""

    table: str
    """The table it is read from (a claim: `claim_table`)."""
    label: str
    got: float
    expected: float
    sd: Sd
    scale: str
    floor: float = 0.0
    claim: ClaimSpec | None = None

    def fails(self, multiple: float) -> bool:
        band = (claim_band(self.claim, self.sd, multiple) if self.claim is not None
                else column_band(self.sd, multiple, self.floor, self.scale))
        return outside(self.got, self.expected, band, self.scale, self.floor)


def _comparisons(tables: list[Tables], claims: list[dict], specs: list[ClaimSpec]
                 ) -> list[_Comparison]:
    """Every cell and claim of each replicate against the other N - 1, made once for every
    multiple tried. A number that is undefined in the replicate left out or in all the others
    (a rho of bins that tie, a ratio over no surviving feature: NaN or infinite) is not
    compared, as a mean over replicates leaves it out."""
    out = []
    scales = column_scales(tables)
    for i in range(len(tables)):
        rest_t, rest_c = tables[:i] + tables[i + 1:], claims[:i] + claims[i + 1:]
        # the held-out run is one replicate: a yes/no answer of its own moves by a whole 1
        sds, floors = column_sds(rest_t, scales), feature_floors(rest_t[0], 1)
        for (name, col), by_model in sds.items():
            floor, scale = floors.get((name, col), 0.0), scales[(name, col)]
            for j, row in enumerate(tables[i][name]):
                exp = finite_mean([number(rep[name][j].get(col)) for rep in rest_t])
                got = number(row.get(col))
                if math.isfinite(got) and math.isfinite(exp):
                    out.append(_Comparison(name, f"replicate {i}: {name}[{row['id']}].{col}",
                                           got, exp, by_model[model_of(row)], scale, floor))
        for spec in specs:
            if f"{spec.claim}.{spec.field}" in EXACT_CLAIMS:
                continue
            got = claim_values([claims[i]], spec)[0]
            scaled = claim_values(rest_c, spec, scaled=True)
            if not math.isfinite(got) or dof_of(scaled) < 1:
                continue  # undefined here, or too few defined others to make a band of
            out.append(_Comparison(claim_table(spec), f"replicate {i}: claim {spec.name}", got,
                                   finite_mean(claim_values(rest_c, spec)),
                                   Sd(sample_sd(scaled), dof_of(scaled)),
                                   LOG if claim_on_log_scale(spec) else LINEAR, claim=spec))
    return out


def _score(comparisons: list[_Comparison], multiple: float) -> LeaveOneOut:
    failing = [c.label for c in comparisons if c.fails(multiple)]
    return LeaveOneOut(multiple, len(comparisons), len(failing), failing[:5])


def leave_one_out(tables: list[Tables], claims: list[dict], specs: list[ClaimSpec],
                  multiple: float, table: str | None = None) -> LeaveOneOut:
    """Verify each replicate against the mean and bands of the other N - 1 (`_comparisons`):
    every cell and claim, or those of one `table` and the claims read from it."""
    return _score([c for c in _comparisons(tables, claims, specs)
                   if table is None or c.table == table], multiple)


def choose_multiple(tables: list[Tables], claims: list[dict], specs: list[ClaimSpec],
                    table: str | None = None) -> tuple[float, list[LeaveOneOut]]:
    """The smallest multiple at which leave-one-out fails nothing (of one `table` and its
    claims, or of everything), and the leave-one-out result of every multiple tried;
    math.inf when none passes."""
    return _chosen([c for c in _comparisons(tables, claims, specs)
                    if table is None or c.table == table])


def _chosen(comparisons: list[_Comparison]) -> tuple[float, list[LeaveOneOut]]:
    trials = [_score(comparisons, m) for m in MULTIPLES]
    passing = [t.multiple for t in trials if t.failed == 0]
    return (min(passing) if passing else math.inf), trials


def choose_multiples(tables: list[Tables], claims: list[dict], specs: list[ClaimSpec]
                     ) -> dict[str, tuple[float, list[LeaveOneOut]]]:
    """`choose_multiple` for each table and the claims read from it, from one set of
    comparisons."""
    comparisons = _comparisons(tables, claims, specs)
    return {name: _chosen([c for c in comparisons if c.table == name]) for name in tables[0]}


def verify_multiple(loo_multiple: float, n: int) -> float:
    """The multiple of the verify bands, from the multiple at which leave-one-out passed: the
    same number of sds of the difference each compares (one replicate against the mean of
    n - 1 there, a mean of n against a mean of n in `repro verify`)."""
    ratio = math.sqrt(2 / n) / math.sqrt(1 + 1 / (n - 1))
    return max(MIN_MULTIPLE, loo_multiple * ratio)
