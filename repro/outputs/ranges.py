"""The values a table column or a claim can take at all, where they are bounded.

A band is a check only while some value of the quantity could fall outside it. With few
replicates and a noisy quantity (RQ5's Spearman over 15 sampled features on the small
profile), `repro bless` can write a band wider than the quantity's whole range: a correlation
of 0.1 with a band of 7 passes every correlation there is, its sign flipped included. Verify
reports such a cell or claim UNCHECKED, naming the range, instead of a PASS that nothing
could have turned into a FAIL: no check, listed on its own and counted neither way, since the
bless decided it before any run (docs/verdict.md).

Columns are named as the tables name them; the frequency-bin columns (`survival_bin3`,
`init_drift_bin1`, ...) share the range of their stem. A column not listed here is unbounded
or bounded on one side only (perplexity, explained variance, a ratio), where no band covers
every value.
"""

from __future__ import annotations

import re

FRACTION = (0.0, 1.0)
CORRELATION = (-1.0, 1.0)
ONE_MINUS_COSINE = (0.0, 2.0)

_FRACTIONS = (
    "achieved_sparsity", "shared_fraction", "survival", "survival_max_cosine", "identity_rate",
    "identity_rate_control", "survival_control", "seed_floor", "survival_wanda",
    "survival_magnitude", "survival_wanda_control", "survival_magnitude_control",
    "dense_dead_fraction", "pretrained_dead_fraction", "fragile_fraction", "feature_p",
    "causal_p", "causal_p_per_firing",
    # yes/no answers, the fraction of replicates that say yes (repro.outputs.replicates)
    "ratio_usable", "ratio_control_usable", "dense_viable", "pretrained_viable",
    "pretrained_is_stand_in",
    # beyond the paper: T7's AUCs, T8's overlaps (repro.outputs.predictability)
    "auc", "auc_ci_low", "auc_ci_high", "matched_sparsity", "jaccard", "jaccard_chance",
)
_CORRELATIONS = (
    "mean_matched_cosine", "mean_max_cosine", "binned_rho", "binned_rho_control",
    "feature_rho", "feature_ci_low", "feature_ci_high", "feature_rho_control", "mean_r",
    "median_r", "rho_rate_vs_r",
    *(f"causal_{name}{form}" for name in ("rho", "ci_low", "ci_high", "reliability", "rate_rho")
      for form in ("", "_per_firing")),
    "damage_spearman",
)

COLUMN_RANGES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(_FRACTIONS, FRACTION),
    **dict.fromkeys(_CORRELATIONS, CORRELATION),
    "init_drift": ONE_MINUS_COSINE,
}
"""Every bounded column of T1-T8 (by stem for the per-bin columns) and its closed range."""

CLAIM_RANGES: dict[str, tuple[float, float]] = {
    "C4": FRACTION,
    "C4_per_firing": FRACTION,
}
"""Claims whose number is bounded on both sides: C4 is the largest |rho| bound (in [0, 1])."""

COVERED = "covers every value"
"""The words every covered check's detail carries (verify_text folds such cells by column)."""

_BIN = re.compile(r"_bin\d+$")


def column_range(column: str) -> tuple[float, float] | None:
    """The closed range of a table column's values, None when it is not bounded on both sides."""
    return COLUMN_RANGES.get(_BIN.sub("", column))


def covered(bounds: tuple[float, float] | None, low: float, high: float) -> bool:
    """Whether the band [low, high] (a cell's expected +- allowance, or a claim's region, which
    may be one-sided) contains every value in `bounds`: no value of the quantity could fail it."""
    return bounds is not None and low <= bounds[0] and high >= bounds[1]


def covered_text(name: str, bounds: tuple[float, float], allowance: float) -> str:
    """The reason a covered check is inconclusive, in one clause."""
    return (f"the band +-{allowance:.3g} {COVERED} {name} can take "
            f"[{bounds[0]:g}, {bounds[1]:g}]: nothing could fail it (more replicates, or a "
            "larger sample behind the number, would narrow it)")
