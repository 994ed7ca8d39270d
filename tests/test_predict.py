"""RQ6 and the perplexity-matched comparison (repro/science/predict.py): each fast path against
an obviously correct twin, the shuffled-label control at chance, and the planted mistakes it
exists to catch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize

from repro.science import predict


def _pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The AUC by its definition: over every positive-negative pair, 1 when the positive
    scores higher, 1/2 on a tie."""
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def _data(n: int = 600, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features whose label depends on peak activation (strongly) and firing rate (weakly);
    the decoder norm is constant to float32's last bits, as in a TopK SAE of sae-lens."""
    rng = np.random.default_rng(seed)
    stats = {name: rng.normal(size=n) for name in predict.PREDICTORS}
    stats["decoder_norm"] = 1.0 + rng.normal(size=n) * 4e-8
    logit = 2.5 * stats["peak_activation"] - 0.8 * stats["log_firing_rate"] - 1.5
    return stats, rng.random(n) < 1 / (1 + np.exp(-logit))


def test_auc_equals_its_definition_with_ties() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=300).astype(float)  # many ties
    labels = rng.random(300) < 0.3
    assert predict.auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels), abs=1e-12)
    assert predict.auc(-scores, labels) == pytest.approx(1 - _pairwise_auc(scores, labels))
    assert math.isnan(predict.auc(scores, np.zeros(300, dtype=bool)))


def test_the_bootstrap_interval_equals_a_loop_over_the_same_resamples() -> None:
    rng = np.random.default_rng(4)
    scores, labels = rng.normal(size=200), rng.random(200) < 0.4
    scores[labels] += 0.8
    low, high = predict.bootstrap_auc(scores, labels, 400, seed=9)
    idx = np.random.default_rng(9).integers(0, 200, size=(400, 200))
    loop = [_pairwise_auc(scores[i], labels[i]) for i in idx]
    assert (low, high) == pytest.approx(tuple(np.percentile(loop, [2.5, 97.5])), abs=1e-12)
    assert low < predict.auc(scores, labels) < high


def test_the_logistic_fit_equals_a_direct_minimisation_of_the_log_loss() -> None:
    """statsmodels' Newton steps against scipy's BFGS on the negative log-likelihood written
    out: the same linear scores."""
    stats, labels = _data()
    x = np.column_stack([stats[p] for p in predict.PREDICTORS])
    train = np.arange(len(labels)) % 3 != 0
    fast = predict._logit_scores(x, labels, train)
    z = predict._standardised(x, train)[:, [0, 1, 2, 4]]  # the decoder norm column is all 0
    design = np.column_stack([np.ones(len(z)), z])

    def loss(beta: np.ndarray) -> float:
        eta = design[train] @ beta
        return float(np.sum(np.logaddexp(0, eta) - labels[train] * eta))

    beta = optimize.minimize(loss, np.zeros(design.shape[1]), method="BFGS",
                             options={"gtol": 1e-10}).x
    assert fast == pytest.approx(design @ beta, abs=1e-5)


def test_folds_hold_both_classes_in_proportion() -> None:
    labels = np.arange(103) % 4 == 0  # 26 positives
    fold = predict.stratified_folds(labels, 5, seed=1)
    for k in range(5):
        assert labels[fold == k].sum() in (5, 6)
        assert (fold == k).sum() in (20, 21, 22)


def test_predictability_finds_the_signal_and_the_control_sits_at_chance() -> None:
    stats, labels = _data(1200)
    got = predict.predictability(stats, labels, folds=5, n_resamples=500, seed=0)
    assert got["peak_activation"].auc > 0.8 and got["peak_activation"].ci_low > 0.75
    assert got[predict.ALL].auc >= got["peak_activation"].auc - 0.01
    assert got["mean_activation"].ci_low < 0.5 < got["mean_activation"].ci_high
    assert got["decoder_norm"].auc == 0.5  # constant: no information, not float32 noise
    shuffled = got[predict.SHUFFLED]
    assert shuffled.ci_low < 0.5 < shuffled.ci_high and abs(shuffled.auc - 0.5) < 0.06


