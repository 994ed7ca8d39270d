"""Bands from replicates: how far another correct run's numbers may lie from the blessed ones.

`repro bless` calls `replicate_bands` on a run with `[verdict] replicates >= 3`. Every SAE of
such a run was trained N times from other seeds, so each table cell and claim has N values.
Their spread is the noise a correct run carries whatever machine it runs on: another CPU or a
GPU changes the SAEs' last bits, and SAE training, TopK selection and Hungarian matching turn
that into a different draw of the same noise, never into more of it.

- Table columns: per model, the pooled standard deviation over that model's rows of the
  column (the root mean square of each row's sd over replicates): N = 3 replicates give each
  row's sd from two degrees of freedom, far too few to bound anything, while a model's 3-8
  rows pool 6-16. Pooled per model, not over the whole column, because models differ in scale
  and noise: Gemma 3 270M's reconstruction error is twenty times SmolLM2's, and one band for
  both would be too wide for one and too narrow for the other (measured: it took a multiple
  of 15 to pass leave-one-out, the per-model band far less; docs/verdict.md). Band = MULTIPLE
  x pooled sd, never below the round-off floor.
- Claims: the sd of the claim's N values (no rows to pool over), never below the claim's
  resolution: C1 counts conditions, so one condition is the least it can move by.
- Ratios (T4's Wanda / magnitude survival ratios, C2) are banded on the log scale
  (`LOG_COLUMNS`, a claim whose contrary is its inverse): a ratio of two rates over a few
  dozen features moves by a factor, and on that scale its opposite finding, the inverse,
  lies as far from 1 as the finding. Measured on the small profile: one replicate's control
  ratio lay 8 widened sds from the others' on the linear scale.
- MULTIPLE is measured, not assumed, per table (`choose_multiples`): each replicate in turn
  is verified against bands made from the others (leave one out) and the smallest multiple
  of `MULTIPLES` at which no cell of the table and no claim read from it (`CLAIM_TABLE`)
  fails is taken. Per table, because tables differ in how their noise is spread over rows:
  T5's CE-loss score of a model pruned into nonsense (perplexity 5,749) is a ratio over a
  span near zero and lay 13 widened sds out, which one multiple for every table would have
  pressed on the survival ratios, whose bands would then pass the inverse. Leave-one-out
  compares one replicate with the mean of N - 1, whose difference has sd x sqrt(1 + 1/(N - 1))
  (1.22 sd for N = 3); `repro verify` compares a run's mean of N with the blessed mean of N,
  sd x sqrt(2 / N) (0.82 sd). The bands are made for the comparison they serve: MULTIPLE is the
  leave-one-out multiple times the ratio of the two (`verify_multiple`, 2/3 for N = 3),
  never below MIN_MULTIPLE.

Columns the replicates do not move (perplexities, masks, the grid) keep the round-off floor,
unless `repro bless --across OTHER_RUN` gives runs of the same study at other arithmetic
(another CPU, other kernels, the pins on or off): then ACROSS_MULTIPLE x the largest relative
difference measured between them (`across_settings`), as scripts/measure_spread.py does for
the tiny profile. Columns exact by construction (the grid's sparsities and seeds, sample
sizes) have no band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from repro.outputs.expected import ClaimSpec, Tolerance
from repro.outputs.verify import cell_number

FLOOR_ABS, FLOOR_REL = 1e-9, 1e-6
"""What a last-bit difference in a float can move a number by."""
MULTIPLES = (2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0)
"""Tried in order; a pooled sd of few degrees of freedom has heavy tails (Student's t with
2 dof exceeds 10 sd-estimates 1 % of the time), so the grid reaches far."""
MIN_MULTIPLE = 3.0
"""The narrowest band verify uses, in widened sds, however well the replicates agree."""
WIDEN_LEVEL = 0.995
"""The quantile at which `widening` compares Student's t with the normal distribution."""
FEATURE_FLOOR = 2
"""The least a count of features may move by, and a rate over n features by FEATURE_FLOOR /
n: a survival of 2 of 440 features cannot be told from 0 of 440 by any band narrower."""
COUNT_COLUMNS = {"n_alive", "n_dead", "n_survived", "n_survived_control", "n_defined",
                 "n_silenced"}
RATE_COLUMNS = ("survival", "seed_floor", "identity_rate", "shared_fraction",
                "fragile_fraction")
