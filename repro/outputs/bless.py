"""Accept a run as the new expected outputs: `repro bless RUN_DIR [--expected DIR] [--allow-dirty]`.

For maintainers after a deliberate change: the run's tables (means over its replicates)
replace the profile's expected tables, with a PROVENANCE.json saying which run, code,
device, numerics and packages made them. Every stage of the run must come from one clean
commit (`--allow-dirty` to override, and the provenance says so). For any profile but the
paper's, the run's own claims become the profile's expected claims (claims.toml): a CPU
profile checks that C1-C4 come out as they did when blessed, not as the paper found them.

Bands: a run of 3 or more replicates gets its profile's bands from its own replicate spread
(repro.outputs.bands: a stated multiple of the pooled sd, the multiple measured by
leave-one-out), written into the tolerances file in place of that profile's old sections.
A run of fewer replicates leaves the tolerances alone (the tiny profile's come from
scripts/measure_spread.py); only when there is no tolerances file at all is a commented
round-off default written. A claim with no band must come out exactly.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.files import atomic_write_text, sha256_file, write_json
from repro.outputs import bands, bands_text, multiples, shapes
from repro.outputs.expected import (
    BASE_CLAIMS_PROFILE,
    CLAIMS,
    EXPECTED_ROOT,
    expected_dir,
    load_claims,
    load_tolerances,
    tolerances_path,
)
from repro.outputs.scales import LOG
from repro.outputs.tables import analysis_code, run_table_names
from repro.outputs.verify import check_integrity, read_table
from repro.stages import layout
from repro.stages.codehash import stage_code
from repro.stages.provenance import code_version
from repro.stages.store import MANIFEST, read_manifest

PROVENANCE = "PROVENANCE.json"

DEFAULT_HEADER = """\
# Tolerances for `repro verify`, per profile, table and column.
#
#   [<profile>.<table>]
#   <column> = { abs = <float>, rel = <float>, note = "<where the numbers come from>" }
#   "*"      = { ... }   # every other numeric column of the table
#
# A number passes when |got - expected| <= abs + rel * |expected|; NaN equals only NaN.
# Ids and text columns, and numeric columns with no entry (and no "*"), must match exactly.
#
# Written by `repro bless` because no tolerances file existed. The "*" entries below allow
# float round-off only; they are not measured. Replace them with a stated multiple of the
# spread measured across thread counts and other sources of nondeterminism, and write that
# spread in each entry's note.
"""


def default_tolerances(profile: str, tables: list[str]) -> str:
    """A tolerances file allowing only round-off for every table of `profile`."""
    lines = [DEFAULT_HEADER]
    for table in tables:
        lines += [f'["{profile}"."{table}"]',
                  '"*" = { abs = 1e-9, rel = 1e-6, note = "round-off default, not measured" }',
                  ""]
    return "\n".join(lines)


def _run_tables(run_dir: Path) -> list[Path]:
    """The run's tables, every one of the study's (repro.outputs.tables.TABLES), refused
    unless each is there, still matches its manifest and parses."""
    _checks, bad = check_integrity(run_dir)
    if bad:
        what = "tables/manifest.json is missing" if "*" in bad else \
            f"{', '.join(sorted(bad))} differ from tables/manifest.json"
        raise ReproError(f"refusing to bless {run_dir}: {what}; rerun the tables stage")
    tables = [run_dir / layout.TABLES_DIR / f"{name}.csv"
              for name in run_table_names(run_dir / layout.TABLES_DIR)]
    missing = [p.name for p in tables if not p.is_file()]
    if missing:
        raise ReproError(f"refusing to bless {run_dir}: {layout.TABLES_DIR}/{missing[0]} is "
                         "missing; rerun the tables stage (`repro all`)")
    for path in tables:
        if read_table(path).duplicates:
            raise ReproError(f"refusing to bless {path}: its ids are not unique")
    return tables


def code_versions(run_dir: Path) -> set[str]:
    """The code versions recorded by every stage manifest of a run folder."""
    found = set()
    for path in run_dir.rglob(MANIFEST):
        manifest = read_manifest(path.parent) or {}
        version = (manifest.get("provenance") or {}).get("code_version")
        if version:
            found.add(str(version))
    return found


STAGE_CODE = {
    "tokens": ("repro.inputs.data", "repro.stages.pipeline"),
    "prune": ("repro.science.pruners", "repro.stages.pipeline"),
    "perplexity": ("repro.science.perplexity", "repro.stages.pipeline"),
    "activations": ("repro.science.activations", "repro.stages.pipeline"),
    "sae": ("repro.science.sae_batch", "repro.stages.run_stages"),
    "evaluate": ("repro.science.evaluate", "repro.stages.run_stages"),
    "tables": ("repro.outputs.tables", "repro.outputs.tables"),
    "figures": ("repro.outputs.figures", "repro.outputs.finish"),
    "method_controls": ("repro.science.method_controls", "repro.outputs.finish"),
}
"""(science module, binding module) whose `stage_code` each stage puts into its input hash, as
repro/stages/pipeline.py, run_stages.py and repro/outputs/tables.py, finish.py compute it;
tests/test_end_to_end.py checks every manifest of a finished run against it."""


def current_code(kind: str) -> object:
    """The code hash a stage of this kind records when the checked-out code runs it."""
    if kind == layout.ANALYSIS_DIR:
        return analysis_code()
    return stage_code(*STAGE_CODE[kind])


def stale_stages(run_dir: Path) -> list[str]:
    """The stage folders whose recorded code differs from the checked-out code's (or that
    record none): empty when every stage is what this code would make of the same inputs."""
    stale = []
    for path in sorted(run_dir.rglob(MANIFEST)):
        manifest = read_manifest(path.parent) or {}
        rel = path.parent.relative_to(run_dir)
        kind = layout.TOKENS_DIR if rel.parts[0] == layout.TOKENS_DIR else manifest.get("stage")
        recorded = (manifest.get("inputs") or {}).get("code")
        if kind not in (*STAGE_CODE, layout.ANALYSIS_DIR) or recorded != current_code(kind):
            stale.append(str(rel))
    return stale


def _check_clean(run_dir: Path, checkout: str) -> str:
    """Why the run may be blessed from the `checkout` code version, or one ReproError line.

    One clean commit made every stage; or stages carry several versions (a run resumed or
    finished after a commit), the checkout is clean, and every stage's recorded code equals
    the checkout's, so the run is what this commit makes of its inputs (a version label says
    which commit was checked out, the code hash what ran)."""
    versions = code_versions(run_dir)
    dirty = sorted(v for v in versions if v.endswith("-dirty"))
    if not dirty and len(versions) <= 1:
        return "one clean code version made every stage"
    stale = [] if checkout.endswith("-dirty") else stale_stages(run_dir)
    if not checkout.endswith("-dirty") and not stale:
        return (f"stages labelled {', '.join(sorted(versions))}; every stage's code equals "
                f"the checkout's ({checkout})")
    what = (f"stages were made from an uncommitted tree ({', '.join(dirty)})" if dirty
            else f"stages come from {len(versions)} code versions "
                 f"({', '.join(sorted(versions))})")
    differ = f"; {len(stale)} stage(s) ran other code, e.g. {stale[0]}" if stale else ""
    raise ReproError(f"refusing to bless {run_dir}: {what}{differ}; commit, rerun `repro all` "
                     "from the clean tree (it redoes the stages whose code changed), or pass "
                     "--allow-dirty")


def _claims_toml(run_dir: Path, exp_dir: Path, profile: str, tol_path: Path) -> str:
    """The profile's expected claims: the paper's checks, with this run's values as expected."""
    found = shapes.read(run_dir / layout.CLAIMS_JSON, shapes.CLAIMS)
    if found is None:
        raise ReproError(f"refusing to bless {run_dir}: claims.json is missing; rerun the "
                         "tables stage (`repro all`)")
    found_bands = load_tolerances(tol_path, profile).by_table.get("claims", {})
    made = read_manifest(run_dir / layout.TABLES_DIR) or {}
    # what made the run, not where it lay: a folder of the blessing machine means nothing
    # to anyone else (PROVENANCE.json keeps it for the person who blessed)
    version = (made.get("provenance") or {}).get("code_version") or "unknown"
    lines = [f"# Expected claims of the {profile} profile, written by `repro bless` from a run",
             f"# of code version {version} whose tables were made {made.get('started', '?')}:",
             "# each of the paper's checks, with the value this profile's blessed run found",
             "# as the expected one. Bands: [" + profile + ".claims] of tolerances.toml "
             "(measured spread), else exact.", ""]
    for spec in load_claims(EXPECTED_ROOT / BASE_CLAIMS_PROFILE):
        entry = found.get(spec.claim)
        value = (entry or {}).get(spec.field)
        if value is None and spec.informational:
            continue  # e.g. the seed control's claims in a study without a control_seed
        if entry is None:
            raise ReproError(f"refusing to bless {run_dir}: claims.json has no {spec.claim}")
        if value is not None and not shapes.finite_number(value):
            raise ReproError(f"refusing to bless {run_dir}: claims.json {spec.claim}."
                             f"{spec.field} is {value!r}, not a finite number; rerun the "
                             "tables stage (`repro all`) or restore the file")
        if value is None:  # e.g. C3 where no SAE is viable: nothing to hold later runs to
            said = "Not measurable in the blessed run (no value); the paper: " + spec.statement
            lines += [f"[{spec.name}]", "informational = true",
                      f"statement = {json.dumps(said)}", ""]
            continue
        band = found_bands.get(spec.name)
        spread = (entry.get("spread") or {}).get(spec.field) or {}
        if spread.get("n", 1) > 1:
            lines.append(f"# {spec.name}: replicate values {spread['values']}")
        interval = ([f"interval = [{spread['ci_low']!r}, {spread['ci_high']!r}]"]
                    if spread.get("n", 1) > 1 else [])
        lines += [f"[{spec.name}]", f"expected = {json.dumps(value)}", *interval,
                  'compare = "near"',
                  f"abs = {band.abs if band else 0.0!r}", f"rel = {band.rel if band else 0.0!r}",
                  *([f"log = {band.width!r}"] if band and band.scale == LOG and band.width
                    else []),
                  f"statement = {json.dumps('As blessed; the paper: ' + spec.statement)}",
                  f"reconstructed = {json.dumps(band.note if band else 'no band: exact')}",
                  'inconclusive_field = ""', "requires = {}", "informational = false",
                  f"contrary = {json.dumps(spec.contrary)}", ""]
    return "\n".join(lines)


