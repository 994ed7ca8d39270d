"""The two answers every claim gets: does the paper's claim hold here, does this run agree?

- Reproduction (`reproduce_claim`, kind "reproduction"): the paper's claim
  (repro/expected_outputs/paper/claims.toml: its number and this project's reconstruction
  tolerance) against this run's value and 95 % interval over replicates. HOLDS when the
  whole interval lies in the claim's region, DOES NOT HOLD when none of it does, UNDECIDED
  when it straddles the bound, or when the evidence a claim requires (C4's causal
  reliability) is not met over the whole interval. Decides the exit code of the paper profile.
- Agreement (`agree_claim`, kind "claim"): the profile's blessed value and band
  (repro/expected_outputs/<profile>/claims.toml, written by `repro bless`) against this run's mean.
  PASS inside the band; FAIL when the whole interval lies outside it; INCONCLUSIVE (a
  failure, with the reason) when the mean is outside but the interval still reaches the band,
  or when the band is so wide that the opposite finding would pass too (a ratio's inverse)
  or covers every value the claim can take (repro.outputs.ranges).
  Decides the exit code of the CPU profiles, with the table cells.

A run of one replicate has no interval: its interval is its value, and the answers are read
from the point, which the detail says.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeGuard

from repro.outputs import ranges, shapes
from repro.outputs.check import Check, Kind, Verdict
from repro.outputs.expected import (
    BASE_CLAIMS_PROFILE,
    CLAIMS,
    EXPECTED_ROOT,
    ClaimSpec,
    load_claims,
)
from repro.outputs.scales import LOG, log_factor
from repro.stages import layout

HOLDS, DOES_NOT_HOLD, UNDECIDED = Verdict.HOLDS, Verdict.DOES_NOT_HOLD, Verdict.UNDECIDED


def _finite(x: Any) -> TypeGuard[float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def interval(entry: dict, field: str) -> tuple[float, float, int] | None:
    """(low, high, replicates) of a claim's number: its 95 % interval over replicates, or the
    point itself with one replicate; None when the run has no number."""
    value = entry.get(field)
    if not _finite(value):
        return None
    s = (entry.get("spread") or {}).get(field)
    if isinstance(s, dict) and _finite(s.get("ci_low")) and _finite(s.get("ci_high")):
        return float(s["ci_low"]), float(s["ci_high"]), int(s.get("n", 1))
    return float(value), float(value), 1


def region(spec: ClaimSpec) -> tuple[float, float]:
    """The values a claim accepts: its expected number widened by its tolerance."""
    low, high = spec.tolerance.bounds(spec.expected)
    return {"near": (low, high), "at_least": (low, math.inf),
            "at_most": (-math.inf, high)}[spec.compare]


def _tolerance_text(spec: ClaimSpec) -> str:
    lo, hi = region(spec)
    tol = spec.tolerance
    near = (f"x/÷ {log_factor(tol.width):.3g}" if tol.scale == LOG and tol.width
            else f"±{tol.allowance(spec.expected):g}")
    return {"near": near, "at_least": f">= {lo:g}", "at_most": f"<= {hi:g}"}[spec.compare]


def _margin(spec: ClaimSpec, value: float) -> float:
    """How far inside the region a value is (negative: outside)."""
    lo, hi = region(spec)
    return min(value - lo, hi - value)


def _show(iv: tuple[float, float, int] | None) -> str:
    if iv is None:
        return "no value"
    lo, hi, n = iv
    return f"[{lo:.4g}, {hi:.4g}] over {n} replicates" if n > 1 else "1 replicate: no interval"


def _unmet(spec: ClaimSpec, entry: dict) -> list[str]:
    """Requirements (field >= minimum) that the whole interval of the field does not meet."""
    out = []
    for field, minimum in spec.requires:
        iv = interval(entry, field)
        if iv is None or iv[0] < minimum:
            shown = entry.get(field) if iv is None else f"{iv[0]:.3g}..{iv[1]:.3g}"
            out.append(f"{field} {shown} not >= {minimum:g}")
    return out


def _entry(claims: dict | None, spec: ClaimSpec) -> dict:
    entry = (claims or {}).get(spec.claim)
    return entry if isinstance(entry, dict) else {}


def reproduce_claim(spec: ClaimSpec, claims: dict | None) -> Check:
    """Does the paper's claim hold in this run? HOLDS, DOES NOT HOLD or UNDECIDED."""
    entry = _entry(claims, spec)
    got = entry.get(spec.field)
    iv = interval(entry, spec.field)
    lo, hi = region(spec)
    details = [] if claims is not None else ["claims.json is missing"]
    unmet = _unmet(spec, entry) if claims is not None else []
    if iv is None:
        verdict = UNDECIDED
        details.append("the run reports no value")
    elif unmet:
        verdict = UNDECIDED
        details.append("the evidence cannot tell: " + "; ".join(unmet))
    elif lo <= iv[0] and iv[1] <= hi:
        verdict = HOLDS
    elif iv[1] < lo or iv[0] > hi:
        verdict = DOES_NOT_HOLD
        loose = interval(entry, spec.inconclusive_field) if spec.inconclusive_field else None
        if loose is not None and lo <= entry[spec.inconclusive_field] <= hi:
            verdict = UNDECIDED
            details.append(f"the sample cannot tell: {spec.inconclusive_field}="
                           f"{entry[spec.inconclusive_field]:.4g} meets the bound, "
                           f"{spec.field} does not")
    else:
        verdict = UNDECIDED
        details.append("the interval straddles the bound")
    if spec.informational:
        details.insert(0, f"{verdict}; the paper has no number for this control")
        verdict = Verdict.INFO
    return Check(spec.name, Kind.REPRODUCTION, verdict, spec.expected, got, _tolerance_text(spec),
                 _margin(spec, got) if _finite(got) else None,
                 "; ".join(details), spec.statement, _interval_list(iv))


