"""Statistics of the analysis: frequency bins, rank correlations, the C2 ratio, RQ4's Pearson r.

Definitions are docs/design.md's; scipy does the statistics (spearmanr, bootstrap). Everything is
vectorised over features. `feature_spearman` on 16384 features, measured on the project's
shared 2-core CPU: 2.5-7.5 s with 1000 percentile resamples (the default), 25 s with 10000,
65 s with BCa and 1000 (its jackknife dominates).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from repro.science.survival import alive as is_alive
from repro.science.survival import survival_rate, survives
from repro.study.thresholds import N_BINS


def frequency_bins(firing_rate: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin index per feature (0 = rarest), -1 for features dead on the dense model.

    Only alive features are ranked (repro.science.survival; NaN counts as dead): a feature
    that never fires has no frequency to speak of and would fill the rarest bin with noise.
    They are ordered by rate, ties by feature index, so tied rates may straddle a bin edge but
    always the same way. With k alive features, each bin holds k // n_bins features and the
    first k % n_bins bins (the rarest) one more, as `numpy.array_split` distributes them.
    """
    rate = np.asarray(firing_rate, dtype=np.float64)
    if rate.ndim != 1:
        raise ValueError(f"firing_rate must be 1-D, got shape {rate.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    alive = np.flatnonzero(is_alive(rate))
    if len(alive) < n_bins:
        raise ValueError(f"{len(alive)} alive features cannot fill {n_bins} bins")
    order = alive[np.lexsort((alive, rate[alive]))]
    q, r = divmod(len(alive), n_bins)
    sizes = np.full(n_bins, q)
    sizes[:r] += 1
    bins = np.full(len(rate), -1, dtype=np.int64)
    bins[order] = np.repeat(np.arange(n_bins), sizes)
    return bins


@dataclass(frozen=True)
class BinnedSurvival:
    """Survival per firing-rate bin and its rank correlation with the bin (C1)."""

    rate: np.ndarray
    """(n_bins,) mean of `survived` in each bin, rarest bin first."""
    count: np.ndarray
    """(n_bins,) features per bin."""
    mean_firing_rate: np.ndarray
    """(n_bins,) mean dense firing rate in each bin, for axis labels."""
    rho: float
    """Spearman rho of bin rank vs rate; -1.0 = strictly rarer-survives-more; NaN if constant."""
    pvalue: float
    """scipy's p-value for rho (5 points: read it as descriptive); NaN when rho is."""


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """scipy's Spearman, NaN (without scipy's warning) when either side is constant."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho over the pairs where both values are finite; NaN below 3 pairs or when
    a side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    return _spearman(x[keep], y[keep])[0] if keep.sum() >= 3 else float("nan")


def binned_survival(firing_rate: np.ndarray, survived: np.ndarray,
                    n_bins: int = N_BINS) -> BinnedSurvival:
    """Survival rate per equal-count firing-rate bin and Spearman rho of bin rank vs rate.

    `survived` is boolean per feature (a float score works too: its per-bin mean is used).
    Ties between bins' rates get average ranks, as in scipy, so rho is -1.0 only when the
    rates strictly fall from the rarest to the most frequent bin; rho is rounded to 12
    decimals so that this holds exactly in floating point. Identical rates in all
    bins (e.g. everything survives) leave rho undefined: NaN, not 0, so that such a condition
    is neither counted for nor against C1.
    """
    rate = np.asarray(firing_rate, dtype=np.float64)
    value = np.asarray(survived, dtype=np.float64)
    if value.shape != rate.shape:
        raise ValueError(f"shapes differ: firing_rate {rate.shape}, survived {value.shape}")
    bins = frequency_bins(rate, n_bins)
    alive = bins >= 0
    count = np.bincount(bins[alive], minlength=n_bins)
    per_bin = np.bincount(bins[alive], weights=value[alive], minlength=n_bins) / count
    mean_rate = np.bincount(bins[alive], weights=rate[alive], minlength=n_bins) / count
    rho, p = _spearman(np.arange(n_bins, dtype=np.float64), per_bin)
    # rho over n_bins ranks takes few rational values, but scipy lands one ulp off +-1
    # (-0.9999999999999999): rounded so that C1's count of `rho == -1.0` is exact
    rho = round(rho, 12)
    return BinnedSurvival(rate=per_bin, count=count, mean_firing_rate=mean_rate, rho=rho,
                          pvalue=p)


@dataclass(frozen=True)
class SpearmanResult:
    """Feature-level Spearman rho with scipy's p-value and a paired-bootstrap CI."""

    rho: float
    pvalue: float
    ci_low: float
    ci_high: float
    n: int
    """Features used: pairs where both values are finite."""


def _pearson_last(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis; NaN for a constant row (a degenerate resample)."""
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    num = (rx * ry).sum(axis=-1)
    den = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _code_ranks(codes: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis of integer codes (dense ranks), without sorting.

    Counting how often each code occurs in a row gives every code's average rank at once
    (codes below it + (its count + 1) / 2): O(n) per row where `rankdata` sorts, which makes
    the 16384-feature bootstrap 2.6x faster. Equal to `scipy.stats.rankdata(codes, axis=-1)`.
    """
    shape = codes.shape
    rows = codes.reshape(-1, shape[-1])
    u = int(rows.max()) + 1 if rows.size else 1
    offset = u * np.arange(rows.shape[0])[:, None]
    counts = np.bincount((rows + offset).ravel(), minlength=rows.shape[0] * u)
    counts = counts.reshape(rows.shape[0], u)
    avg = np.cumsum(counts, axis=1) - (counts - 1) / 2
    return np.take_along_axis(avg, rows, axis=1).reshape(shape)


def _spearman_of_codes(cx: np.ndarray, cy: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman rho along `axis` for a batch of resamples of dense-rank codes."""
    cx, cy = np.moveaxis(cx, axis, -1), np.moveaxis(cy, axis, -1)
    return _pearson_last(_code_ranks(cx), _code_ranks(cy))


def feature_spearman(firing_rate: np.ndarray, score: np.ndarray, *, n_resamples: int = 1000,
                     seed: int = 0, confidence: float = 0.95,
                     method: str = "percentile") -> SpearmanResult:
    """Spearman rho of firing rate vs a per-feature score, p-value and bootstrap CI.

    Pairs with a non-finite value (e.g. RQ4's undefined Pearson r) are dropped. Resampling is
    paired (features keep their two values) and seeded, so the CI is reproducible. The
    percentile method is the default: BCa's jackknife costs n extra Spearman evaluations
    (65 s instead of a few at 16384 features) and moved the bounds by about 0.001 there.
    With fewer than 3 pairs or a constant side every field is NaN.
    """
    x = np.asarray(firing_rate, dtype=np.float64)
    y = np.asarray(score, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1-D arrays of one length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    nan = float("nan")
    rho, p = _spearman(x, y) if len(x) >= 3 else (nan, nan)
    if np.isnan(rho):
        return SpearmanResult(rho=nan, pvalue=nan, ci_low=nan, ci_high=nan, n=len(x))
    # Spearman only sees order: resampling dense-rank codes instead of values gives the same
    # statistic and lets `_code_ranks` rank by counting
    codes = (np.unique(x, return_inverse=True)[1], np.unique(y, return_inverse=True)[1])
    batch = max(1, 2**24 // len(x))  # about 128 MiB of float64 per resampled array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        boot = stats.bootstrap(codes, _spearman_of_codes, paired=True, vectorized=True,
                               n_resamples=n_resamples, confidence_level=confidence,
                               method=method, batch=batch, rng=np.random.default_rng(seed))
    ci = boot.confidence_interval
    return SpearmanResult(rho=rho, pvalue=p, ci_low=float(ci.low), ci_high=float(ci.high),
                          n=len(x))


@dataclass(frozen=True)
class FrequencyEffect:
    """RQ2's survival over a set of features and its dependence on their firing rate (C1)."""

    survival: float
    """Fraction of the features whose matched cosine is at least tau."""
    binned: BinnedSurvival
    """Survival per equal-count firing-rate bin and the bin-rank rho."""
    feature: SpearmanResult
    """Feature-level Spearman of firing rate vs matched cosine, p-value and bootstrap CI."""


def frequency_effect(firing_rate: np.ndarray, matched_cosine: np.ndarray, *, tau: float,
                     n_bins: int = N_BINS, n_resamples: int = 1000,
                     seed: int = 0) -> FrequencyEffect:
    """RQ2's frequency analysis of one matching, in one place: the study's analysis and the
    synthetic method controls (repro.science.method_controls) both call it, so a control that
    passes vouches for the code the tables come from. Give it the alive features only."""
    cos = np.asarray(matched_cosine)
    survived = survives(cos, tau)
    return FrequencyEffect(
        survival=survival_rate(cos, tau),
        binned=binned_survival(firing_rate, survived, n_bins),
        feature=feature_spearman(firing_rate, cos, n_resamples=n_resamples, seed=seed))


def wanda_magnitude_ratio(survival_wanda: float | np.ndarray,
                          survival_magnitude: float | np.ndarray) -> float | np.ndarray:
    """C2: survival(wanda) / survival(magnitude) at the same model and sparsity.

    Magnitude survival 0 gives inf when Wanda's is positive (magnitude lost every feature,
    Wanda kept some: unbounded advantage, reported as such rather than hidden) and NaN when
    both are 0 (nothing to compare). Survivals must be non-negative.
    """
    w = np.asarray(survival_wanda, dtype=np.float64)
    m = np.asarray(survival_magnitude, dtype=np.float64)
    if (w < 0).any() or (m < 0).any():
        raise ValueError("survival values must be non-negative")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = w / m
    return float(ratio) if ratio.ndim == 0 else ratio


class ColumnPearson:
    """Per-column Pearson r of two activation matrices, accumulated over token chunks.

    RQ4 compares each feature's activations on the dense and the pruned model over the same
    tokens. Activations live in chunks on disk, so sums are merged chunk by chunk with Chan et
    al.'s pairwise update (centred, float64): the naive sum-of-squares formula loses the
    digits of features that barely vary. Runs on the device of the first chunk.
    """

    def __init__(self) -> None:
        self.n = 0
        self._state: list[torch.Tensor] | None = None

    def update(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> None:
        """Add one chunk: x, y are (n_tokens, n_features), row t of both is the same token."""
        tx = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        ty = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y))
        if tx.shape != ty.shape or tx.ndim != 2:
            raise ValueError(f"need two 2-D chunks of one shape, got {tuple(tx.shape)}, "
                             f"{tuple(ty.shape)}")
        k = tx.shape[0]
        if k == 0:
            return
        device = tx.device if self._state is None else self._state[0].device
        tx, ty = tx.to(device, torch.float64), ty.to(device, torch.float64)
        mx, my = tx.mean(0), ty.mean(0)
        cx, cy = tx - mx, ty - my
        new = [mx, my, (cx * cx).sum(0), (cy * cy).sum(0), (cx * cy).sum(0),
               tx.amin(0), tx.amax(0), ty.amin(0), ty.amax(0)]
        if self._state is None:
            self._state, self.n = new, k
            return
        self._state = _merge(self._state, self.n, new, k)
        self.n += k

    def result(self) -> np.ndarray:
        """(n_features,) float64 r; NaN where either column is constant (r is undefined)."""
        if self._state is None:
            raise ValueError("no chunks were added")
        _, _, sxx, syy, sxy, xmin, xmax, ymin, ymax = self._state
        r = (sxy / torch.sqrt(sxx * syy)).clamp(-1.0, 1.0)
        # exact min == max, not sxx == 0: a constant non-zero column leaves rounding residue
        r[(xmin == xmax) | (ymin == ymax)] = float("nan")
        return r.cpu().numpy()


def _merge(a: list[torch.Tensor], na: int, b: list[torch.Tensor], nb: int) -> list[torch.Tensor]:
    """Chan et al.'s merge of two chunks' (means, centred sums, extremes)."""
    n = na + nb
    dx, dy = b[0] - a[0], b[1] - a[1]
    w = na * nb / n
    return [a[0] + dx * (nb / n), a[1] + dy * (nb / n),
            a[2] + b[2] + dx * dx * w, a[3] + b[3] + dy * dy * w, a[4] + b[4] + dx * dy * w,
            torch.minimum(a[5], b[5]), torch.maximum(a[6], b[6]),
            torch.minimum(a[7], b[7]), torch.maximum(a[8], b[8])]


def pearson_columns(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *,
                    chunk: int = 4096) -> np.ndarray:
    """Per-column Pearson r of two (n_tokens, n_features) matrices; NaN for constant columns.

    Goes through `ColumnPearson` in chunks of tokens, so the float64 working copy stays at
    `chunk` x n_features whatever the number of tokens.
    """
    acc = ColumnPearson()
    n = x.shape[0]
    if n != y.shape[0]:
        raise ValueError(f"token counts differ: {n} vs {y.shape[0]}")
    for start in range(0, n, chunk):
        acc.update(x[start:start + chunk], y[start:start + chunk])
    return acc.result()
