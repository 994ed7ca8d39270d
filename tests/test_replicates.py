"""Replicates: means with their spread (repro.outputs.replicates) and the bands bless takes
from them (repro.outputs.bands), each against a hand computation or scipy, with controls."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from repro.outputs import bands, bands_text, multiples
from repro.outputs.expected import EXPECTED_ROOT, load_claims
from repro.outputs.replicates import combine, combine_claims, combine_tables, spread
from repro.study.reader import load_study, profile_path
from repro.study.spec import REPLICATE_SEED_STRIDE

PAPER = load_claims(EXPECTED_ROOT / "paper")


def test_spread_is_the_mean_sd_and_t_interval_scipy_gives() -> None:
    values = [0.31, 0.35, 0.40, math.nan]
    s = spread(values)
    finite = np.array(values[:3])
    low, high = stats.t.interval(0.95, 2, loc=finite.mean(), scale=stats.sem(finite))
    assert s.n == 3 and s.mean == pytest.approx(finite.mean())
    assert s.sd == pytest.approx(finite.std(ddof=1))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))
    assert math.isnan(s.values[3])
    one = spread([0.5])
    assert (one.n, one.sd, one.ci_low, one.ci_high) == (1, 0.0, 0.5, 0.5)


@pytest.mark.parametrize("cells,value,has_spread", [
    (["a", "a", "a"], "a", False),           # text the replicates share
    ([0.7, 0.7, 0.7], 0.7, True),            # a number they do not move: sd 0
    ([True, True, True], 1.0, True),         # a flag they agree on: still a fraction
    ([True, False, True], 2 / 3, True),      # a flag they do not: the fraction true
    ([1, 2, 3], 2.0, True),
    ([math.nan, math.nan], None, False),     # NaN everywhere stays NaN
])
def test_combine_keeps_what_replicates_share_and_averages_the_rest(cells, value,
                                                                   has_spread) -> None:
    got, s = combine(cells)
    if value is None:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(value) and type(got) is type(value)
    assert (s is not None) == has_spread


def test_text_that_differs_between_replicates_is_kept_whole() -> None:
    got, s = combine(["gemma/30", "gemma/50"])
    assert got == ["gemma/30", "gemma/50"] and s is None


def _tables(survival: list[float]) -> list[dict]:
    return [{"T3_survival": [{"id": "m/wanda/50", "sparsity": 0.5, "survival": v}]}
            for v in survival]


def test_combine_tables_averages_cells_and_lists_their_spread() -> None:
    tables, cells = combine_tables(_tables([0.2, 0.3, 0.4]))
    assert tables["T3_survival"][0] == {"id": "m/wanda/50", "sparsity": 0.5,
                                        "survival": pytest.approx(0.3)}
    by = {c["column"]: c for c in cells}
    assert by["survival"]["sd"] == pytest.approx(0.1) and by["sparsity"]["sd"] == 0.0
    broken = _tables([0.2, 0.3])
    broken[1]["T3_survival"][0]["id"] = "m/wanda/60"
    with pytest.raises(ValueError, match="disagree on row 0"):
        combine_tables(broken)


def test_combine_claims_keeps_every_replicate_and_the_spread_of_each_field() -> None:
    reps = [{"C2": {"value": v, "where": w, "per": {"x": v}}}
            for v, w in ((2.0, "a"), (3.0, "a"), (4.0, "b"))]
    c2 = combine_claims(reps)["C2"]
    assert c2["value"] == pytest.approx(3.0) and c2["where"] == ["a", "a", "b"]
    assert c2["spread"]["value"]["sd"] == pytest.approx(1.0) and c2["n_replicates"] == 3
    assert [r["per"]["x"] for r in c2["replicates"]] == [2.0, 3.0, 4.0]
    assert "per" not in c2


def test_replicate_runs_have_their_own_seeds_and_folders() -> None:
    study = load_study(profile_path("tiny"))
    run = next(r for r in study.runs if r.is_control)
    twin = run.replicated(2)
    assert twin.seed == run.seed + 2 * REPLICATE_SEED_STRIDE and twin.base_seed == run.seed
    assert twin.id == f"{run.id}/replicate-2" and twin.replicated(0) == run
    pruned = next(r for r in study.runs if not r.variant.is_dense)
    assert pruned.replicated(1).dense_reference == pruned.dense_reference.replicated(1)


# ---- bands ---------------------------------------------------------------------------------

def _noisy(rng: np.random.Generator, n: int, rows: int, sd: float) -> list[dict]:
    """n replicates of a table whose every row is its own mean plus N(0, sd) noise."""
    means = rng.uniform(0.2, 0.8, rows)
    return [{"T3_survival": [{"id": f"c{i}", "survival": float(means[i] + rng.normal(0, sd))}
                             for i in range(rows)]} for _ in range(n)]


def _claims(values: list[float]) -> list[dict]:
    return [{"C2": {"value": v}} for v in values]


def test_column_sd_pools_the_rows_sds() -> None:
    reps = [{"T": [{"id": "a", "x": a}, {"id": "b", "x": b}]}
            for a, b in ((1.0, 10.0), (2.0, 10.0), (3.0, 10.0))]
    # row a has sd 1, row b sd 0, 2 dof each: pooled sqrt((2 * 1 + 2 * 0) / 4)
    sd = bands.column_sds(reps)[("T", "x")][""]  # a table without a model column: one group
    assert sd.value == pytest.approx(math.sqrt(0.5)) and sd.dof == 4
    same = [{"T": [{"id": "a", "x": a}, {"id": "b", "x": a}]} for a in (1.0, 2.0, 3.0)]
    assert bands.column_sds(same)[("T", "x")][""].dof == 2  # one measurement printed twice


def _two_models(rng: np.random.Generator, n: int, loud: float, quiet: float) -> list[dict]:
    """n replicates of a table with three rows of a loud model and three of a quiet one."""
    def row(i: int, model: str, sd: float) -> dict:
        return {"id": f"{model}/{i}", "model": model, "mse": 10.0 + i + rng.normal(0, sd)}
    return [{"T5_transfer": [row(i, "loud", loud) for i in range(3)]
             + [row(i, "quiet", quiet) for i in range(3)]} for _ in range(n)]


def test_a_column_is_pooled_per_model_and_never_narrower_than_the_whole_column() -> None:
    """Models differ in scale: a loud model's rows get their own, wider sd; a quiet model's
    rows keep the whole column's, since two or three rows of one model are few dof."""
    reps = _two_models(np.random.default_rng(3), 3, 1.0, 0.01)
    sds = bands.column_sds(reps)[("T5_transfer", "mse")]
    loud = [[rep["T5_transfer"][i]["mse"] for rep in reps] for i in range(3)]
    assert sds["loud"].value == pytest.approx(
        math.sqrt(np.mean([np.var(v, ddof=1) for v in loud])))
    assert sds["loud"].dof == 6
    assert sds["quiet"].widened == pytest.approx(bands._pooled(
        [tuple(rep["T5_transfer"][i]["mse"] for rep in reps) for i in range(6)]).widened)
    assert sds["loud"].widened > sds["quiet"].widened


