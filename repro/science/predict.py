"""RQ6: can the dense model alone tell which SAE features a compression will damage?

For every condition, each dense-SAE feature gets two labels: it survived (RQ2: its matched
decoder cosine in the compressed model's SAE reaches tau) and it stayed robust (RQ4: the
frozen dense SAE's activation on the compressed model correlates with its activation on the
dense model at r >= fragile_r; silenced features are not robust). Both are predicted from
statistics of the dense model only (`feature_statistics`): the feature's firing rate, its
peak and mean activation where it fires, its decoder norm, and the cosine between its encoder
and decoder directions.

The prediction is a cross-validated logistic regression (statsmodels' Logit on standardised
predictors, stratified folds): every feature is scored by a model that never saw it, and
the score's AUC (the probability that a random positive outranks a random negative) says how
well the statistics separate the two classes; 0.5 is chance. Each predictor alone and all
together, each AUC with a bootstrap interval over features. The negative control fits all
predictors to shuffled labels, SHUFFLES times: its AUCs must centre on 0.5, or the procedure
leaks, and their spread is what an AUC of no information looks like at this sample size.

arXiv 2606.03002 asks the same question of round-to-nearest quantization (Pythia-70M,
Gemma 2 2B) with a frozen dense SAE, and reports AUC 0.92-0.97 with peak activation the
strongest single predictor.

The perplexity-matched comparison (`matched_damage`) puts a quantized model beside the
pruning level that damages perplexity as much: the sparsity is interpolated on the log
perplexity of the study's grid (dense counts as sparsity 0 with no damage), each feature's
RQ4 damage (1 - r) likewise, and the two damaged sets (r < fragile_r) are compared by their
Jaccard overlap, next to the overlap two random sets of the same sizes would have.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats as scipy_stats

PREDICTORS = ("log_firing_rate", "peak_activation", "mean_activation", "decoder_norm",
              "encoder_decoder_cosine")
"""The dense model's statistics of a feature, in T7's order."""
ALL = "all"
"""T7's row of every predictor together."""
SHUFFLED = "shuffled_labels"
"""T7's negative control: every predictor, labels permuted (SHUFFLES times)."""
SHUFFLES = 40
"""Permutations of the labels behind the control: its AUC is their mean, its interval their
middle 95 %. One permutation is not enough: cross-validated AUCs of labels that carry nothing
scatter around 0.5 (measured on the tiny profile: one shuffle gave 0.35, interval
0.27-0.43, where a single fit's bootstrap over features ignores how the folds fell)."""
CONSTANT_REL = 1e-6
"""A predictor whose spread is below this fraction of its size carries no information (the
decoder norm of an SAE that keeps its decoder rows at unit norm varies only in float32's last
bits): it is set to zero rather than fitted, and alone it scores every feature the same, an
AUC of exactly 0.5."""


@torch.no_grad()
def feature_statistics(sae: Any, chunks: Iterator[torch.Tensor]) -> dict[str, np.ndarray]:
    """Per feature of `sae`, from (tokens x d) activation chunks of the dense model: firing
    rate, peak and mean activation over the tokens where it fires (0 where it never does),
    decoder row norm, and the cosine of its encoder column with its decoder row."""
    from repro.science.saes import encode

    width = sae.cfg.d_sae
    fired = torch.zeros(width, dtype=torch.float64)
    total = torch.zeros(width, dtype=torch.float64)
    peak = torch.zeros(width, dtype=torch.float64)
    n = 0
    for acts in chunks:
        for _, f in encode(sae, acts):
            f = f.double().cpu()
            fired += (f > 0).sum(0)
            total += f.sum(0)
            peak = torch.maximum(peak, f.max(0).values)
            n += len(f)
    w_enc = sae.W_enc.detach().double().cpu()  # d x width
    w_dec = sae.W_dec.detach().double().cpu()  # width x d
    cosine = (w_enc.T * w_dec).sum(1) / (w_enc.norm(dim=0) * w_dec.norm(dim=1))
    rate = fired / max(n, 1)
    return {"firing_rate": rate.numpy(),
            "peak_activation": peak.numpy(),
            "mean_activation": (total / fired.clamp(min=1)).numpy(),
            "decoder_norm": w_dec.norm(dim=1).numpy(),
            "encoder_decoder_cosine": cosine.numpy()}


