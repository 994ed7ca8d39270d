"""The counting rules of repro.science.survival, at their edges: tau itself survives, a hair
below does not; a feature that fires once is alive, one that never fires (or has a NaN rate)
is not; numpy and torch agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.science.survival import active, alive, n_survived, survival_rate, survives
from repro.study.spec import SURVIVAL_TAU, SaeSpec


def test_survival_at_the_threshold_and_the_rate() -> None:
    cos = np.array([0.69999, 0.7, 0.95, -0.8, 0.0])
    np.testing.assert_array_equal(survives(cos), [False, True, True, False, False])
    assert survival_rate(cos) == pytest.approx(0.4) and n_survived(cos) == 2
    assert survival_rate(cos, tau=0.9) == pytest.approx(0.2)
    assert np.isnan(survival_rate(np.array([])))
    with pytest.raises(ValueError, match="cosine"):
        survives(cos, tau=1.5)


def test_the_default_tau_is_the_study_files() -> None:
    """One 0.7: the rule's default is the study's default."""
    assert SURVIVAL_TAU == 0.7
    assert SaeSpec(width=8, k=2, lr=1e-3, batch_tokens=8).survival_threshold == SURVIVAL_TAU


def test_alive_and_active_on_numpy_and_torch() -> None:
    rate = np.array([0.0, 1e-9, 0.5, np.nan])
    np.testing.assert_array_equal(alive(rate), [False, True, True, False])
    counts = torch.tensor([0, 1, 7])
    assert alive(counts).tolist() == [False, True, True]
    acts = torch.tensor([[0.0, 0.3], [-0.1, 2.0]])
    assert active(acts).tolist() == [[False, True], [False, True]]
    np.testing.assert_array_equal(active(acts.numpy()), active(acts).numpy())