def test_per_model_bands_are_written_read_back_and_used_by_verify(tmp_path) -> None:
    from repro.outputs.expected import load_tolerances
    from repro.outputs.verify import Table, compare_tables

    reps = _two_models(np.random.default_rng(4), 3, 1.0, 0.01)
    path = tmp_path / "tolerances.toml"
    path.write_text(bands_text.tolerances_text("p", reps, _claims([2.0, 2.1, 1.9]), PAPER, 4.0, [],
                                          "run"))
    tols = load_tolerances(path, "p")
    sds = bands.column_sds(reps)[("T5_transfer", "mse")]
    loud, quiet = (tols.get("T5_transfer", "mse", m).abs for m in ("loud", "quiet"))
    assert loud == pytest.approx(4.0 * sds["loud"].widened, rel=1e-2)
    assert quiet == pytest.approx(4.0 * sds["quiet"].widened, rel=1e-2) and quiet < loud
    assert tols.get("T5_transfer", "mse").abs == pytest.approx(loud)  # other rows: the widest

    def table(shift: float) -> Table:
        rows = {f"{m}/0": {"id": f"{m}/0", "model": m, "mse": str(10.0 + shift)}
                for m in ("loud", "quiet")}
        return Table(["id", "model", "mse"], rows, [])

    # the same move passes in the loud model's row and fails in the quiet one's
    move = (loud + quiet) / 2
    verdicts = {c.name: c.verdict for c in compare_tables("T5_transfer", table(0.0),
                                                          table(move), tols)
                if c.name.endswith(".mse")}
    assert verdicts == {"T5_transfer[loud/0].mse": "pass", "T5_transfer[quiet/0].mse": "fail"}


