"""C4 can fail for the right reason: simulated causal scores through the paper's C4 check.

C4 says survival does not predict causal importance, a null claim. It must HOLD only on
evidence (every condition's CI of rho inside +-0.3, from a causal score that measures
something), NOT HOLD on a real correlation, and never HOLD for a causal score that is noise.
Conditions share one causal sample (one dense SAE per model), as in the pipeline.
"""

from __future__ import annotations

import numpy as np
import pytest

from repro.outputs.claims import c4_evidence
from repro.outputs.expected import EXPECTED_ROOT, load_claims
from repro.outputs.verify_claims import reproduce_claim
from repro.science import stats
from repro.study.reader import load_study, profile_path

C4 = next(c for c in load_claims(EXPECTED_ROOT / "paper") if c.name == "C4")
PAPER_FEATURES = 5 * load_study(profile_path("paper")).thresholds.causal_features_per_bin


def simulate(rng: np.random.Generator, n: int, kind: str, conditions: int = 17) -> str:
    """C4's verdict for one simulated study; kind: null, noise or correlated."""
    importance = rng.standard_normal(n)  # a feature's true effect, the same in every condition
    survival_base = rng.standard_normal(n)
    rows = []
    for c in range(conditions):
        survival = survival_base + 0.5 * rng.standard_normal(n)
        if kind == "noise":  # a broken measurement: the two halves share nothing
            halves = rng.standard_normal((n, 2))
        else:
            true = importance if kind == "null" else survival
            halves = true[:, None] + 0.3 * rng.standard_normal((n, 2))
        cs = stats.feature_spearman(halves.sum(1), survival, n_resamples=400, seed=c)
        rows.append({"id": str(c), "causal_rho": cs.rho, "causal_ci_low": cs.ci_low,
                     "causal_ci_high": cs.ci_high,
                     "causal_reliability": stats.spearman(halves[:, 0], halves[:, 1])})
    return reproduce_claim(C4, {"C4": c4_evidence(rows)}).verdict


def test_the_paper_sample_lets_a_true_null_hold() -> None:
    rng = np.random.default_rng(0)
    assert PAPER_FEATURES >= 400
    assert [simulate(rng, PAPER_FEATURES, "null") for _ in range(3)] == ["holds"] * 3


@pytest.mark.parametrize("n", [20, 100, PAPER_FEATURES])
def test_a_noise_causal_score_never_passes(n: int) -> None:
    rng = np.random.default_rng(n)
    verdicts = {simulate(rng, n, "noise") for _ in range(10)}
    assert "holds" not in verdicts and verdicts <= {"undecided", "does not hold"}


def test_a_real_correlation_fails() -> None:
    rng = np.random.default_rng(1)
    assert [simulate(rng, PAPER_FEATURES, "correlated") for _ in range(3)] == ["does not hold"] * 3