"""Column name prefixes of rates over a table's features (n_alive, or n_defined in T6)."""
EXACT_BY_CONSTRUCTION = {"sparsity", "achieved_sparsity", "seed_a", "seed_b", "n_causal"}
"""Grid values and sample sizes: set by the study file, never computed from data."""
EXACT_CLAIMS = {"C1.of", "C2.of", "C2_control.of"}
"""Numbers of conditions: the study file's, never computed."""
ACROSS_MULTIPLE = 3.0
"""A column the replicates do not move gets this multiple of the largest relative difference
measured across arithmetic settings (`across_settings`): one other setting is one draw."""
RESOLUTION = {"C1.value": 1.0, "C1_control.value": 1.0}
"""The least a claim can move by: C1 counts conditions with binned rho = -1."""
LOG_COLUMNS = {"ratio", "ratio_control"}
"""T4's survival ratios, banded on the log scale (a claim: `contrary = "inverse"`)."""
CLAIM_TABLE = {"C1": "T3_survival", "C1_control": "T3_survival", "C2": "T4_ratios",
               "C2_control": "T4_ratios", "C3": "T5_transfer", "C4": "T6_fragility_causal",
               "C4_per_firing": "T6_fragility_causal"}
"""The table each claim is computed from: the claim is verified at that table's multiple."""

Tables = dict[str, list[dict]]


def _number(x: object) -> float:
    if x is None:
        return math.nan
    if isinstance(x, bool | int | float):
        return float(x)
    raise TypeError


def _log(x: float) -> float:
    """A ratio on the log scale; NaN where it has none (0, infinite, undefined)."""
    return math.log(x) if math.isfinite(x) and x > 0 else math.nan


def on_log_scale(column: str) -> bool:
    return column in LOG_COLUMNS


def claim_on_log_scale(spec: ClaimSpec) -> bool:
    return spec.contrary == "inverse"


def band_tolerance(band: float, log: bool) -> Tolerance:
    """The tolerance verify applies for a band (an amount, or a log factor for a ratio)."""
    return Tolerance(FLOOR_ABS, FLOOR_REL, log=band) if log else Tolerance(band, FLOOR_REL)


def _sd(values: list[float]) -> float:
    """Sample sd of the finite values (a NaN replicate, e.g. a rho of constant bins, is left
    out as the mean leaves it out); 0 below two of them."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2 or min(finite) == max(finite):
        return 0.0
    mean = math.fsum(finite) / len(finite)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


def _dof(values: list[float]) -> int:
    return max(0, sum(1 for v in values if math.isfinite(v)) - 1)


def widening(dof: int) -> float:
    """How much an sd estimated from `dof` degrees of freedom is widened before a band is
    made of it: Student's t over the normal quantile at 99.5 % (4.3 at 2 dof, 1.4 at 6, 1.1
    at 20), so that a multiple means the same whether the sd rests on three replicates of
    one row or on thirty rows."""
    if dof <= 0:
        return 1.0
    return float(stats.t.ppf(WIDEN_LEVEL, dof) / stats.norm.ppf(WIDEN_LEVEL))


@dataclass(frozen=True)
class Sd:
    """A pooled standard deviation and the degrees of freedom it rests on."""

    value: float
    dof: int

    @property
    def widened(self) -> float:
        return self.value * widening(self.dof)


def _columns(tables: Tables) -> dict[tuple[str, str], None]:
    out: dict[tuple[str, str], None] = {}
    for name, rows in tables.items():
        for row in rows:
            for col, value in row.items():
                if col != "id" and col not in EXACT_BY_CONSTRUCTION and \
                        isinstance(value, int | float | type(None)):
                    out[(name, col)] = None
    return out


def model_of(row: dict) -> str:
    """The model a table row describes ('' for a table without a model column)."""
    return str(row.get("model", ""))


def _pooled(vectors: list[tuple[float, ...]]) -> Sd:
    dofs = [_dof(list(v)) for v in vectors]
    squares = math.fsum(_sd(list(v)) ** 2 * d for v, d in zip(vectors, dofs, strict=True))
    dof = sum(dofs)
    return Sd(math.sqrt(squares / dof) if dof else 0.0, dof)


ColumnSd = dict[str, Sd]
"""A column's pooled sd per model (model_of)."""