def _numerics_text(run: Path) -> str:
    """The arithmetic a run's tables were made with, in a few words."""
    numerics = ((read_manifest(run / layout.TABLES_DIR) or {}).get("provenance") or {}).get(
        "numerics") or {}
    keys = ("mode", "cpu", "cpu_capability", "aten_cpu_capability", "threads")
    return ", ".join(f"{k} {numerics[k]}" for k in keys if numerics.get(k) is not None)


def bless_run(run_dir: Path, expected: Path | None = None,
              allow_dirty: bool = False, across: Sequence[Path] = ()) -> dict[str, Any]:
    """Copy the run's tables (and, but for the paper, its claims) into the expected folder."""
    if not run_dir.is_dir():
        raise ReproError(f"run folder {run_dir} does not exist")
    exp_dir, profile = expected_dir(run_dir, expected)
    tables = _run_tables(run_dir)
    code_check = "not checked (--allow-dirty)" if allow_dirty else \
        _check_clean(run_dir, code_version())
    tol_path = tolerances_path(exp_dir)
    load_tolerances(tol_path, profile)  # a malformed file is reported before anything changes
    measured = replicate_bands(run_dir, profile, across)
    if measured is not None:
        exp_dir.mkdir(parents=True, exist_ok=True)
        text = measured["text"]
        if tol_path.is_file():
            text = bands_text.keep_other_profiles(tol_path.read_text(encoding="utf-8"), profile) \
                + "\n" + text
        atomic_write_text(tol_path, text)
    claims = (None if profile == BASE_CLAIMS_PROFILE
              else _claims_toml(run_dir, exp_dir, profile, tol_path))
    exp_dir.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in tables}
    removed = sorted(p.name for p in exp_dir.glob("*.csv") if p.name not in names)
    for name in removed:
        (exp_dir / name).unlink()
    for path in tables:
        shutil.copyfile(path, exp_dir / path.name)
    manifest = read_manifest(run_dir / layout.TABLES_DIR) or {}
    prov = manifest.get("provenance", {})
    record = {"source_run": str(run_dir.resolve()), "profile": profile,
              "blessed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "code_version": prov.get("code_version"), "device": prov.get("device"),
              "packages": prov.get("packages"), "tables_made_at": manifest.get("started"),
              "tables": {p.name: sha256_file(p) for p in tables}}
    record["numerics"] = prov.get("numerics")
    record["allow_dirty"] = allow_dirty
    record["code_check"] = code_check
    if measured is not None:
        record["bands"] = {k: v for k, v in measured.items() if k != "text"}
    write_json(exp_dir / PROVENANCE, record)
    if claims is not None:
        atomic_write_text(exp_dir / CLAIMS, claims)
    created = not tol_path.exists()
    if created:
        atomic_write_text(tol_path, default_tolerances(profile, [p.stem for p in tables]))
    return {"expected_dir": exp_dir, "tables": sorted(names), "removed": removed,
            "tolerances": tol_path, "tolerances_created": created,
            "bands": record.get("bands")}


