"""The shape of every JSON file `repro verify`, `repro bless` and `repro report` read from a
run folder, declared once and checked on reading (pydantic, strict: text is not a number and a
boolean is not one either).

The stages write these files in exactly these shapes. One of the right name and the wrong shape
(a list where a table belongs, text where a number belongs, a field missing) was altered by hand
or by another program: `read` refuses it in one line naming the file, the place in it and what
belongs there, before the command writes anything. Fields no reader uses are free, so a newer
writer may add some. Stage manifests are checked where they are read, in
repro.stages.store.read_manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NotRequired

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic needs it on Python 3.11

from repro.errors import ReproError

STRICT = ConfigDict(strict=True)


@with_config(STRICT)
class Gate(TypedDict):
    """One sanity gate of tables/sanity.json (repro.outputs.sanity.sanity_gates)."""

    gate: str
    value: float
    low: float
    high: float
    ok: bool
    source: str


@with_config(STRICT)
class Sanity(TypedDict):
    gates: list[Gate]


@with_config(STRICT)
class Check(TypedDict):
    """One check of verification.json (repro.outputs.verify.Check)."""

    name: str
    kind: str
    verdict: str
    expected: Any
    got: Any
    tolerance: Any
    margin: float | None
    detail: str
    statement: NotRequired[str]


Counts = TypedDict("Counts", {  # "pass" is a keyword: functional form
    "pass": int, "fail": int, "info": int, "inconclusive": NotRequired[int],
    "unchecked": NotRequired[int]})
with_config(STRICT)(Counts)  # as the decorator does to the classes (it sets the config)


@with_config(STRICT)
class Verified(TypedDict):
    ok: bool
    counts: Counts
    checks: list[Check]


@with_config(STRICT)
class Unverified(TypedDict):
    unverified: bool
    line: str


@with_config(STRICT)
class ControlRow(TypedDict):
    """One row of method_controls.json's results (repro.science.method_controls)."""

    control: str
    protocol: str
    survival_per_bin: list[float]
    ci_low: float
    ci_high: float
    passed: bool


@with_config(STRICT)
class MethodControls(TypedDict):
    ok: bool
    line: str
    results: list[ControlRow]
    dictionary_recovery_per_bin: list[float]
    planted_rho: dict[str, float]


@with_config(STRICT)
class CurvePoint(TypedDict):
    tokens: float
    explained_variance: float | None
    l0: NotRequired[float | None]
    dead_fraction: NotRequired[float | None]


@with_config(STRICT)
class Curve(TypedDict):
    points: list[CurvePoint]


CLAIMS = TypeAdapter(dict[str, dict[str, Any]])
"""claims.json: one table per claim (C1, C2, ...), each with its numbers."""
SANITY = TypeAdapter(Sanity)
VERIFIED = TypeAdapter(Verified)
UNVERIFIED = TypeAdapter(Unverified)
CAPTIONS = TypeAdapter(dict[str, str])
METHOD_CONTROLS = TypeAdapter(MethodControls)
CURVE = TypeAdapter(Curve)


def verification(doc: Any) -> TypeAdapter:
    """verification.json: a verdict with its counts and checks, or the line of a run that had
    nothing to be verified against."""
    return UNVERIFIED if isinstance(doc, dict) and doc.get("unverified") else VERIFIED


def finite_number(value: Any) -> bool:
    """A number a claim or a tolerance can hold: not a boolean, not NaN or infinite."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


FIX = "rerun the stage that writes it (`repro all` redoes it) or restore the file"


def read(path: Path, shape: TypeAdapter | Callable[[Any], TypeAdapter], fix: str = FIX) -> Any:
    """The file's JSON when it has `shape`; None when there is no file; else one ReproError."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ReproError(f"{path}: not valid JSON ({exc}); {fix}") from None
    except OSError as exc:
        raise ReproError(f"{path}: cannot be read ({exc.strerror}); {fix}") from None
    if not isinstance(shape, TypeAdapter):
        shape = shape(doc)
    try:
        shape.validate_python(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise ReproError(f"{path}: {where}: {first['msg'].lower()} (the file does not have the "
                         f"shape repro writes); {fix}") from None
    return doc
