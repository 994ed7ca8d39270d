"""Where the expected outputs live and how their tolerance and claim files read.

`repro verify RUN_DIR` and `repro bless RUN_DIR` both start here. Layout (package data, inside
the package, so that a checkout, a wheel, an sdist and the image find them the same way):

    repro/expected_outputs/tolerances.toml        per profile, table and column: abs and/or rel,
                                                  written by scripts/measure_spread.py
    repro/expected_outputs/paper/claims.toml      C1-C4 as the paper's abstract states them
    repro/expected_outputs/<profile>/claims.toml  the profile's own expected claims (written by
                                                  `repro bless`), overriding the paper's key by key
    repro/expected_outputs/<profile>/T*.csv       blessed tables of that profile

A folder given with `--expected DIR` (a study of one's own) holds all of it in one place:
DIR/T*.csv, DIR/claims.toml and DIR/tolerances.toml; the paper's claims always come from the
package.

These files are data that maintainers may also edit by hand, so every malformed entry is
reported as one ReproError line naming the file and the key, never a traceback.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import repro
from repro.errors import ReproError
from repro.outputs.scales import ANGLE, LINEAR, LOG, SCALES, Z, band_bounds, log_factor
from repro.stages import layout
from repro.study.rules import NAME, NAME_TEXT

EXPECTED_ROOT = Path(repro.__file__).resolve().parent / "expected_outputs"
TOLERANCES = "tolerances.toml"
CLAIMS = "claims.toml"
BASE_CLAIMS_PROFILE = "paper"
COMPARES = ("near", "at_least", "at_most")
SANITY = "sanity.json"
"""The run's sanity gates, written beside its tables (repro.outputs.sanity.sanity_gates)."""
SPREAD = "spread.csv"
"""tables/spread.csv: every cell's mean, sd, 95 % interval and replicate values; not a table
that is blessed or compared (its bands are what bless derives from the replicates)."""