def column_sds(per_replicate: list[Tables]) -> dict[tuple[str, str], ColumnSd]:
    """Per (table, column), per model: the pooled sd over the model's rows of each row's sd
    over replicates (of its log, for a ratio: `on_log_scale`).

    Rows whose replicate values are identical to an earlier row's are one measurement
    printed twice (a per-model number in every condition's row, such as the causal score's
    correlation with the firing rate) and are pooled once.
    """
    out = {}
    for name, col in _columns(per_replicate[0]):
        vectors: dict[str, dict[tuple[float, ...], None]] = {}
        scale = _log if on_log_scale(col) else float
        for i, row in enumerate(per_replicate[0][name]):
            values = tuple(scale(_number(rep[name][i].get(col))) for rep in per_replicate)
            vectors.setdefault(model_of(row), {})[values] = None
        by_model = {model: _pooled(list(v)) for model, v in vectors.items()}
        whole = _pooled([v for per in vectors.values() for v in per])
        # never narrower than the whole column's: a model of two rows has four dof
        out[(name, col)] = {model: max(sd, whole, key=lambda x: x.widened)
                            for model, sd in by_model.items()}
    return out


def feature_floors(tables: Tables, n_replicates: int) -> dict[tuple[str, str], float]:
    """Per (table, column) of counts and rates over features: the band's floor in features
    (FEATURE_FLOOR features, over the table's fewest features for a rate; a bin's rate is
    over a fifth of them with five bins). A yes/no column (T4's ratio_usable) is the fraction
    of the compared run's `n_replicates` replicates that say yes: its floor is one of them
    changing its answer (1 / n_replicates)."""
    out: dict[tuple[str, str], float] = {}
    for name, rows in tables.items():
        columns = list(rows[0]) if rows else []
        for col in columns:
            if any(isinstance(r.get(col), bool) for r in rows):
                out[(name, col)] = 1 / n_replicates
        n_bins = sum(1 for c in columns if c.startswith("survival_bin")) or 1
        sizes = [_number(r.get(k)) for r in rows for k in ("n_alive", "n_defined") if k in r]
        fewest = min((n for n in sizes if math.isfinite(n) and n > 0), default=math.nan)
        for col in columns:
            if col in COUNT_COLUMNS:
                out[(name, col)] = float(FEATURE_FLOOR)
            elif col.startswith(RATE_COLUMNS) and math.isfinite(fewest):
                per_bin = n_bins if "_bin" in col else 1
                out[(name, col)] = FEATURE_FLOOR * per_bin / fewest
    return out


def _claim_values(per_replicate: list[dict], spec: ClaimSpec, scaled: bool = False
                  ) -> list[float]:
    """The claim's number in each replicate (`scaled`: on its band's scale, the log of a
    ratio)."""
    values = [_number((rep.get(spec.claim) or {}).get(spec.field)) for rep in per_replicate]
    return [_log(v) for v in values] if scaled and claim_on_log_scale(spec) else values


@dataclass(frozen=True)
class Across:
    """The largest difference of a column between the blessed run and runs at other
    arithmetic, relative to the blessed value."""

    rel: float
    where: str
    """The row and the other run where it was largest."""


def across_settings(per_replicate: list[Tables],
                    others: dict[str, dict[str, list[dict]]]) -> dict[tuple[str, str], Across]:
    """Per (table, column) that the replicates do not move: the largest relative difference
    between the blessed means and each other run's table (`others`: a label -> tables of
    rows keyed by id, each cell as the CSV writes it)."""
    means: dict[tuple[str, str, str], float] = {}
    for name, col in _columns(per_replicate[0]):
        for i, row in enumerate(per_replicate[0][name]):
            means[(name, col, row["id"])] = _mean(
                [_number(rep[name][i].get(col)) for rep in per_replicate])
    sds = column_sds(per_replicate)
    out: dict[tuple[str, str], Across] = {}
    for (name, col), by_model in sds.items():
        if any(sd.value for sd in by_model.values()):
            continue  # the replicates move it: its band is theirs
        worst = Across(0.0, "")
        for label, tables in others.items():
            for row in tables.get(name, []):
                got = cell_number(str(row.get(col, "")))
                blessed = means.get((name, col, row["id"]))
                if blessed is None or got is None or not math.isfinite(got) \
                        or not math.isfinite(blessed) or blessed == 0:
                    continue
                rel = abs(got - blessed) / abs(blessed)
                if rel > worst.rel:
                    worst = Across(rel, f"{row['id']} in {label}")
        out[(name, col)] = worst
    return out


def claim_sds(per_replicate: list[dict], specs: list[ClaimSpec]) -> dict[str, Sd]:
    """Per claim check (its spec name): the sd of its number over replicates (of its log, for
    a ratio)."""
    out = {}
    for spec in specs:
        if f"{spec.claim}.{spec.field}" not in EXACT_CLAIMS:
            values = _claim_values(per_replicate, spec, scaled=True)
            out[spec.name] = Sd(_sd(values), _dof(values))
    return out


