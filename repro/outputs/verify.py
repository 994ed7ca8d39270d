"""Does this run reproduce? `repro verify RUN_DIR [--expected DIR]` answers per table and claim.

The run's sanity gates come first (tables/sanity.json: a run that fails one is not compared
further). Then every expected table is compared row by row and cell by cell with the run's
(tolerances from repro/expected_outputs/tolerances.toml), after checking that the run's tables
still match the sha256 their stage recorded, and the claims in RUN_DIR/claims.json against
the profile's expected claims (PASS, FAIL or INCONCLUSIVE). A last line compares the run's CPU
numerics with the blessed run's. Writes RUN_DIR/verification.json and verification.md,
prints a summary, and returns 1 when anything failed or was inconclusive. It reads only
small text files: no torch, no model, no GPU, so a copied run folder can be verified
anywhere.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.files import atomic_write_text, sha256_file, write_json
from repro.outputs import ranges, shapes
from repro.outputs.check import (
    AGREEMENT_VERDICTS,
    REPRODUCTION_VERDICTS,
    Check,
    Kind,
    Verdict,
    passed,
)
from repro.outputs.expected import (
    SANITY,
    SPREAD,
    Tolerance,
    Tolerances,
    expected_dir,
    load_tolerances,
    run_verdict,
    tolerances_path,
)
from repro.outputs.verify_claims import verify_claims
from repro.outputs.verify_text import markdown
from repro.science.numerics import comparable
from repro.stages import layout
from repro.stages.store import MANIFEST, read_manifest
from repro.study.locations import recorded_path


@dataclass(frozen=True)
class Table:
    """A CSV table keyed by its first column, `id`."""

    columns: list[str]
    rows: dict[str, dict[str, str]]
    duplicates: list[str]


def read_table(path: Path) -> Table:
    """Parse as text, not pandas, so ids and numbers are compared exactly as written."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReproError(f"{path}: cannot read as CSV ({exc})") from None
    if not lines or not lines[0] or lines[0][0] != "id":
        raise ReproError(f"{path}: the first column must be 'id'")
    columns, rows, duplicates = lines[0], {}, []
    for n, line in enumerate(lines[1:], 2):
        if len(line) != len(columns):
            raise ReproError(f"{path}: line {n} has {len(line)} cells, the header {len(columns)}")
        if line[0] in rows:
            duplicates.append(line[0])
        rows[line[0]] = dict(zip(columns, line, strict=True))
    return Table(columns, rows, duplicates)


YES_NO = {"true": 1.0, "false": 0.0}
"""A yes/no cell of one replicate is the fraction of replicates that say yes, 1 or 0, as the
mean over several replicates writes it (repro.outputs.replicates.combine)."""


def cell_number(text: str) -> float | None:
    """A cell's number; an empty cell is NaN (pandas writes NaN so); None when not a number."""
    if text.strip() == "":
        return math.nan
    if text in YES_NO:
        return YES_NO[text]
    try:
        return float(text)
    except ValueError:
        return None


def compare_cell(name: str, exp: str, got: str, tol: Tolerance,
                 bounds: tuple[float, float] | None = None) -> Check:
    """Numbers within the tolerance's bounds, NaN only equal to NaN; any other text exactly.

    `bounds` is the column's range (repro.outputs.ranges): a band that covers all of it is
    no check, and the cell is UNCHECKED whatever the run has.
    """
    e, g = cell_number(exp), cell_number(got)
    if e is None or g is None:
        same = exp == got
        return Check(name, Kind.CELL, passed(same), exp, got, "exact", None)
    describe = tol.describe()
    if math.isnan(e) or math.isnan(g):
        same = math.isnan(e) and math.isnan(g)
        return Check(name, Kind.CELL, passed(same), exp, got, describe, None)
    low, high = tol.bounds(e)
    if bounds is not None and ranges.covered(bounds, low, high):
        return Check(name, Kind.CELL, Verdict.UNCHECKED, e, g, describe, None,
                     ranges.covered_text(name.rsplit(".", 1)[-1], bounds, tol.allowance(e)))
    if e == g:  # also equal infinities, which have no finite difference
        return Check(name, Kind.CELL, Verdict.PASS, e, g, describe,
                     tol.allowance(e) if math.isfinite(e) else None)
    margin = min(g - low, high - g)
    ok = math.isfinite(margin) and margin >= 0
    return Check(name, Kind.CELL, passed(ok), e, g, describe,
                 margin if math.isfinite(margin) else None)


