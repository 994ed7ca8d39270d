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
- Rates over features (survival in every form, the seed floor, identity rates, shared and
  fragile fractions: `RATE_COLUMNS`) are banded on the arcsine-square-root scale: a rate p
  over n features has sd sqrt(p (1 - p) / n), so a model's rows at rates 0.04-0.35 do not
  share one sd in rate units, and a band pooled over them was too narrow for the high rates
  (measured: a correct small run on an AVX2 CPU put SmolLM2's Wanda 30 % bin-4 survival 0.35
  against a blessed 0.29, 4.3 pooled sds out, the only cell of 528 to fail). asin(sqrt(p))
  has sd 1 / (2 sqrt(n)) at every p: one pooled sd fits every row, and the band, symmetric
  on that scale, is narrow near 0 and wider in the middle of [0, 1] in rate units.
- p-values (RQ1's and RQ5's Spearman tests: `P_COLUMNS`) are banded on the normal-quantile
  scale, z = Phi^-1(1 - p / 2), where a test's p is linear in its statistic: between rows a
  p-value spans orders of magnitude (1e-12 beside 0.3), and one band in p was either far too
  wide for the small ones or failed the large (measured on the beyond run: SmolLM2
  magnitude 50 %'s feature_p set T3's leave-one-out multiple at 15; on z, 8, set by rates).
  The transforms: repro.outputs.scales. A column with a value its scale cannot hold (a p of
  0, a ratio of 0) is banded on the linear scale (`column_scales`).
