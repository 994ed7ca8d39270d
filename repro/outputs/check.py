"""One verdict of `repro verify`: what was expected, what the run has, how far inside its band.

Shared by the table checks (repro.outputs.verify) and the claim checks
(repro.outputs.verify_claims); verification.json holds a list of these as dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """What a check is about (its section of verification.md)."""

    SANITY = "sanity"
    """A sanity gate of the run (repro.outputs.sanity.sanity_gates)."""
    INTEGRITY = "integrity"
    """A file of the run against the sha256 its manifest recorded."""
    TABLE = "table"
    """A whole table against its expected twin."""
    CELL = "cell"
    """One cell of a table."""
    STRUCTURE = "structure"
    """A table's rows and columns."""
    CLAIM = "claim"
    """A claim against the blessed run's (agreement)."""
    REPRODUCTION = "reproduction"
    """A claim of the paper in this run."""
    NUMERICS = "numerics"
    """The run's CPU arithmetic against the blessed run's."""
    RUN = "run"
    """The run folder's completeness."""


class Verdict(StrEnum):
    """A check's answer: the first four for agreement, the last three (and info) for the
    paper's claims."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    """The run's interval straddles the band: a failure, with its reason."""
    UNCHECKED = "unchecked"
    """No check: the blessed band covers every value the number can take, or a ratio's
    inverse as well (repro.outputs.ranges), so no run could fail it. Decided by the expected
    outputs before any run, the same for every run: shown with its reason, in its own list,
    never counted for or against the verdict."""
    INFO = "info"
    """Shown, never counted for or against the verdict."""
    HOLDS = "holds"
    DOES_NOT_HOLD = "does not hold"
    UNDECIDED = "undecided"


def passed(ok: bool) -> Verdict:
    """PASS when `ok`, else FAIL."""
    return Verdict.PASS if ok else Verdict.FAIL


AGREEMENT_VERDICTS = (Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.UNCHECKED,
                      Verdict.INFO)
REPRODUCTION_VERDICTS = (Verdict.HOLDS, Verdict.DOES_NOT_HOLD, Verdict.UNDECIDED, Verdict.INFO)


@dataclass(frozen=True)
class Check:
    """One verdict: what was expected, what the run has, and how far inside the tolerance."""

    name: str
    kind: Kind
    verdict: Verdict
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