def test_the_verify_multiple_is_the_leave_one_out_multiple_in_the_verify_comparison() -> None:
    """One replicate against the mean of two differs by 1.22 sd, a mean of three against a
    mean of three by 0.82 sd: the same confidence takes 2/3 of the multiple."""
    assert multiples.verify_multiple(9.0, 3) == pytest.approx(6.0)
    assert multiples.verify_multiple(12.0, 5) == pytest.approx(
        12.0 * math.sqrt(2 / 5) / math.sqrt(1 + 1 / 4))
    assert multiples.verify_multiple(2.0, 3) == multiples.MIN_MULTIPLE


def test_a_yes_no_cell_of_replicates_is_the_fraction_that_say_yes() -> None:
    from repro.outputs.replicates import combine

    assert combine([True, True, True])[0] == 1.0  # a number even when all agree
    assert combine([True, False, True])[0] == pytest.approx(2 / 3)
    assert combine([True])[0] is True  # one replicate: the cell as it is
    floors = bands.feature_floors({"T4_ratios": [{"id": "m/50", "ratio_usable": True}]}, 3)
    assert floors[("T4_ratios", "ratio_usable")] == pytest.approx(1 / 3)  # one flip


def test_an_sd_of_few_degrees_of_freedom_is_widened_by_students_t() -> None:
    assert bands.widening(2) == pytest.approx(stats.t.ppf(0.995, 2) / stats.norm.ppf(0.995))
    assert bands.widening(2) > 3.8 > bands.widening(6) > 1.4 > bands.widening(200) > 1.0


def test_leave_one_out_passes_noise_and_catches_a_planted_shift() -> None:
    rng = np.random.default_rng(0)
    reps = _noisy(rng, 3, 17, 0.01)
    claims = _claims([2.0, 2.1, 1.95])
    c2 = [s for s in PAPER if s.name == "C2"]
    multiple, trials = multiples.choose_multiple(reps, claims, c2)
    assert multiple < math.inf
    assert next(t for t in trials if t.multiple == multiple).failed == 0
    shifted = [dict(r) for r in reps]  # planted: one replicate's condition moved by 20 sd
    shifted[1] = {"T3_survival": [dict(row) for row in reps[1]["T3_survival"]]}
    shifted[1]["T3_survival"][4]["survival"] += 0.2
    caught = multiples.leave_one_out(shifted, claims, c2, multiple)
    assert caught.failed and "replicate 1: T3_survival[c4].survival" in caught.worst
    worse, _ = multiples.choose_multiple(shifted, claims, c2)
    assert worse > multiple  # the disagreement costs a wider band, or no bless at all


def test_claim_bands_never_go_below_the_claims_resolution() -> None:
    c1 = next(s for s in PAPER if s.name == "C1")
    assert bands.claim_band(c1, bands.Sd(0.0, 2), 3.0) == 1.0  # C1 counts conditions
    c2 = next(s for s in PAPER if s.name == "C2")
    assert bands.claim_band(c2, bands.Sd(0.0, 2), 3.0) == bands.FLOOR_ABS
    assert bands.claim_band(c2, bands.Sd(0.1, 2), 3.0) == pytest.approx(
        0.3 * bands.widening(2))