def run_profile(run_dir: Path) -> str:
    """The study name recorded in RUN_DIR/study.toml: it picks the expected outputs."""
    path = run_dir / layout.STUDY_FILE
    if not path.is_file():
        raise ReproError(f"{path} is missing; is {run_dir} a run folder made by `repro all`? "
                         "(or pass --expected DIR)")
    try:
        name = tomllib.loads(path.read_text(encoding="utf-8"))["study"]["name"]
    except (tomllib.TOMLDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ReproError(f"{path}: cannot read [study] name ({exc})") from None
    if not isinstance(name, str) or not NAME.fullmatch(name):  # it names a folder
        raise ReproError(f"{path}: [study] name = {name!r} is not a plain name ({NAME_TEXT}); "
                         "is it the study.toml `repro all` wrote?")
    return name


def run_verdict(run_dir: Path) -> dict[str, Any]:
    """The run's [verdict] settings as its study.toml records them: which answer decides the
    exit code and how many replicates it has (agreement and 1 for a bare copy of tables)."""
    verdict: dict[str, Any] = {"decides": "agreement", "replicates": 1}
    try:
        raw = tomllib.loads((run_dir / layout.STUDY_FILE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return verdict
    given = raw.get("verdict") if isinstance(raw, dict) else None
    if isinstance(given, dict):
        if given.get("decides") in ("agreement", "reproduction"):
            verdict["decides"] = given["decides"]
        if isinstance(given.get("replicates"), int) and not isinstance(given["replicates"], bool):
            verdict["replicates"] = given["replicates"]
    return verdict


def expected_dir(run_dir: Path, given: Path | None) -> tuple[Path, str]:
    """The expected-outputs folder of this run and the profile name that keys its tolerances.

    With --expected the folder is taken as given, and the profile falls back to the folder's
    name when the run folder has no study.toml (a bare copy of tables is still verifiable).
    """
    if given is None:
        profile = run_profile(run_dir)
        return EXPECTED_ROOT / profile, profile
    profile = run_profile(run_dir) if (run_dir / layout.STUDY_FILE).is_file() else given.name
    return given, profile


def tolerances_path(exp_dir: Path) -> Path:
    """The tolerances file of an expected folder: the package's shared file for the package's
    own profiles, the folder's own tolerances.toml anywhere else (or when it has one)."""
    own = exp_dir / TOLERANCES
    if own.is_file() or exp_dir.resolve().parent != EXPECTED_ROOT.resolve():
        return own
    return EXPECTED_ROOT / TOLERANCES


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ReproError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReproError(f"{path}: cannot read ({exc})") from None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0:
        raise ReproError(f"{where} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Tolerance:
    """How far a number may move: |got - expected| <= abs + rel * |expected|, or, for a band
    on a scale (repro.outputs.scales: the log of a ratio, the arcsine-square-root of a rate,
    the normal quantile of a p-value), within `width` of expected on that scale, and never
    narrower than +-(abs + rel x |expected|)."""

    abs: float = 0.0
    """Absolute allowance, in the column's own units."""
    rel: float = 0.0
    """Relative allowance, a fraction of |expected|."""
    note: str = ""
    """Where the allowance comes from (e.g. the measured spread and the multiple taken)."""
    models: tuple[tuple[str, float], ...] = ()
    """(model, abs) for the rows of each model, where a band was measured per model (`repro
    bless` from replicates: models differ in scale and noise); abs covers every other row.
    For a band on a scale, (model, width)."""
    scale: str = LINEAR
    """The scale `width` is measured on; the tolerances file names it by its key (`log = L`,
    `angle = A`, `z = Z`)."""
    width: float = 0.0
    """The band's half-width on `scale` (0 on the linear scale, where abs and rel say it)."""

    def for_model(self, model: str) -> Tolerance:
        """The allowance of one model's rows."""
        found = dict(self.models).get(model)
        if found is None:
            return self
        if self.scale != LINEAR:
            return replace(self, models=(), width=found)
        return replace(self, models=(), abs=found)

    def allowance(self, expected: float) -> float:
        """The half-width of the band around `expected` (its wider side on a scale)."""
        low, high = self.bounds(expected)
        return max(expected - low, high - expected)

    def bounds(self, expected: float) -> tuple[float, float]:
        """The values that pass against `expected`."""
        a = self.abs + self.rel * abs(expected)
        on_scale = band_bounds(expected, self.scale, self.width) if self.width else None
        if on_scale is None:
            return expected - a, expected + a
        return min(on_scale[0], expected - a), max(on_scale[1], expected + a)

    def describe(self) -> str:
        parts = [f"abs {self.abs:g}" if self.abs else "", f"rel {self.rel:g}" if self.rel else "",
                 f"x/÷ {log_factor(self.width):.3g} (log {self.width:.3g})"
                 if self.scale == LOG and self.width else "",
                 f"{SCALES[self.scale].what} +-{self.width:.3g}"
                 if self.scale not in (LINEAR, LOG) and self.width else ""]
        return " + ".join(p for p in parts if p) or "exact"


EXACT = Tolerance()
SCALE_KEYS = (LOG, ANGLE, Z)
"""The tolerances file's keys for a band on a scale (repro.outputs.scales)."""


def _on_scale(entry: dict, where: str) -> tuple[str, float]:
    """The scale and width an entry names (`log = L`, `angle = A` or `z = Z`), or linear."""
    named = [key for key in SCALE_KEYS if key in entry]
    if len(named) > 1:
        raise ReproError(f"{where}: a band is on one scale, not {' and '.join(named)}")
    if not named:
        return LINEAR, 0.0
    return named[0], _number(entry[named[0]], f"{where}.{named[0]}")


def _tolerance(entry: Any, where: str) -> Tolerance:
    if not isinstance(entry, dict):
        raise ReproError(f"{where} must be a table like {{ abs = 1e-6, rel = 1e-4 }}")
    unknown = set(entry) - {"abs", "rel", *SCALE_KEYS, "note", "models"}
    if unknown:
        raise ReproError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: abs, rel, log, "
                         "angle, z, note, models")
    if not {"abs", "rel", *SCALE_KEYS} & set(entry):
        raise ReproError(f"{where} needs abs, rel, log, angle or z")
    note = entry.get("note", "")
    if not isinstance(note, str):
        raise ReproError(f"{where}.note must be a string")
    models = entry.get("models", {})
    if not isinstance(models, dict):
        raise ReproError(f'{where}.models must be a table like {{ "model-key" = 0.01 }}')
    scale, width = _on_scale(entry, where)
    return Tolerance(_number(entry.get("abs", 0.0), f"{where}.abs"),
                     _number(entry.get("rel", 0.0), f"{where}.rel"), note,
                     tuple((str(m), _number(v, f"{where}.models.{m}"))
                           for m, v in sorted(models.items())), scale, width)


@dataclass(frozen=True)
class Tolerances:
    """Per table and column allowances of one profile; '*' covers a table's other columns."""

    by_table: dict[str, dict[str, Tolerance]]
    source: Path | None

    def get(self, table: str, column: str, model: str = "") -> Tolerance:
        """The allowance of a column, for the rows of `model` when it has its own."""
        cols = self.by_table.get(table, {})
        return cols.get(column, cols.get("*", EXACT)).for_model(model)


def load_tolerances(path: Path, profile: str) -> Tolerances:
    """Read `[<profile>.<table>] column = { abs = ..., rel = ... }`; a missing file is exact."""
    if not path.is_file():
        return Tolerances({}, None)
    doc = _read_toml(path)
    for key, section in doc.items():
        if not isinstance(section, dict):
            raise ReproError(f"{path}: top-level key {key!r} must be a [profile.table] section")
    tables = doc.get(profile, {})
    out: dict[str, dict[str, Tolerance]] = {}
    for table, cols in tables.items():
        where = f"{path}: [{profile}.{table}]"
        if not isinstance(cols, dict):
            raise ReproError(f"{where} must be a table of column = {{ abs/rel }} entries")
        out[table] = {col: _tolerance(entry, f"{where} {col}") for col, entry in cols.items()}
    return Tolerances(out, path)


@dataclass(frozen=True)
class ClaimSpec:
    """One checkable claim: a number in claims.json against the paper's number."""

    name: str
    """Check name (e.g. C1, or C1_of for a second number of the same claim)."""
    claim: str
    """Key of the entry in RUN_DIR/claims.json."""
    field: str
    """Field of that entry holding the number (default 'value')."""
    expected: float
    """The paper's number, or the threshold for at_least / at_most."""
    compare: str
    """near: |got - exp| <= tol; at_least: got >= exp - tol; at_most: got <= exp + tol."""
    tolerance: Tolerance
    """The allowance; its note is the claim's stated reason for it."""
    statement: str
    """The claim in words, as the report prints it."""
    source: str
    """Where the number comes from (the abstract) and what this project reconstructed."""
    informational: bool = False
    """Reported with its verdict but never failing (only for numbers with no expected value)."""
    inconclusive_field: str = ""
    """A looser number of the same entry (e.g. the point estimate when `field` is its CI
    bound): when `field` misses the bound but this one meets it, the sample cannot tell and
    the verdict is INCONCLUSIVE, which fails verification with that reason."""
    requires: tuple[tuple[str, float], ...] = ()
    """(field, minimum) pairs the evidence must meet before the claim can pass (e.g. the
    causal score's split-half reliability); below one, the verdict is INCONCLUSIVE."""
    contrary: str = ""
    """'inverse' for a ratio whose opposite finding is its inverse (C2: Wanda / magnitude):
    a band wide enough to pass the inverse too cannot tell the finding from its opposite,
    and the agreement check says UNCHECKED instead of PASS."""
    interval: tuple[float, float] | None = None
    """The blessed run's 95 % interval of the number (written by `repro bless`): the
    contrary rule applies only where it established a direction (a ratio's interval
    excluding 1); a blessed 'no difference' has no opposite to tell apart."""


def _claim(name: str, raw: dict[str, Any], where: str) -> ClaimSpec:
    allowed = {"claim", "field", "expected", "compare", "abs", "rel", "log", "statement",
               "source",
               "reconstructed", "informational", "inconclusive_field", "requires", "contrary",
               "interval"}
    unknown = set(raw) - allowed
    if unknown:
        raise ReproError(f"{where}: unknown key(s) {sorted(unknown)}")
    for key in ("expected", "statement", "source"):
        if key not in raw:
            raise ReproError(f"{where}: {key} is missing")
    compare = raw.get("compare", "near")
    if compare not in COMPARES:
        raise ReproError(f"{where}: compare must be one of {COMPARES}, got {compare!r}")
    if not isinstance(raw.get("informational", False), bool):
        raise ReproError(f"{where}: informational must be true or false")
    expected = raw["expected"]
    if isinstance(expected, bool) or not isinstance(expected, int | float):
        raise ReproError(f"{where}: expected must be a number, got {expected!r}")
    log = _number(raw.get("log", 0.0), f"{where}.log")
    tol = Tolerance(_number(raw.get("abs", 0.0), f"{where}.abs"),
                    _number(raw.get("rel", 0.0), f"{where}.rel"), raw.get("reconstructed", ""),
                    scale=LOG if log else LINEAR, width=log)
    source = raw["source"] + (f" Reconstructed: {raw['reconstructed']}"
                              if raw.get("reconstructed") else "")
    requires = raw.get("requires", {})
    if not isinstance(requires, dict):
        raise ReproError(f"{where}: requires must be a table like {{ reliability = 0.5 }}")
    required = tuple((str(k), _signed(v, f"{where}.requires.{k}")) for k, v in requires.items())
    contrary = raw.get("contrary", "")
    if contrary not in ("", "inverse"):
        raise ReproError(f"{where}: contrary must be \"inverse\" or left out, got {contrary!r}")
    interval = raw.get("interval")
    if interval is not None:
        if not isinstance(interval, list) or len(interval) != 2:
            raise ReproError(f"{where}: interval must be [low, high]")
        interval = (_signed(interval[0], f"{where}.interval"),
                    _signed(interval[1], f"{where}.interval"))
    return ClaimSpec(name, str(raw.get("claim", name)), str(raw.get("field", "value")),
                     float(expected), compare, tol, str(raw["statement"]), source,
                     raw.get("informational", False), str(raw.get("inconclusive_field", "")),
                     required, contrary, interval)


def _signed(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReproError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def load_claims(expected: Path) -> list[ClaimSpec]:
    """The paper's claims, with the profile's own claims.toml overriding them key by key.

    The paper's file ships with the package (expected_outputs/paper/), so a profile only states
    what differs (e.g. `[C2] informational = true`) and the paper's numbers stay written once.
    """
    base_path = EXPECTED_ROOT / BASE_CLAIMS_PROFILE / CLAIMS
    if not base_path.is_file():
        raise ReproError(f"{base_path} is missing: the paper's claims are needed to verify a run")
    merged: dict[str, dict[str, Any]] = {}
    sources: dict[str, list[str]] = {}
    paths = [base_path]
    own = expected / CLAIMS
    if own.is_file() and own.resolve() != base_path.resolve():
        paths.append(own)
    for path in paths:
        for name, raw in _read_toml(path).items():
            if not isinstance(raw, dict):
                raise ReproError(f"{path}: {name!r} must be a [{name}] section")
            merged.setdefault(name, {}).update(raw)
            sources.setdefault(name, []).append(str(path))
    return [_claim(name, raw, f"{' + '.join(sources[name])}: [{name}]")
            for name, raw in merged.items()]