def column_band(sd: Sd, multiple: float, floor: float = 0.0) -> float:
    return max(FLOOR_ABS, floor, multiple * sd.widened)


def claim_band(spec: ClaimSpec, sd: Sd, multiple: float) -> float:
    return max(FLOOR_ABS, RESOLUTION.get(f"{spec.claim}.{spec.field}", 0.0),
               multiple * sd.widened)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def _outside(got: float, expected: float, band: float, log: bool = False) -> bool:
    """Whether verify would fail `got` against `expected` with this band."""
    if math.isnan(got) or math.isnan(expected):
        return math.isnan(got) != math.isnan(expected)
    low, high = band_tolerance(band, log).bounds(expected)
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


def claim_table(spec: ClaimSpec) -> str:
    """The table a claim is computed from ('' for a claim this module does not know)."""
    return CLAIM_TABLE.get(spec.claim, "")


def leave_one_out(tables: list[Tables], claims: list[dict], specs: list[ClaimSpec],
                  multiple: float, table: str | None = None) -> LeaveOneOut:
    """Verify each replicate against the mean and bands of the other N - 1: every cell and
    claim, or those of one `table` and the claims read from it. A number that is undefined
    in the replicate left out or in all the others (a rho of bins that tie, a ratio over no
    surviving feature: NaN or infinite) is not compared, as a mean over replicates leaves it
    out."""
    checked, failed, worst = 0, 0, []
    for i in range(len(tables)):
        rest_t, rest_c = tables[:i] + tables[i + 1:], claims[:i] + claims[i + 1:]
        # the held-out run is one replicate: a yes/no answer of its own moves by a whole 1
        sds, floors = column_sds(rest_t), feature_floors(rest_t[0], 1)
        for (name, col), by_model in sds.items():
            if table is not None and name != table:
                continue
            floor = floors.get((name, col), 0.0)
            for j, row in enumerate(tables[i][name]):
                band = column_band(by_model[model_of(row)], multiple, floor)
                exp = _mean([_number(rep[name][j].get(col)) for rep in rest_t])
                got = _number(row.get(col))
                if not (math.isfinite(got) and math.isfinite(exp)):
                    continue  # undefined in this replicate or the rest: the mean leaves it out
                checked += 1
                if _outside(got, exp, band, on_log_scale(col)):
                    failed += 1
                    worst.append(f"replicate {i}: {name}[{row['id']}].{col}")
        for spec in specs:
            if f"{spec.claim}.{spec.field}" in EXACT_CLAIMS or \
                    table is not None and claim_table(spec) != table:
                continue
            rest = _claim_values(rest_c, spec)
            got = _claim_values([claims[i]], spec)[0]
            scaled = _claim_values(rest_c, spec, scaled=True)
            if not math.isfinite(got) or _dof(scaled) < 1:
                continue  # undefined here, or too few defined others to make a band of
            checked += 1
            if _outside(got, _mean(rest), claim_band(spec, Sd(_sd(scaled), _dof(scaled)),
                                                     multiple), claim_on_log_scale(spec)):
                failed += 1
                worst.append(f"replicate {i}: claim {spec.name}")
    return LeaveOneOut(multiple, checked, failed, worst[:5])


def choose_multiple(tables: list[Tables], claims: list[dict], specs: list[ClaimSpec],
                    table: str | None = None) -> tuple[float, list[LeaveOneOut]]:
    """The smallest multiple at which leave-one-out fails nothing (of one `table` and its
    claims, or of everything), and the leave-one-out result of every multiple tried;
    math.inf when none passes."""
    trials = [leave_one_out(tables, claims, specs, m, table) for m in MULTIPLES]
    passing = [t.multiple for t in trials if t.failed == 0]
    return (min(passing) if passing else math.inf), trials


def choose_multiples(tables: list[Tables], claims: list[dict], specs: list[ClaimSpec]
                     ) -> dict[str, tuple[float, list[LeaveOneOut]]]:
    """`choose_multiple` for each table and the claims read from it."""
    return {name: choose_multiple(tables, claims, specs, name) for name in tables[0]}


def verify_multiple(loo_multiple: float, n: int) -> float:
    """The multiple of the verify bands, from the multiple at which leave-one-out passed: the
    same number of sds of the difference each compares (one replicate against the mean of
    n - 1 there, a mean of n against a mean of n in `repro verify`)."""
    ratio = math.sqrt(2 / n) / math.sqrt(1 + 1 / (n - 1))
    return max(MIN_MULTIPLE, loo_multiple * ratio)