def predictors(statistics: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """T7's predictors of the features in `keep` (a boolean mask): the statistics, the rate on
    a log scale (rates of alive features span four decades)."""
    out = {name: statistics[name][keep].astype(np.float64)
           for name in PREDICTORS if name != "log_firing_rate"}
    return {"log_firing_rate": np.log10(statistics["firing_rate"][keep]), **out}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U of the positives' ranks (ties count half),
    over positives x negatives; NaN without both classes."""
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = scipy_stats.rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auc(scores: np.ndarray, labels: np.ndarray, n_resamples: int,
                  seed: int) -> tuple[float, float]:
    """95 % percentile interval of the AUC over features resampled with replacement (the
    scores held fixed: they are out-of-fold already)."""
    labels = np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(labels), size=(n_resamples, len(labels)))
    s, y = scores[idx], labels[idx]
    ranks = scipy_stats.rankdata(s, axis=1)
    n_pos = y.sum(1)
    n_neg = y.shape[1] - n_pos
    ok = (n_pos > 0) & (n_neg > 0)
    u = (ranks * y).sum(1) - n_pos * (n_pos + 1) / 2
    values = u[ok] / (n_pos[ok] * n_neg[ok])
    if len(values) == 0:
        return math.nan, math.nan
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each feature's fold: positives and negatives each shuffled and dealt round the folds,
    so every fold holds its share of both classes."""
    labels = np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    for cls in (True, False):
        members = rng.permutation(np.flatnonzero(labels == cls))
        out[members] = np.arange(len(members)) % folds
    return out


def _standardised(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Columns centred and scaled by the training features' mean and sd; a column that is
    constant there (to CONSTANT_REL) becomes 0."""
    mean, sd = x[train].mean(0), x[train].std(0)
    flat = sd <= CONSTANT_REL * np.maximum(np.abs(mean), 1e-300)
    z = (x - mean) / np.where(flat, 1.0, sd)
    z[:, flat] = 0.0
    return z


def _logit_scores(x: np.ndarray, labels: np.ndarray, train: np.ndarray) -> np.ndarray:
    """The linear score of a logistic regression fitted on `train` (statsmodels' Logit, Newton
    steps), for every feature. A fold whose classes the predictors separate perfectly has no
    finite maximum: a weak ridge penalty then keeps the coefficients finite."""
    from statsmodels.discrete.discrete_model import Logit
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    z = _standardised(x, train)
    design = np.column_stack([np.ones(len(z)), z])
    keep = np.flatnonzero(np.any(design[train] != 0, axis=0))  # constant columns carry nothing
    if len(keep) == 1:  # nothing but the intercept: one score for every feature, AUC 0.5
        return np.zeros(len(z))
    y = labels[train].astype(np.float64)
    model = Logit(y, design[train][:, keep])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.filterwarnings("ignore", message=".*converge.*")
        try:
            params = np.asarray(model.fit(method="newton", disp=0, maxiter=100).params)
        except (PerfectSeparationWarning, np.linalg.LinAlgError):
            params = np.asarray(model.fit_regularized(alpha=1e-3 * len(y), L1_wt=0.0,
                                                      disp=0).params)
    return design[:, keep] @ params


def cross_validated_scores(x: np.ndarray, labels: np.ndarray, folds: int,
                           seed: int) -> np.ndarray:
    """Out-of-fold logistic scores: each feature scored by the model fitted on the other
    folds."""
    fold = stratified_folds(labels, folds, seed)
    out = np.empty(len(labels))
    for k in range(folds):
        test = fold == k
        out[test] = _logit_scores(x, labels, ~test)[test]
    return out


@dataclass(frozen=True)
class Prediction:
    """How well one set of predictors separates one label."""

    auc: float
    ci_low: float
    ci_high: float


def predictability(statistics: dict[str, np.ndarray], labels: np.ndarray, *, folds: int,
                   n_resamples: int, seed: int) -> dict[str, Prediction]:
    """Cross-validated AUC of each predictor alone and all together (ALL), each with its
    bootstrap interval, and the permutation control (SHUFFLED): all predictors against
    SHUFFLES permutations of the labels, their mean AUC and middle 95 %. Every AUC is NaN
    when the label has fewer than `folds` features of either class (too few to put one in
    every fold)."""
    labels = np.asarray(labels, dtype=bool)
    names: Sequence[str] = (*PREDICTORS, ALL, SHUFFLED)
    if min(labels.sum(), (~labels).sum()) < folds:
        return {name: Prediction(math.nan, math.nan, math.nan) for name in names}
    every = np.column_stack([statistics[p] for p in PREDICTORS])
    out = {}
    for name in (*PREDICTORS, ALL):
        x = every if name == ALL else statistics[name][:, None]
        scores = cross_validated_scores(x, labels, folds, seed)
        out[name] = Prediction(auc(scores, labels),
                               *bootstrap_auc(scores, labels, n_resamples, seed))
    rng = np.random.default_rng(seed + 1)
    null = []
    for _ in range(SHUFFLES):
        shuffled = rng.permutation(labels)
        null.append(auc(cross_validated_scores(every, shuffled, folds, seed), shuffled))
    low, high = np.percentile(null, [2.5, 97.5])
    out[SHUFFLED] = Prediction(float(np.mean(null)), float(low), float(high))
    return out


# ---- the perplexity-matched comparison ---------------------------------------------------

@dataclass(frozen=True)
class Match:
    """Where a target perplexity falls on a pruning method's grid."""

    sparsity: float
    """The interpolated sparsity (0 when the target is at or below the dense perplexity)."""
    low: str
    """The grid point below ('dense' for the dense model)."""
    high: str
    """The grid point above (the same as low when the target sits on it)."""
    weight: float
    """How far from low towards high, in log perplexity (0..1)."""


def match_perplexity(grid: Sequence[tuple[str, float, float]], target: float) -> Match | None:
    """The sparsity at which a method's perplexity would equal `target`, linear in log
    perplexity between the grid's (name, sparsity, perplexity) points, which must start with
    the dense model (sparsity 0) and rise with sparsity; None above the grid's last point."""
    points = sorted(grid, key=lambda p: p[1])
    if target <= points[0][2]:
        return Match(points[0][1], points[0][0], points[0][0], 0.0)
    for (name_a, s_a, p_a), (name_b, s_b, p_b) in zip(points, points[1:], strict=False):
        if p_a <= target <= p_b:
            w = (math.log(target) - math.log(p_a)) / (math.log(p_b) - math.log(p_a)) \
                if p_b > p_a else 0.0
            return Match(s_a + w * (s_b - s_a), name_a, name_b, w)
    return None


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A and B| / |A or B| of two boolean masks; NaN when both are empty."""
    union = int(np.sum(a | b))
    return int(np.sum(a & b)) / union if union else math.nan


def chance_jaccard(n_a: int, n_b: int, n: int) -> float:
    """The Jaccard overlap two random sets of n_a and n_b of n features have on average (to
    first order: |A and B| ~ n_a n_b / n)."""
    inter = n_a * n_b / n if n else 0.0
    union = n_a + n_b - inter
    return inter / union if union else math.nan