- Ratios (T4's Wanda / magnitude survival ratios, C2) are banded on the log scale
  (`LOG_COLUMNS`, a claim whose contrary is its inverse): a ratio of two rates over a few
  dozen features moves by a factor, and on that scale its opposite finding, the inverse,
  lies as far from 1 as the finding. Measured on the small profile: one replicate's control
  ratio lay 8 widened sds from the others' on the linear scale.
- MULTIPLE is measured, not assumed, per table (repro.outputs.multiples): each replicate in
  turn is verified against bands made from the others (leave one out) and the smallest
  multiple at which no cell of the table and no claim read from it (`CLAIM_TABLE`) fails is
  taken. Per table, because tables differ in how their noise is spread over rows:
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
from repro.outputs.scales import ANGLE, LINEAR, LOG, Z, to_scale
from repro.outputs.verify import cell_number

FLOOR_ABS, FLOOR_REL = 1e-9, 1e-6
"""What a last-bit difference in a float can move a number by."""
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
P_COLUMNS = {"feature_p", "causal_p", "causal_p_per_firing"}
"""Two-sided p-values, banded on the normal-quantile scale (repro.outputs.scales.Z): a
p-value spans orders of magnitude between a table's rows, its quantile does not."""
CLAIM_TABLE = {"C1": "T3_survival", "C1_control": "T3_survival", "C2": "T4_ratios",
               "C2_control": "T4_ratios", "C3": "T5_transfer", "C4": "T6_fragility_causal",
               "C4_per_firing": "T6_fragility_causal"}
"""The table each claim is computed from: the claim is verified at that table's multiple."""

Tables = dict[str, list[dict]]


def number(x: object) -> float:
    if x is None:
        return math.nan
    if isinstance(x, bool | int | float):
        return float(x)
    raise TypeError


def scale_of(column: str) -> str:
    """The scale a column is banded on (repro.outputs.scales): LOG for a ratio, ANGLE for a
    rate over features, Z for a p-value, LINEAR for everything else."""
    if column in LOG_COLUMNS:
        return LOG
    if column in P_COLUMNS:
        return Z
    return ANGLE if column.startswith(RATE_COLUMNS) else LINEAR


def claim_on_log_scale(spec: ClaimSpec) -> bool:
    return spec.contrary == "inverse"


def band_tolerance(band: float, scale: str, floor: float = 0.0) -> Tolerance:
    """The tolerance verify applies for a band on its scale: an amount on the linear scale,
    else a width on its scale that is never narrower than the `floor` in the number's own
    units (a rate's floor in features)."""
    if scale == LINEAR:
        return Tolerance(max(band, floor), FLOOR_REL)
    return Tolerance(max(FLOOR_ABS, floor), FLOOR_REL, scale=scale, width=band)


def sample_sd(values: list[float]) -> float:
    """Sample sd of the finite values (a NaN replicate, e.g. a rho of constant bins, is left
    out as the mean leaves it out); 0 below two of them."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2 or min(finite) == max(finite):
        return 0.0
    mean = math.fsum(finite) / len(finite)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


def dof_of(values: list[float]) -> int:
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
    dofs = [dof_of(list(v)) for v in vectors]
    squares = math.fsum(sample_sd(list(v)) ** 2 * d for v, d in zip(vectors, dofs, strict=True))
    dof = sum(dofs)
    return Sd(math.sqrt(squares / dof) if dof else 0.0, dof)


ColumnSd = dict[str, Sd]
"""A column's pooled sd per model (model_of)."""


Scales = dict[tuple[str, str], str]
"""The scale of each (table, column) of a bless (`column_scales`)."""


def column_scales(per_replicate: list[Tables]) -> Scales:
    """Per (table, column): its scale (`scale_of`), or LINEAR where a replicate holds a finite
    value that scale cannot (a p-value of exactly 0, which scipy's t approximation gives a
    rank correlation of +-1 over a handful of features; a ratio of 0): on its own scale that
    one value would lie infinitely far from the others, on the linear scale it is a number
    like them. Decided once from every replicate, so that leave-one-out and the written
    bands use one scale."""
    out = {}
    for name, col in _columns(per_replicate[0]):
        scale = scale_of(col)
        values = [number(row.get(col)) for rep in per_replicate for row in rep[name]]
        if any(math.isfinite(v) and math.isnan(to_scale(v, scale)) for v in values):
            scale = LINEAR
        out[(name, col)] = scale
    return out


def column_sds(per_replicate: list[Tables], scales: Scales | None = None
               ) -> dict[tuple[str, str], ColumnSd]:
    """Per (table, column), per model: the pooled sd over the model's rows of each row's sd
    over replicates, on the column's scale (`scales`, else `column_scales`: the log of a
    ratio, the arcsine-square-root of a rate, the normal quantile of a p-value).

    Rows whose replicate values are identical to an earlier row's are one measurement
    printed twice (a per-model number in every condition's row, such as the causal score's
    correlation with the firing rate) and are pooled once.
    """
    scales = column_scales(per_replicate) if scales is None else scales
    out = {}
    for name, col in _columns(per_replicate[0]):
        vectors: dict[str, dict[tuple[float, ...], None]] = {}
        scale = scales[(name, col)]
        for i, row in enumerate(per_replicate[0][name]):
            values = tuple(to_scale(number(rep[name][i].get(col)), scale)
                           for rep in per_replicate)
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
        sizes = [number(r.get(k)) for r in rows for k in ("n_alive", "n_defined") if k in r]
        fewest = min((n for n in sizes if math.isfinite(n) and n > 0), default=math.nan)
        for col in columns:
            if col in COUNT_COLUMNS:
                out[(name, col)] = float(FEATURE_FLOOR)
            elif col.startswith(RATE_COLUMNS) and math.isfinite(fewest):
                per_bin = n_bins if "_bin" in col else 1
                out[(name, col)] = FEATURE_FLOOR * per_bin / fewest
    return out


def claim_values(per_replicate: list[dict], spec: ClaimSpec, scaled: bool = False
                  ) -> list[float]:
    """The claim's number in each replicate (`scaled`: on its band's scale, the log of a
    ratio)."""
    values = [number((rep.get(spec.claim) or {}).get(spec.field)) for rep in per_replicate]
    return [to_scale(v, LOG) for v in values] if scaled and claim_on_log_scale(spec) else values


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
            means[(name, col, row["id"])] = finite_mean(
                [number(rep[name][i].get(col)) for rep in per_replicate])
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
            values = claim_values(per_replicate, spec, scaled=True)
            out[spec.name] = Sd(sample_sd(values), dof_of(values))
    return out


def column_band(sd: Sd, multiple: float, floor: float = 0.0, scale: str = LINEAR) -> float:
    """A column's band on its scale: `multiple` widened sds, never below the round-off floor,
    nor, on the linear scale, below `floor` (on another scale the floor, in the number's own
    units, is the tolerance's abs: `band_tolerance`)."""
    return max(FLOOR_ABS, floor if scale == LINEAR else 0.0, multiple * sd.widened)


def claim_band(spec: ClaimSpec, sd: Sd, multiple: float) -> float:
    return max(FLOOR_ABS, RESOLUTION.get(f"{spec.claim}.{spec.field}", 0.0),
               multiple * sd.widened)


def finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def claim_table(spec: ClaimSpec) -> str:
    """The table a claim is computed from ('' for a claim this module does not know)."""
    return CLAIM_TABLE.get(spec.claim, "")
