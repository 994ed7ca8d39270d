"""Accept a run's tables as the new expected outputs: `repro bless RUN_DIR [--expected DIR]`.

For maintainers after a deliberate change: the run's tables/*.csv replace the profile's
expected tables, with a PROVENANCE.json saying which run, code, device and packages made
them. Tolerances are left alone (they come from measured spread, not from one run); only when
there is no tolerances.toml at all is a commented default written, which a maintainer then
replaces with measured values.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.expected import TOLERANCES, expected_dir, load_tolerances
from repro.store import atomic_write_text, read_manifest, sha256_file, write_json
from repro.verify import check_integrity, read_table

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
    """The run's tables, refused unless each still matches its manifest and parses."""
    _checks, bad = check_integrity(run_dir)
    if bad:
        what = "tables/manifest.json is missing" if "*" in bad else \
            f"{', '.join(sorted(bad))} differ from tables/manifest.json"
        raise ReproError(f"refusing to bless {run_dir}: {what}; rerun the tables stage")
    tables = sorted((run_dir / "tables").glob("*.csv"))
    if not tables:
        raise ReproError(f"{run_dir / 'tables'} holds no CSV tables to bless")
    for path in tables:
        if read_table(path).duplicates:
            raise ReproError(f"refusing to bless {path}: its ids are not unique")
    return tables


def bless_run(run_dir: Path, expected: Path | None = None) -> dict[str, Any]:
    """Copy the run's tables into the expected folder and record where they came from."""
    if not run_dir.is_dir():
        raise ReproError(f"run folder {run_dir} does not exist")
    exp_dir, profile = expected_dir(run_dir, expected)
    tables = _run_tables(run_dir)
    tol_path = exp_dir.parent / TOLERANCES
    load_tolerances(tol_path, profile)  # a malformed file is reported before anything changes
    exp_dir.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in tables}
    removed = sorted(p.name for p in exp_dir.glob("*.csv") if p.name not in names)
    for name in removed:
        (exp_dir / name).unlink()
    for path in tables:
        shutil.copyfile(path, exp_dir / path.name)
    manifest = read_manifest(run_dir / "tables") or {}
    prov = manifest.get("provenance", {})
    record = {"source_run": str(run_dir.resolve()), "profile": profile,
              "blessed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "code_version": prov.get("code_version"), "device": prov.get("device"),
              "packages": prov.get("packages"), "tables_made_at": manifest.get("started"),
              "tables": {p.name: sha256_file(p) for p in tables}}
    write_json(exp_dir / PROVENANCE, record)
    created = not tol_path.exists()
    if created:
        atomic_write_text(tol_path, default_tolerances(profile, [p.stem for p in tables]))
    return {"expected_dir": exp_dir, "tables": sorted(names), "removed": removed,
            "tolerances": tol_path, "tolerances_created": created}
