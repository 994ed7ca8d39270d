"""The rules every research question counts features by, each written once (docs/design.md,
"Definitions"):

- a feature is **active** on a token when its SAE activation there is above 0;
- it is **alive** when it is active at least once: its firing rate (or count) is above 0;
- it **survives** when its matched decoder cosine (repro.science.match) is at least tau,
  the study's `[sae] survival_threshold` (repro.study.thresholds.SURVIVAL_TAU when none is
  given).

The analysis, the statistics, the stages, the method controls and the figures all call these,
so that changing a definition changes every table and figure together. Each works on numpy
arrays and torch tensors alike (an elementwise comparison), except the rates, which are numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

from repro.study.thresholds import SURVIVAL_TAU

if TYPE_CHECKING:  # torch is not imported for a comparison: the figures import this too
    import torch

Values = TypeVar("Values", np.ndarray, "torch.Tensor")


def active(activations: Values) -> Values:
    """Boolean per element: the feature fires on that token (activation > 0)."""
    return activations > 0


def alive(firing: Values) -> Values:
    """Boolean per feature: it fires at least once (firing rate or firing count > 0; a NaN
    rate counts as dead)."""
    return firing > 0


def survives(matched_cosine: np.ndarray, tau: float = SURVIVAL_TAU) -> np.ndarray:
    """Boolean per feature: its matched cosine is at least `tau`."""
    if not -1.0 <= tau <= 1.0:
        raise ValueError(f"tau is a cosine and must lie in [-1, 1], got {tau}")
    return np.asarray(matched_cosine) >= tau


def survival_rate(matched_cosine: np.ndarray, tau: float = SURVIVAL_TAU) -> float:
    """Fraction of the features that survive (RQ1's shared fraction, RQ2's survival); NaN for
    an empty set (no features, no fraction)."""
    kept = survives(matched_cosine, tau)
    return float(kept.mean()) if kept.size else float("nan")


def n_survived(matched_cosine: np.ndarray, tau: float = SURVIVAL_TAU) -> int:
    """How many of the features survive."""
    return int(survives(matched_cosine, tau).sum())