def _interval_list(iv: tuple[float, float, int] | None) -> list[float] | None:
    return None if iv is None else [iv[0], iv[1]]


def _toothless(spec: ClaimSpec) -> str:
    """Why a value inside the band proves nothing, or "": the band covers every value the
    claim can take (repro.outputs.ranges), or the claim is a ratio whose blessed interval
    established a direction (excludes 1) and its band is so wide that the inverse, the
    opposite finding, would pass as well."""
    lo, hi = region(spec)
    bounds = ranges.CLAIM_RANGES.get(spec.claim)
    if bounds is not None and ranges.covered(bounds, lo, hi):
        return ranges.covered_text(spec.claim, bounds, spec.tolerance.allowance(spec.expected))
    if spec.contrary != "inverse" or spec.expected <= 0 or spec.interval is None:
        return ""
    established = spec.interval[0] > 1 or spec.interval[1] < 1
    if established and lo <= 1 / spec.expected <= hi:
        return f"the band is so wide that the inverse ratio {1 / spec.expected:.4g} would pass too"
    return ""


def agree_claim(spec: ClaimSpec, claims: dict | None) -> Check:
    """Does this run's claim agree with the blessed one? PASS, FAIL or INCONCLUSIVE; UNCHECKED
    when the blessed band could not fail any run (`_toothless`) and the run is inside it."""
    entry = _entry(claims, spec)
    got: Any = entry.get(spec.field)  # claims.json's value: a finite number wherever iv is set
    iv = interval(entry, spec.field)
    lo, hi = region(spec)
    details = [_show(iv)] if claims is not None else ["claims.json is missing"]
    if iv is None:
        verdict = Verdict.FAIL
    elif lo <= got <= hi:
        verdict = Verdict.PASS
        if reason := _toothless(spec):
            verdict = Verdict.UNCHECKED
            details.insert(0, reason)
    elif iv[1] < lo or iv[0] > hi:
        verdict = Verdict.FAIL
    else:
        verdict = Verdict.INCONCLUSIVE
        details.insert(0, "the mean is outside the band, its interval still reaches it")
    if spec.informational:
        details.insert(0, "met" if verdict == Verdict.PASS else f"not met ({verdict})")
        verdict = Verdict.INFO
    return Check(spec.name, Kind.CLAIM, verdict, spec.expected, got, _tolerance_text(spec),
                 _margin(spec, got) if _finite(got) else None, "; ".join(details),
                 spec.statement, _interval_list(iv))


def read_claims(run_dir: Path) -> dict | None:
    """RUN_DIR/claims.json, None when it is missing; one of the wrong shape is bad input."""
    return shapes.read(run_dir / layout.CLAIMS_JSON, shapes.CLAIMS)


def blessed_claims(exp_dir: Path) -> list[ClaimSpec]:
    """The profile's own expected claims (written by `repro bless`), none for the paper's."""
    own = exp_dir / CLAIMS
    base = EXPECTED_ROOT / BASE_CLAIMS_PROFILE / CLAIMS
    if not own.is_file() or own.resolve() == base.resolve():
        return []
    return load_claims(exp_dir)


def verify_claims(run_dir: Path, exp_dir: Path) -> list[Check]:
    """Both answers for every claim: agreement first (when blessed), then reproduction."""
    claims = read_claims(run_dir)
    paper = load_claims(EXPECTED_ROOT / BASE_CLAIMS_PROFILE)
    return ([agree_claim(s, claims) for s in blessed_claims(exp_dir)]
            + [reproduce_claim(s, claims) for s in paper])
