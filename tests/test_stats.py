"""repro.science.stats against planted effects and scipy/numpy computed the slow, obvious way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from repro.science.stats import (
    ColumnPearson,
    _code_ranks,
    binned_survival,
    feature_spearman,
    frequency_bins,
    pearson_columns,
    wanda_magnitude_ratio,
)


@pytest.mark.parametrize(("n_alive", "n_bins"), [(100, 5), (103, 5), (104, 5), (7, 5), (5, 5)])
def test_bins_equal_count_ordered_and_dead_excluded(n_alive: int, n_bins: int) -> None:
    rng = np.random.default_rng(n_alive)
    rate = np.concatenate([rng.uniform(1e-4, 0.5, n_alive), np.zeros(9)])
    rng.shuffle(rate)
    bins = frequency_bins(rate, n_bins)
    assert (bins[rate == 0] == -1).all()
    sizes = np.bincount(bins[bins >= 0], minlength=n_bins)
    assert sizes.sum() == n_alive and sizes.max() - sizes.min() <= 1
    assert (np.diff(sizes) <= 0).all()  # remainders go to the rarest bins
    for k in range(n_bins - 1):  # every feature of bin k is at most as frequent as bin k + 1
        assert rate[bins == k].max() <= rate[bins == k + 1].min()


def test_bins_break_ties_by_feature_index() -> None:
    rate = np.array([0.1, 0.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    np.testing.assert_array_equal(frequency_bins(rate, 5), [0, -1, 0, 1, 1, 2, 2, 3, 3, 4, 4])


def test_bins_reject_too_few_alive_features() -> None:
    with pytest.raises(ValueError, match="alive"):
        frequency_bins(np.array([0.1, 0.2, 0.0, np.nan, 0.3, 0.4]), 5)


def planted(rarer_survives: bool, n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Survival probability falling (or rising) with firing rate, strong enough to be strict."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(1e-4, 0.2, n)
    rank = stats.rankdata(rate) / n
    p = 0.95 - 0.9 * rank if rarer_survives else 0.05 + 0.9 * rank
    return rate, rng.uniform(size=n) < p


def test_binned_spearman_minus_one_on_planted_rarer_survives() -> None:
    rate, survived = planted(rarer_survives=True)
    res = binned_survival(rate, survived)
    assert res.rho == -1.0
    assert (np.diff(res.rate) < 0).all()
    assert (np.diff(res.mean_firing_rate) > 0).all()
    assert res.count.sum() == 1000


def test_binned_spearman_plus_one_on_reverse() -> None:
    rate, survived = planted(rarer_survives=False)
    assert binned_survival(rate, survived).rho == 1.0


def test_binned_rates_equal_the_obvious_loop() -> None:
    rate, survived = planted(rarer_survives=True, n=537, seed=3)
    rate[::10] = 0.0
    res = binned_survival(rate, survived)
    bins = frequency_bins(rate)
    for k in range(5):
        assert res.rate[k] == pytest.approx(survived[bins == k].mean())
    assert res.rho == pytest.approx(stats.spearmanr(np.arange(5), res.rate).statistic)


def test_binned_tied_rates_are_not_minus_one() -> None:
    rate = np.linspace(0.01, 0.5, 50)
    survived = np.repeat([0.9, 0.9, 0.5, 0.3, 0.1], 10)  # two bins tie: not strictly falling
    res = binned_survival(rate, survived)
    assert res.rho == pytest.approx(stats.spearmanr(np.arange(5), res.rate).statistic)
    assert -1.0 < res.rho < -0.9


def test_binned_constant_survival_gives_nan() -> None:
    rate = np.linspace(0.01, 0.5, 50)
    res = binned_survival(rate, np.ones(50, dtype=bool))
    assert np.isnan(res.rho) and np.isnan(res.pvalue)
    np.testing.assert_array_equal(res.rate, np.ones(5))


def test_feature_spearman_equals_scipy_and_ci_is_reproducible() -> None:
    rng = np.random.default_rng(8)
    x = rng.exponential(size=400)
    y = -0.3 * stats.rankdata(x) / 400 + rng.normal(size=400) * 0.3
    y[::7] = np.round(y[::7], 1)  # some ties
    res = feature_spearman(x, y, n_resamples=500, seed=1)
    ref = stats.spearmanr(x, y)
    assert res.rho == pytest.approx(ref.statistic, abs=1e-12)
    assert res.pvalue == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.ci_low < res.rho < res.ci_high and res.n == 400
    assert feature_spearman(x, y, n_resamples=500, seed=1) == res
    assert feature_spearman(x, y, n_resamples=500, seed=2) != res


def test_code_ranks_equal_rankdata() -> None:
    codes = np.random.default_rng(12).integers(0, 9, size=(4, 3, 50))  # many ties
    np.testing.assert_array_equal(_code_ranks(codes), stats.rankdata(codes, axis=-1))


def test_bootstrap_ci_equals_scipy_on_raw_values() -> None:
    """Same seed, same resamples: the rank-code shortcut must give scipy's own percentile CI."""
    rng = np.random.default_rng(13)
    x = np.round(rng.exponential(size=120), 1)
    y = np.round(0.5 * x + rng.normal(size=120), 1)
    res = feature_spearman(x, y, n_resamples=300, seed=4)

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        return stats.spearmanr(a, b).statistic

    ref = stats.bootstrap((x, y), rho, paired=True, vectorized=False, n_resamples=300,
                          method="percentile", rng=np.random.default_rng(4))
    assert res.ci_low == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert res.ci_high == pytest.approx(ref.confidence_interval.high, abs=1e-12)