def test_the_shuffled_control_catches_a_procedure_that_leaks() -> None:
    """Planted: scores fitted on every feature, the scored one included (no held-out fold),
    with many useless predictors: in-sample AUC on pure-noise labels rises above chance,
    which the control's interval, computed out of fold, does not."""
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(120, 40))
    labels = rng.random(120) < 0.5
    everywhere = np.ones(120, dtype=bool)
    leaked = predict.auc(predict._logit_scores(noise, labels, everywhere), labels)
    honest = predict.auc(predict.cross_validated_scores(noise, labels, 5, seed=0), labels)
    assert leaked > 0.75 and abs(honest - 0.5) < 0.15


def test_too_few_of_a_class_to_fill_every_fold_gives_no_auc() -> None:
    stats, _ = _data(50)
    labels = np.zeros(50, dtype=bool)
    labels[:3] = True
    got = predict.predictability(stats, labels, folds=5, n_resamples=10, seed=0)
    assert all(math.isnan(p.auc) for p in got.values())


def test_feature_statistics_equal_a_token_by_token_loop() -> None:
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=16, k=3))
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_enc):
            p.copy_(torch.randn_like(p))
    acts = torch.randn(70, 8)
    got = predict.feature_statistics(sae, iter(acts.split(25)))
    with torch.no_grad():
        f = torch.stack([sae.encode(x[None])[0] for x in acts]).double().numpy()
    fires = f > 0
    assert got["firing_rate"] == pytest.approx(fires.mean(0))
    assert got["peak_activation"] == pytest.approx(f.max(0).clip(min=0))
    mean = np.array([f[fires[:, i], i].mean() if fires[:, i].any() else 0.0 for i in range(16)])
    assert got["mean_activation"] == pytest.approx(mean)
    w_enc, w_dec = sae.W_enc.detach().double().numpy(), sae.W_dec.detach().double().numpy()
    cos = [w_enc[:, i] @ w_dec[i] / np.linalg.norm(w_enc[:, i]) / np.linalg.norm(w_dec[i])
           for i in range(16)]
    assert got["encoder_decoder_cosine"] == pytest.approx(cos)
    assert got["decoder_norm"] == pytest.approx(np.linalg.norm(w_dec, axis=1))


def test_perplexity_matching_interpolates_on_the_log_scale() -> None:
    grid = [("dense", 0.0, 70.0), ("m/30", 0.3, 110.0), ("m/50", 0.5, 700.0)]
    m = predict.match_perplexity(grid, 120.0)
    w = (math.log(120) - math.log(110)) / (math.log(700) - math.log(110))
    assert (m.low, m.high) == ("m/30", "m/50")
    assert m.weight == pytest.approx(w) and m.sparsity == pytest.approx(0.3 + 0.2 * w)
    on_dense = predict.match_perplexity(grid, 69.0)  # quantization can even lower it
    assert (on_dense.sparsity, on_dense.low, on_dense.high) == (0.0, "dense", "dense")
    assert predict.match_perplexity(grid, 800.0) is None
    assert predict.match_perplexity(grid, 110.0).sparsity == pytest.approx(0.3)


def test_jaccard_and_its_chance_level() -> None:
    a = np.array([1, 1, 0, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 1, 1], dtype=bool)
    assert predict.jaccard(a, b) == pytest.approx(2 / 4)
    assert math.isnan(predict.jaccard(np.zeros(3, bool), np.zeros(3, bool)))
    rng = np.random.default_rng(0)
    draws = [predict.jaccard(rng.permutation(1000) < 200, rng.permutation(1000) < 300)
             for _ in range(300)]
    assert np.mean(draws) == pytest.approx(predict.chance_jaccard(200, 300, 1000), rel=0.03)