def test_counts_and_rates_of_features_have_a_floor_in_features() -> None:
    table = {"T3_survival": [{"id": "a", "n_alive": 400, "survival": 0.5, "survival_bin1": 0.4,
                              "survival_bin2": 0.6, "n_survived": 200, "feature_rho": 0.1}]}
    floors = bands.feature_floors(table, 3)
    assert floors[("T3_survival", "n_survived")] == bands.FEATURE_FLOOR
    assert floors[("T3_survival", "survival")] == pytest.approx(bands.FEATURE_FLOOR / 400)
    assert floors[("T3_survival", "survival_bin1")] == pytest.approx(
        bands.FEATURE_FLOOR * 2 / 400)  # two bins: each over half the features
    assert ("T3_survival", "feature_rho") not in floors


def test_tolerances_text_reads_back_as_the_bands_it_states(tmp_path) -> None:
    from repro.outputs.expected import load_tolerances

    rng = np.random.default_rng(1)
    reps = _noisy(rng, 4, 10, 0.02)
    claims = _claims([2.0, 2.2, 1.9, 2.1])
    multiple, trials = multiples.choose_multiple(reps, claims, PAPER)
    path = tmp_path / "tolerances.toml"
    path.write_text(bands_text.tolerances_text("p", reps, claims, PAPER, multiple, trials, "run"))
    tols = load_tolerances(path, "p")
    sd = bands.column_sds(reps)[("T3_survival", "survival")][""]  # of asin(sqrt(rate))
    assert tols.get("T3_survival", "survival").width == pytest.approx(multiple * sd.widened,
                                                                      rel=1e-2)
    # a ratio: banded on the log scale, around the mean, in both directions by one factor
    c2 = tols.get("claims", "C2")
    assert c2.scale == "log" and c2.width == pytest.approx(
        multiple * np.std(np.log([2.0, 2.2, 1.9, 2.1]), ddof=1) * bands.widening(3), rel=1e-2)
    low, high = c2.bounds(2.05)
    assert low * high == pytest.approx(2.05 ** 2, rel=1e-6)
    assert "C1_of" not in tols.by_table["claims"]  # exact by construction


def test_a_ratio_is_banded_on_the_log_scale_so_its_inverse_fails() -> None:
    """A survival ratio of 5.7 that replicates move by a factor of about 1.15: on the linear
    scale its band (3 widened sds of 0.87) reaches below 0 and passes the inverse, 0.17, on
    the log scale it does not, and a ratio twice the expected one still passes."""
    claims = _claims([6.7, 5.5, 5.0])
    c2 = [s for s in PAPER if s.name == "C2"]
    linear = 3.0 * np.std([6.7, 5.5, 5.0], ddof=1) * bands.widening(2)
    assert 5.73 - linear < 1 / 5.73  # what the band on the linear scale let through
    sd = bands.claim_sds(claims, c2)["C2"]
    assert sd.value == pytest.approx(np.std(np.log([6.7, 5.5, 5.0]), ddof=1))
    tol = bands.band_tolerance(bands.claim_band(c2[0], sd, 3.0), bands.LOG)
    low, high = tol.bounds(5.73)
    assert low > 1 / 5.73 and low < 5.73 / 2 and high > 2 * 5.73
    assert multiples.outside(1 / 5.73, 5.73, tol.width, bands.LOG)
    assert not multiples.outside(5.73 * 1.3, 5.73, tol.width, bands.LOG)


def test_a_band_wider_than_its_columns_range_says_it_checks_nothing(tmp_path) -> None:
    """Survival rates (in [0, 1]) that replicates move by sd 0.2 get a band of 20 x their
    widened sd: wider than the whole range (a quarter turn on the angle scale), and the note
    says so; rates moved by 0.001 do not."""
    from repro.outputs.expected import load_tolerances

    rng = np.random.default_rng(2)
    for noise, wide in ((0.2, True), (0.001, False)):
        reps = _noisy(rng, 3, 6, noise)
        path = tmp_path / "tolerances.toml"
        path.write_text(bands_text.tolerances_text("p", reps, _claims([2.0, 2.1, 1.9]), PAPER, 20.0,
                                              [], "run"))
        tol = load_tolerances(path, "p").get("T3_survival", "survival")
        assert tol.scale == "angle" and (tol.width >= math.pi / 2) == wide
        assert ("wider than every value in [0, 1]: verify reports it UNCHECKED"
                in tol.note) == wide


