"""One verdict of `repro verify`: what was expected, what the run has, how far inside its band.

Shared by the table checks (repro.outputs.verify) and the claim checks
(repro.outputs.verify_claims); verification.json holds a list of these as dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    """One verdict: what was expected, what the run has, and how far inside the tolerance."""

    name: str
    kind: str
    """sanity, integrity, table, cell, structure, claim (agreement), reproduction, numerics,
    run."""
    verdict: str
    """pass, fail, inconclusive or info; for kind reproduction: holds, does not hold,
    undecided or info."""
    expected: Any
    got: Any
    tolerance: str
    margin: float | None
    detail: str = ""
    statement: str = ""
    """For a claim: what it says, in words (the report's first column)."""
    interval: list[float] | None = None
    """For a claim: this run's 95 % interval over replicates ([value, value] with one)."""
