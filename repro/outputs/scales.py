"""The scales a band is symmetric on: where a number's spread is the same whatever its value.

A band of +-w around every value of a column treats a rate of 0.04 and one of 0.35, or a
ratio of 1.2 and one of 12, as equally noisy, and they are not. Each scale here maps a kind
of number to one where its sd does not depend on where it lies, and `repro bless` pools sds
and makes bands there (repro.outputs.bands):

- LINEAR: the number itself (errors, correlations, counts).
- LOG, for a ratio: it moves by a factor, and its inverse, the contrary finding, lies as far
  from 1 as the finding.
- ANGLE, for a rate p of n features: asin(sqrt(p)) has sd 1 / (2 sqrt(n)) at every p, while
  p itself has sd sqrt(p (1 - p) / n).
- Z, for a two-sided p-value: the normal quantile z = Phi^-1(1 - p / 2), on which a test's p
  is linear in its statistic (a Spearman rho over n features: z ~ rho sqrt(n - 1)); p itself
  spans orders of magnitude between rows (1e-12 next to 0.3).

A band of width w on a scale passes the values whose transform lies within w of the expected
value's, clamped to the values the number can take (`band_bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

LINEAR, LOG, ANGLE, Z = "linear", "log", "angle", "z"

MAX_LOG = 700.0
"""The largest log turned back into a ratio (e^700 ~ 1e304; e^710 overflows a float): a band
of one degree of freedom, widened x24.7, can reach e^800, and passes every ratio anyway."""


MAX_Z = 40.0
"""Past every p-value a float holds (the smallest, 5e-324, is z = 38.4); turned back into a
p-value it is 0, so a band reaching it covers every p down to 0 and verify says UNCHECKED."""


def _z_of_p(p: float) -> float:
    from scipy.special import ndtri  # 0.2 s to import: only where a p-value is banded

    return float(-ndtri(p / 2))


def _p_of_z(z: float) -> float:
    from scipy.special import ndtr

    return float(2 * ndtr(-z))


def log_factor(width: float) -> float:
    """The factor a band of `width` on the log scale multiplies and divides by."""
    return math.exp(min(width, MAX_LOG))


@dataclass(frozen=True)
class Scale:
    """A monotone map of a number's values onto a scale where its spread is even."""

    forward: Callable[[float], float]
    inverse: Callable[[float], float]
    values: tuple[float, float]
    """The values the number can take on this scale (closed), outside which it is undefined."""
    span: tuple[float, float]
    """Where the transformed values lie (`forward` of `values`, ordered)."""
    what: str
    """The transform, in words, for the tolerances file's notes."""


SCALES = {
    LOG: Scale(math.log, log_factor, (math.ulp(0.0), math.inf),
               (-math.inf, MAX_LOG), "the log"),
    ANGLE: Scale(lambda p: math.asin(math.sqrt(p)), lambda t: math.sin(t) ** 2, (0.0, 1.0),
                 (0.0, math.pi / 2), "asin(sqrt(rate))"),
    Z: Scale(_z_of_p, _p_of_z, (math.ulp(0.0), 1.0), (0.0, MAX_Z),
             "the normal quantile of p / 2"),
}


def to_scale(x: float, scale: str) -> float:
    """`x` on `scale`; NaN where the scale does not define it (a ratio <= 0, a rate
    outside [0, 1], a p-value of 0)."""
    if scale == LINEAR:
        return x
    s = SCALES[scale]
    t = s.forward(x) if s.values[0] <= x <= s.values[1] else math.nan
    return t if math.isfinite(t) else math.nan


def band_bounds(expected: float, scale: str, width: float) -> tuple[float, float] | None:
    """The values within `width` of `expected` on `scale`, low to high; None where the scale
    does not define `expected` (the caller falls back to the linear band)."""
    t = to_scale(expected, scale)
    if scale == LINEAR or not math.isfinite(t):
        return None
    s = SCALES[scale]
    ends = [s.inverse(min(max(t + d, s.span[0]), s.span[1])) for d in (-width, width)]
    return min(ends), max(ends)