def compare_tables(table: str, exp: Table, got: Table, tols: Tolerances) -> list[Check]:
    """Rows and columns must match as sets; then every shared cell is compared."""
    checks: list[Check] = []

    def structure(what: str, expected: Any, found: Any) -> None:
        checks.append(Check(f"{table}: {what}", Kind.STRUCTURE, Verdict.FAIL, expected, found,
                            "exact", None))

    for rid in got.duplicates:
        structure(f"duplicate row {rid}", "unique ids", "duplicated")
    for rid in exp.rows.keys() - got.rows.keys():
        structure(f"missing row {rid}", rid, None)
    for rid in got.rows.keys() - exp.rows.keys():
        structure(f"extra row {rid}", None, rid)
    for col in [c for c in exp.columns if c not in got.columns]:
        structure(f"missing column {col}", col, None)
    for col in [c for c in got.columns if c not in exp.columns]:
        structure(f"extra column {col}", None, col)
    shared_cols = [c for c in exp.columns[1:] if c in got.columns]
    bounds = {col: ranges.column_range(col) for col in shared_cols}
    for rid in [r for r in exp.rows if r in got.rows]:
        model = exp.rows[rid].get("model", "")
        for col in shared_cols:
            checks.append(compare_cell(f"{table}[{rid}].{col}", exp.rows[rid][col],
                                       got.rows[rid][col], tols.get(table, col, model),
                                       bounds[col]))
    return checks


def check_integrity(run_dir: Path) -> tuple[list[Check], set[str]]:
    """Each file the tables stage recorded must still hash the same; returns the bad names."""
    folder = run_dir / layout.TABLES_DIR
    manifest = read_manifest(folder)
    if manifest is None or not isinstance(manifest.get("outputs"), dict):
        return [Check(f"integrity: tables/{MANIFEST}", Kind.INTEGRITY, Verdict.FAIL,
                      "a valid manifest", "missing or unreadable", "exact", None,
                      "tables cannot be trusted without their manifest")], {"*"}
    checks, bad = [], set()
    for rel, digest in sorted(manifest["outputs"].items()):
        path = folder / rel
        found = sha256_file(path) if path.is_file() else None
        ok = found == digest
        if not ok:
            bad.add(rel)
        checks.append(Check(f"integrity: tables/{rel}", Kind.INTEGRITY, passed(ok),
                            digest, found or "missing", "sha256", None,
                            "" if ok else "file differs from the one its stage wrote"))
    return checks, bad


def verify_tables(run_dir: Path, expected: Path, tols: Tolerances) -> list[Check]:
    """Integrity first; a table that fails it is refused rather than compared."""
    checks, bad = check_integrity(run_dir)
    recorded = (read_manifest(run_dir / layout.TABLES_DIR) or {}).get("outputs", {})
    for exp_path in sorted(expected.glob("*.csv")):
        table, got_path = exp_path.stem, run_dir / layout.TABLES_DIR / exp_path.name
        exp = read_table(exp_path)
        if not got_path.is_file():
            checks.append(Check(f"{table}: missing table", Kind.TABLE, Verdict.FAIL, exp_path.name,
                                None, "exact", None, f"{got_path} does not exist"))
            continue
        if exp_path.name in bad or ("*" not in bad and exp_path.name not in recorded):
            checks.append(Check(f"{table}: refused", Kind.TABLE, Verdict.FAIL, "sha256 as recorded",
                                "differs or unrecorded", "sha256", None,
                                f"tables/{exp_path.name} does not match tables/{MANIFEST}"))
            continue
        try:
            got = read_table(got_path)
        except ReproError as exc:
            checks.append(Check(f"{table}: unreadable", Kind.TABLE, Verdict.FAIL, "a table",
                                str(exc), "exact", None))
            continue
        checks.extend(_table_summary(table, compare_tables(table, exp, got, tols), len(exp.rows),
                                     len(got.rows)))
    expected_names = {p.name for p in expected.glob("*.csv")}
    if expected_names:  # a table nobody expects yet is news, not an error: bless adds it
        for path in sorted((run_dir / layout.TABLES_DIR).glob("*.csv")):
            if path.name not in expected_names and path.name != SPREAD:
                checks.append(Check(path.stem, Kind.TABLE, Verdict.INFO, None, "present", "exact",
                                    None, "not in the expected outputs"))
    return checks