def test_feature_spearman_drops_nonfinite_pairs_and_handles_constant() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=100), rng.normal(size=100)
    y[:10] = np.nan
    res = feature_spearman(x, y, n_resamples=200)
    assert res.n == 90
    assert res.rho == pytest.approx(stats.spearmanr(x[10:], y[10:]).statistic, abs=1e-12)
    flat = feature_spearman(x, np.ones(100), n_resamples=200)
    assert np.isnan(flat.rho) and np.isnan(flat.ci_low) and flat.n == 100


def test_wanda_magnitude_ratio_rules() -> None:
    assert wanda_magnitude_ratio(0.74, 0.2) == pytest.approx(3.7)
    assert wanda_magnitude_ratio(0.3, 0.0) == np.inf
    assert np.isnan(wanda_magnitude_ratio(0.0, 0.0))
    np.testing.assert_allclose(wanda_magnitude_ratio(np.array([0.5, 0.2]), np.array([0.25, 0.4])),
                               [2.0, 0.5])
    with pytest.raises(ValueError):
        wanda_magnitude_ratio(-0.1, 0.5)


def activations(seed: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Sparse-ish activations with a dead column, a constant one and a barely varying one."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(300, 12)), 0)
    y = np.maximum(x + 0.5 * rng.normal(size=(300, 12)), 0)
    x[:, 3] = 0.0
    y[:, 5] = 0.7
    x[:, 7] = 1e4 + 1e-3 * rng.normal(size=300)
    return x.astype(np.float32), y.astype(np.float32)


def test_pearson_columns_equals_corrcoef_column_by_column() -> None:
    x, y = activations()
    got = pearson_columns(x, y)
    for j in range(x.shape[1]):
        if j in (3, 5):
            assert np.isnan(got[j])
        else:
            ref = np.corrcoef(x[:, j].astype(np.float64), y[:, j].astype(np.float64))[0, 1]
            assert got[j] == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("chunk", [1, 7, 64, 300, 1000])
def test_pearson_chunked_equals_one_shot(chunk: int) -> None:
    x, y = activations(11)
    np.testing.assert_allclose(pearson_columns(x, y, chunk=chunk), pearson_columns(x, y),
                               atol=1e-10)


def test_pearson_constant_float64_column_is_nan_despite_rounding() -> None:
    """A float64 column of 0.1s has a mean one ulp off, so its centred sum of squares is not 0."""
    rng = np.random.default_rng(14)
    x = rng.normal(size=(300, 3))
    y = rng.normal(size=(300, 3))
    y[:, 1] = 0.1
    got = pearson_columns(x, y, chunk=128)
    assert np.isnan(got[1]) and not np.isnan(got[[0, 2]]).any()


def _raw_moment_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The textbook one-pass formula from raw sums (sum x, sum x^2, ...) in float64: what RQ4
    used before ColumnPearson. The negative control below: it fails where values sit far from 0."""
    n, sx, sy = len(x), x.sum(0), y.sum(0)
    cov = (x * y).sum(0) - sx * sy / n
    var_x = np.clip((x * x).sum(0) - sx * sx / n, 0, None)
    var_y = np.clip((y * y).sum(0) - sy * sy / n, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(cov / np.sqrt(var_x * var_y), -1, 1)


@pytest.mark.parametrize("chunk", [7, 1000, 4096])
def test_pearson_keeps_its_digits_where_raw_moments_lose_them(chunk: int) -> None:
    """Columns of unit spread around 0, 1e4 and 1e8 (r about 0.71 each). Pearson r does not
    depend on the offset, so the reference is corrcoef of the same values with the offset
    taken off (exactly: x - offset is exact in float64 here). The careful accumulation keeps
    9 digits at every offset; the raw-moment formula keeps 7 at 1e4 and none at 1e8, where
    sum x^2 is 4e19 and its rounding (8192) exceeds the whole centred sum of squares (4096)."""
    rng = np.random.default_rng(29)
    e, f = rng.normal(size=(4096, 3)), rng.normal(size=(4096, 3))
    offset = np.array([0.0, 1e4, 1e8])
    x, y = offset + e, offset + e + f
    ref = np.array([np.corrcoef(x[:, j] - offset[j], y[:, j] - offset[j])[0, 1]
                    for j in range(3)])
    np.testing.assert_allclose(pearson_columns(x, y, chunk=chunk), ref, rtol=0, atol=1e-9)
    raw = _raw_moment_pearson(x, y)
    assert abs(raw[0] - ref[0]) < 1e-12  # the twin is right where nothing cancels
    assert not abs(raw[2] - ref[2]) < 0.1  # and far off (or NaN) at 1e8


def test_column_pearson_rejects_mismatch_and_empty() -> None:
    acc = ColumnPearson()
    with pytest.raises(ValueError):
        acc.result()
    with pytest.raises(ValueError):
        acc.update(np.zeros((3, 2)), np.zeros((3, 4)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pearson_on_cuda_equals_cpu() -> None:
    x, y = activations(16)
    got = pearson_columns(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(), chunk=50)
    np.testing.assert_allclose(got, pearson_columns(x, y), atol=1e-12, equal_nan=True)