def read_replicates(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """Each replicate's tables and claims, as the analysis stage wrote them."""
    folder = run_dir / layout.ANALYSIS_DIR / layout.REPLICATES
    reps = sorted((p for p in folder.glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
    tables, claims = [], []
    for rep in reps:
        try:
            tables.append(json.loads((rep / layout.TABLES_JSON).read_text(encoding="utf-8")))
            claims.append(json.loads((rep / layout.CLAIMS_JSON).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ReproError(f"refusing to bless {run_dir}: {rep} unreadable ({exc}); rerun "
                             "the analysis stage") from None
    return tables, claims


def _other_tables(run: Path) -> dict[str, list[dict]]:
    """A run's tables as rows of text keyed by column, for `bands.across_settings`."""
    out = {}
    for name in run_table_names(run / layout.TABLES_DIR):
        table = read_table(run / layout.TABLES_DIR / f"{name}.csv")
        out[name] = list(table.rows.values())
    return out


def replicate_bands(run_dir: Path, profile: str,
                    across: Sequence[Path] = ()) -> dict[str, Any] | None:
    """The profile's bands from the run's replicates (None below MIN_REPLICATES): the
    tolerances text, the multiple and its leave-one-out failure rates; the columns the
    replicates do not move from their differences to the `across` runs."""
    tables, claims = read_replicates(run_dir)
    if len(tables) < MIN_REPLICATES:
        return None
    specs = load_claims(EXPECTED_ROOT / BASE_CLAIMS_PROFILE)
    chosen = multiples.choose_multiples(tables, claims, specs)
    for name, (loo_multiple, trials) in chosen.items():
        if not loo_multiple < float("inf"):
            worst = "; ".join(trials[-1].worst)
            raise ReproError(f"refusing to bless {run_dir}: even {trials[-1].multiple:g}x the "
                             f"replicate spread fails leave-one-out in {name} ({worst}); the "
                             "replicates disagree more than their spread says: find out why "
                             "first")
    chosen_multiples = {name: multiples.verify_multiple(loo, len(tables))
                        for name, (loo, _) in chosen.items()}
    others = {f"{p.resolve()} ({_numerics_text(p)})": _other_tables(p) for p in across}
    text = bands_text.tolerances_text(profile, tables, claims, specs, chosen_multiples,
                                 {name: trials for name, (_, trials) in chosen.items()},
                                 str(run_dir.resolve()),
                                 bands.across_settings(tables, others) if others else None)
    return {"replicates": len(tables), "multiple": chosen_multiples,
            "leave_one_out_multiple": {name: loo for name, (loo, _) in chosen.items()},
            "text": text, "across": list(others),
            "leave_one_out": {name: [{"multiple": t.multiple, "checked": t.checked,
                                      "failed": t.failed, "worst": t.worst} for t in trials]
                              for name, (_, trials) in chosen.items()}}


MIN_REPLICATES = 3
"""Fewest replicates whose spread gives bands: leave-one-out needs two to take an sd from."""