def _table_summary(table: str, cell_checks: list[Check], n_exp: int, n_got: int) -> list[Check]:
    """One line per table (worst margin, and where) ahead of its cell checks."""
    failed = [c for c in cell_checks if c.verdict == Verdict.FAIL]
    unchecked = [c for c in cell_checks if c.verdict == Verdict.UNCHECKED]
    # an exact cell that matches has margin 0 by definition: it says nothing about closeness
    margins = [(c.margin, c) for c in cell_checks if c.margin is not None
               and (c.tolerance != "exact" or c.margin < 0)]
    worst = min(margins, key=lambda mc: mc[0], default=None)
    detail = f"{len(cell_checks)} checks, {len(failed)} failed"
    if unchecked:
        columns = sorted({c.name.rsplit(".", 1)[-1] for c in unchecked})
        detail += (f", {len(unchecked)} unchecked (bands covering the whole range of "
                   f"{', '.join(columns)})")
    detail += f"; worst margin at {worst[1].name}" if worst else "; every number exact"
    verdict = Verdict.FAIL if failed else Verdict.PASS
    head = Check(table, Kind.TABLE, verdict, f"{n_exp} rows", f"{n_got} rows",
                 "per column", worst[0] if worst else None, detail)
    return [head, *cell_checks]


def check_numerics(run_dir: Path, expected: Path) -> list[Check]:
    """Whether the run computed with the numerics the expected outputs were blessed with.

    Not a verdict (a run at other settings may still pass), but when tables fail it says why
    they may: the bands cover what the pinned settings leave to the machine, not unpinned
    arithmetic (repro.science.numerics).
    """
    try:
        blessed = json.loads((expected / "PROVENANCE.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    made = read_manifest(run_dir / layout.TABLES_DIR) or {}
    mine = (made.get("provenance") or {}).get("numerics")
    theirs = blessed.get("numerics") if isinstance(blessed, dict) else None
    if not isinstance(mine, dict) or not isinstance(theirs, dict):
        return []
    differ = comparable(mine, theirs)
    detail = ("the same pinned settings as the blessed run" if not differ else
              "differs from the blessed run in " + "; ".join(differ) +
              ": failing numbers may come from the arithmetic, not the science")
    return [Check("numerics", Kind.NUMERICS, Verdict.INFO, theirs.get("mode"), mine.get("mode"),
                  "same settings", None, detail)]


def check_sanity(run_dir: Path) -> list[Check]:
    """The run's sanity gates (tables/sanity.json, integrity-checked with the tables)."""
    path = run_dir / layout.TABLES_DIR / SANITY
    recorded = ((read_manifest(run_dir / layout.TABLES_DIR) or {}).get("outputs") or {}).get(SANITY)
    if not path.is_file() or recorded is None:
        return []
    if sha256_file(path) != recorded:
        return [Check("sanity gates", Kind.SANITY, Verdict.FAIL, "sha256 as recorded", "differs",
                      "sha256", None, f"tables/{SANITY} does not match tables/{MANIFEST}")]
    gates = shapes.read(path, shapes.SANITY)["gates"]
    return [Check(f"sanity: {g['gate']}", Kind.SANITY, passed(g["ok"]),
                  [g["low"], g["high"]], g["value"], f"[{g['low']:.4g}, {g['high']:.4g}]",
                  min(g["value"] - g["low"], g["high"] - g["value"])
                  if math.isfinite(g["value"]) else None, g["source"]) for g in gates]


def check_complete(run_dir: Path) -> list[Check]:
    """A run folder of `repro all` that lacks runs or stages fails: its tables are partial."""
    from repro.outputs.completeness import describe_missing, missing_parts

    missing = missing_parts(run_dir) if (run_dir / layout.STUDY_FILE).is_file() else None
    if missing is None:  # a bare copy of tables, or a study nobody can read: nothing to count
        return []
    return [Check("completeness", Kind.RUN, passed(not missing), "every run and stage",
                  f"{len(missing)} missing", "exact", None,
                  describe_missing(missing) if missing else "")]


def has_expected(run_dir: Path, expected: Path | None = None) -> bool:
    """Whether the run's study has expected outputs to verify against."""
    return expected_dir(run_dir, expected)[0].is_dir()


def record_unverified(run_dir: Path, expected: Path | None = None) -> str:
    """Write verification.json/.md saying the run is complete but has nothing to be verified
    against; return the one line that says so and how to bless it."""
    exp_dir, profile = expected_dir(run_dir, expected)
    line = (f"run complete, unverified: study {profile} has no expected outputs at {exp_dir}; "
            f"to make this run the reference, `repro bless {run_dir} --expected {exp_dir}`, "
            f"then verify later runs with `--expected {exp_dir}`")
    write_json(run_dir / "verification.json", {
        "run_dir": str(run_dir.resolve()), "expected_dir": str(exp_dir), "profile": profile,
        "unverified": True, "ok": None, "line": line})
    atomic_write_text(run_dir / "verification.md", f"# Verification\n\n{line}\n")
    return line


def verify_run(run_dir: Path, expected: Path | None = None,
               tolerances: Path | None = None) -> dict[str, Any]:
    """Run every check and write verification.json/.md into the run folder; return the result."""
    if not run_dir.is_dir():
        raise ReproError(f"run folder {run_dir} does not exist")
    exp_dir, profile = expected_dir(run_dir, expected)
    if not exp_dir.is_dir():
        raise ReproError(f"no expected outputs at {exp_dir} (profile {profile}); create them "
                         f"with `repro bless {run_dir}` or pass --expected DIR")
    if tolerances is not None and not tolerances.is_file():
        raise ReproError(f"--tolerances {tolerances}: no such file; pass an existing "
                         "tolerances.toml or leave the option out")
    tol_path = tolerances or tolerances_path(exp_dir)
    tols = load_tolerances(tol_path, profile)
    known = {p.stem for p in exp_dir.glob("*.csv")} | {"claims"}
    stray = sorted(set(tols.by_table) - known)
    if stray:
        raise ReproError(f"{tol_path}: [{profile}.{stray[0]}] names no expected table (there "
                         f"are {', '.join(sorted(known - {'claims'}))}); fix or remove it")
    checks = check_sanity(run_dir)
    failed_gates = [c.name for c in checks if c.verdict == Verdict.FAIL]
    if failed_gates:  # a model or SAE that loaded wrong: its numbers mean nothing
        checks.append(Check("comparison", Kind.SANITY, Verdict.FAIL, "every sanity gate passes",
                            f"{len(failed_gates)} failed", "exact", None,
                            "tables and claims not compared: " + "; ".join(failed_gates)))
    else:
        checks += verify_tables(run_dir, exp_dir, tols) + verify_claims(run_dir, exp_dir)
    checks += check_numerics(run_dir, exp_dir) + check_complete(run_dir)
    result = {"run_dir": str(run_dir.resolve()), "expected_dir": recorded_path(exp_dir),
              "profile": profile,
              "tolerances": recorded_path(tols.source) if tols.source else None,
              "expected_tables": sorted(p.stem for p in exp_dir.glob("*.csv")),
              **answers(checks, run_verdict(run_dir)),
              "checks": [asdict(c) for c in checks]}
    write_json(run_dir / "verification.json", result)
    atomic_write_text(run_dir / "verification.md", markdown(result))
    return result


def answers(checks: list[Check], verdict: dict[str, Any]) -> dict[str, Any]:
    """The two answers and which of them is the run's verdict (`ok`, the exit code).

    Agreement: no check but the reproduction ones failed (tables, agreement claims, gates,
    integrity, completeness). Reproduction: every paper claim that is not informational
    holds, and no gate, integrity or completeness check failed (a run whose files cannot be
    trusted reproduces nothing).
    """
    agreement = [c for c in checks if c.kind != Kind.REPRODUCTION]
    reproduction = [c for c in checks if c.kind == Kind.REPRODUCTION]
    a_counts = {v: sum(c.verdict == v for c in agreement) for v in AGREEMENT_VERDICTS}
    r_counts = {v: sum(c.verdict == v for c in reproduction) for v in REPRODUCTION_VERDICTS}
    trusted = not any(c.verdict == Verdict.FAIL for c in agreement
                      if c.kind in (Kind.SANITY, Kind.INTEGRITY, Kind.RUN))
    a_ok = a_counts[Verdict.FAIL] == 0 and a_counts[Verdict.INCONCLUSIVE] == 0
    r_ok = bool(reproduction) and trusted and r_counts[Verdict.DOES_NOT_HOLD] == 0 \
        and r_counts[Verdict.UNDECIDED] == 0
    decides = verdict["decides"]
    return {"decides": decides, "replicates": verdict["replicates"],
            "ok": a_ok if decides == "agreement" else r_ok, "counts": a_counts,
            "agreement": {"ok": a_ok, "counts": a_counts},
            "reproduction": {"ok": r_ok, "counts": r_counts}}