def test_a_column_the_replicates_do_not_move_takes_its_band_from_other_arithmetic(
        tmp_path) -> None:
    """Perplexity is the same in every replicate (the model is not retrained) but moves with
    the kernels: its band is 3x the largest relative difference to a run at other arithmetic,
    and a column the replicates move keeps its replicate band whatever that run says."""
    from repro.outputs.expected import load_tolerances

    reps = [{"T1_pruning": [{"id": "m/wanda/50", "model": "m", "perplexity": 80.0,
                             "ratio": 1.2},
                            {"id": "m/dense/0", "model": "m", "perplexity": 70.0, "ratio": 1.0}],
             "T3_survival": [{"id": "m/wanda/50", "model": "m", "survival": s}]}
            for s in (0.30, 0.32, 0.31)]
    other = {"avx2": {"T1_pruning": [{"id": "m/wanda/50", "perplexity": "80.4", "ratio": "1.2"},
                                     {"id": "m/dense/0", "perplexity": "70.07", "ratio": "1"}],
                      "T3_survival": [{"id": "m/wanda/50", "survival": "0.9"}]}}
    found = bands.across_settings(reps, other)
    assert found[("T1_pruning", "perplexity")].rel == pytest.approx(0.005)
    assert found[("T1_pruning", "perplexity")].where == "m/wanda/50 in avx2"
    assert found[("T1_pruning", "ratio")].rel == 0.0
    assert ("T3_survival", "survival") not in found  # moved by the replicates
    path = tmp_path / "tolerances.toml"
    path.write_text(bands_text.tolerances_text("p", reps, _claims([2.0, 2.1, 1.9]), PAPER, 4.0, [],
                                          "run", found))
    tols = load_tolerances(path, "p")
    assert tols.get("T1_pruning", "perplexity").rel == pytest.approx(0.015)
    assert "largest relative difference 0.005 (m/wanda/50 in avx2); band 3x" in \
        tols.get("T1_pruning", "perplexity").note
    assert tols.get("T1_pruning", "ratio").rel == bands.FLOOR_REL
    sd = bands.column_sds(reps)[("T3_survival", "survival")]["m"]
    assert tols.get("T3_survival", "survival", "m").width == pytest.approx(4.0 * sd.widened,
                                                                           rel=1e-2)


def test_leave_one_out_leaves_out_a_number_a_replicate_does_not_have() -> None:
    """A control ratio over no surviving feature (inf) or a rho of tied bins (NaN) in one
    replicate is no disagreement: the mean leaves it out, and so does leave-one-out; a finite
    outlier is still caught."""
    reps = [{"T4_ratios": [{"id": "m/50", "model": "m", "ratio": r},
                           {"id": "m/60", "model": "m", "ratio": q}]}
            for r, q in ((4.0, 7.0), (4.2, 7.3), (math.inf, 6.9))]
    c2 = [s for s in PAPER if s.name == "C2"]
    trial = multiples.leave_one_out(reps, _claims([2.0, 2.1, math.nan]), c2, 3.0)
    # cells: the three m/60 and the two finite m/50 (the infinite one is not compared); C2 is
    # compared where it is defined and two other defined replicates make its band: nowhere
    assert trial.failed == 0 and trial.checked == 5
    reps[2]["T4_ratios"][0]["ratio"] = 40.0
    assert multiples.leave_one_out(reps, _claims([2.0, 2.1, 2.05]), c2, 3.0).failed > 0


def test_a_rate_is_banded_on_the_arcsine_scale_so_each_rate_gets_its_own_width() -> None:
    """Survival rates of one model at 0.04-0.35 over 200 features, drawn binomially in each
    of 3 replicates: on the arcsine-square-root scale one pooled sd fits every row, so the
    band is about 2.4x wider in rate units at 0.35 than at 0.04. A move the 0.35 row's band
    allows fails at 0.04, and the 0.35 row passes a move the linear pooled band refused (the
    AVX2 run's cell: 0.348 against a blessed 0.286)."""
    rng = np.random.default_rng(5)
    rates, n = (0.04, 0.11, 0.23, 0.35), 200
    reps = [{"T3_survival": [{"id": f"m/{i}", "model": "m", "survival": rng.binomial(n, p) / n}
                             for i, p in enumerate(rates)]} for _ in range(3)]
    assert bands.scale_of("survival_bin4") == bands.ANGLE and bands.scale_of("ratio") == bands.LOG
    assert bands.scale_of("feature_rho") == bands.LINEAR
    sd = bands.column_sds(reps)[("T3_survival", "survival")]["m"]
    # the sd of asin(sqrt(p)) is 1 / (2 sqrt(n)) at every p; 6 dof make a rough estimate of it
    assert 0.4 / (2 * math.sqrt(n)) < sd.value < 2.0 / (2 * math.sqrt(n))
    tol = bands.band_tolerance(bands.column_band(sd, 3.0, scale=bands.ANGLE), bands.ANGLE,
                               floor=2 / n)
    width = {p: tol.bounds(p)[1] - tol.bounds(p)[0] for p in (0.04, 0.35)}
    assert 2.0 < width[0.35] / width[0.04] < 4.0
    high_w = tol.allowance(0.35)
    assert not multiples.outside(0.35 + 0.9 * high_w, 0.35, tol.width, bands.ANGLE, 2 / n)
    assert multiples.outside(0.04 + 0.9 * high_w, 0.04, tol.width, bands.ANGLE, 2 / n)
    # the bounds are symmetric in angle, clamped to [0, 1], never inside the floor
    low, high = tol.bounds(0.3)
    assert math.asin(math.sqrt(low)) + math.asin(math.sqrt(high)) == pytest.approx(
        2 * math.asin(math.sqrt(0.3)))
    assert tol.bounds(0.0)[0] == -2 / n and tol.bounds(0.0)[1] > 2 / n
    wide = bands.band_tolerance(3.0, bands.ANGLE)
    assert wide.bounds(0.5) == (0.0, 1.0) and wide.bounds(1.0)[0] == 0.0
    narrow = bands.band_tolerance(1e-6, bands.ANGLE, floor=0.01)
    assert narrow.bounds(0.5) == pytest.approx((0.49, 0.51), abs=1e-5)  # the floor rules


def test_an_angle_band_is_read_from_the_tolerances_file_per_model(tmp_path) -> None:
    from repro.errors import ReproError
    from repro.outputs.expected import load_tolerances

    path = tmp_path / "tolerances.toml"
    path.write_text('[p.T3_survival]\nsurvival = { abs = 0.01, angle = 0.1, '
                    'models = { "a" = 0.2 } }\n')
    tols = load_tolerances(path, "p")
    assert tols.get("T3_survival", "survival").width == 0.1
    assert tols.get("T3_survival", "survival", "a").width == 0.2
    assert "asin(sqrt(rate)) +-0.2" in tols.get("T3_survival", "survival", "a").describe()
    path.write_text('[p.T3_survival]\nsurvival = { log = 0.1, angle = 0.1 }\n')
    with pytest.raises(ReproError, match="a band is on one scale, not log and angle"):
        load_tolerances(path, "p")


def test_a_log_band_of_one_degree_of_freedom_does_not_overflow() -> None:
    """Leave-one-out over 3 replicates with one undefined (inf) leaves a ratio's row one dof:
    widened x24.7 and at 30x the band is e^830, past a float's range; it passes every
    positive ratio instead of crashing the bless, and a negative one still fails."""
    tol = bands.band_tolerance(830.0, bands.LOG)
    low, high = tol.bounds(11.5)
    assert low < 1e-300 and high > 1e300
    assert not multiples.outside(9.67, 11.5, 830.0, bands.LOG)
    assert multiples.outside(-1.0, 11.5, 830.0, bands.LOG)


def test_each_scale_turns_back_into_the_values_it_came_from_and_is_symmetric_there() -> None:
    """Every scale's inverse undoes it; a band of width w passes the values within w of the
    expected one on the scale (both ends), and a p-value is banded on its normal quantile:
    p = 1e-8 and p = 0.3 get bands of one width in z, not in p."""
    from repro.outputs import scales

    for scale, values in ((scales.LOG, (0.2, 1.0, 5.73, 1e6)),
                          (scales.ANGLE, (0.0, 0.04, 0.5, 1.0)),
                          (scales.Z, (1e-300, 1e-8, 0.05, 0.3, 1.0))):
        s = scales.SCALES[scale]
        for v in values:
            assert s.inverse(s.forward(v)) == pytest.approx(v, rel=1e-9, abs=1e-300)
            low, high = scales.band_bounds(v, scale, 0.3)
            t = s.forward(v)
            ends = sorted(s.forward(x) for x in (low, high))
            assert ends[0] == pytest.approx(max(t - 0.3, s.span[0]), abs=1e-9)
            assert ends[1] == pytest.approx(min(t + 0.3, s.span[1]), abs=1e-9)
    assert math.isnan(scales.to_scale(0.0, scales.LOG)) and math.isnan(
        scales.to_scale(math.inf, scales.LOG)) and math.isnan(scales.to_scale(1.5, scales.ANGLE))
    assert math.isnan(scales.to_scale(0.0, scales.Z))
    assert bands.scale_of("feature_p") == scales.Z and bands.scale_of("causal_p") == scales.Z
    tol = bands.band_tolerance(2.0, scales.Z)
    low, high = tol.bounds(1e-8)
    assert 1e-20 < low < 1e-12 and 1e-5 < high < 1e-3  # orders of magnitude, both ways
    assert not multiples.outside(1e-10, 1e-8, 2.0, scales.Z)
    assert multiples.outside(0.3, 1e-8, 2.0, scales.Z)  # a significant result turned null
    assert bands.band_tolerance(40.0, scales.Z).bounds(0.01)[0] == 0.0  # covers every p


def test_a_value_the_scale_cannot_hold_puts_its_column_on_the_linear_scale() -> None:
    """A rank correlation of 1 over 6 features gets p = 0 from scipy's t approximation: on the
    normal-quantile scale that one replicate lies infinitely far from the others and no
    multiple passes leave-one-out; the column falls back to the linear scale, where it is a
    number like the rest, and the bless goes on. A column without such a value keeps its
    scale."""
    p = [[0.79, 0.0, 0.96], [0.07, 0.02, 0.54], [0.40, 0.27, 0.96]]
    reps = [{"T6_fragility_causal": [{"id": f"m/{i}", "model": "m", "causal_p": p[i][r],
                                      "fragile_fraction": 0.1 + 0.01 * r}
                                     for i in range(3)]} for r in range(3)]
    scales = bands.column_scales(reps)
    assert scales[("T6_fragility_causal", "causal_p")] == bands.LINEAR
    assert scales[("T6_fragility_causal", "fragile_fraction")] == bands.ANGLE
    multiple, _ = multiples.choose_multiple(reps, [], [], "T6_fragility_causal")
    assert multiple < math.inf
    reps[1]["T6_fragility_causal"][0]["causal_p"] = 0.5  # no p of 0: the z scale again
    assert bands.column_scales(reps)[("T6_fragility_causal", "causal_p")] == bands.Z


def test_a_bless_keeps_the_other_profiles_sections_and_their_headers() -> None:
    """Re-blessing one profile drops its sections and its header comment, and keeps every
    other profile's, the header written just after its sections included."""
    existing = "\n".join([
        "# the file's own comment", "", '["tiny"."T1_pruning"]', "x = { abs = 1 }", "",
        "# [beyond.*] written by `repro bless` from 3 replicates of old:", "# more about it",
        '["beyond"."T1_pruning"]', "x = { abs = 2 }", "",
        "# [small.*] written by `repro bless` from 3 replicates of run:", "# its multiples",
        '["small"."T1_pruning"]', "x = { abs = 3 }", ""])
    kept = bands_text.keep_other_profiles(existing, "beyond")
    assert "beyond" not in kept and "abs = 2" not in kept
    assert "# [small.*] written by" in kept and "# its multiples" in kept and "abs = 3" in kept
    assert kept.startswith("# the file's own comment") and "abs = 1" in kept
    again = bands_text.keep_other_profiles(existing, "small")
    assert "small" not in again and "# [beyond.*]" in again and "abs = 2" in again
