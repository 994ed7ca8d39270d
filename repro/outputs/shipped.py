"""`repro doctor`'s look at the expected outputs a run will be verified against.

They are package data (repro/expected_outputs/, found through repro.outputs.expected): an
install or an image that lost them would run for hours and then end "unverified". The doctor
finds that in a second: the study's folder is there, every table its PROVENANCE.json blessed
is present with the blessed sha256, and the claims and tolerances read.
"""

from __future__ import annotations

import json
from pathlib import Path

from repro.errors import ReproError
from repro.files import sha256_file
from repro.inputs.doctor import Check
from repro.outputs.expected import (
    BASE_CLAIMS_PROFILE,
    CLAIMS,
    EXPECTED_ROOT,
    load_claims,
    load_tolerances,
    tolerances_path,
)
from repro.study.reader import PROFILES_DIR
from repro.study.spec import Study

PROVENANCE = "PROVENANCE.json"
"""Written by `repro bless` beside the tables it blessed, with each table's sha256."""
NOT_YET_BLESSED = ("paper-plus",)
"""Shipped profiles that no run has blessed yet (docs/beyond.md): there is nothing to restore,
and their runs end unverified until a finished run is blessed into repro/expected_outputs/."""
RESTORE = ("reinstall the package (pip install --force-reinstall --no-deps) or, in a checkout, "
           "`git checkout -- repro/expected_outputs`")


def expected_checks(study: Study, root: Path = EXPECTED_ROOT) -> list[Check]:
    """One check of the expected outputs `repro all` will verify this study against."""
    where = root / study.name
    shipped = Path(study.path).resolve().parent == PROFILES_DIR.resolve()
    if not where.is_dir():
        if shipped and study.name in NOT_YET_BLESSED:
            return [Check(True, f"expected outputs: none for the {study.name} profile, which "
                          "has not yet been run and blessed (docs/beyond.md); its run ends "
                          "unverified")]
        if shipped:
            return [Check(False, f"expected outputs: {where} is missing, so a run of the "
                          f"{study.name} profile would end unverified", RESTORE)]
        return [Check(True, f"expected outputs: none for study {study.name} at {where}; the "
                      "run ends unverified until one is blessed (`repro bless RUN --expected "
                      "DIR`, then `repro all --expected DIR`)")]
    try:
        tables = _blessed_tables(where)
        claims = load_claims(where)
        load_tolerances(tolerances_path(where), study.name)
    except ReproError as exc:
        return [Check(False, f"expected outputs: {exc}", RESTORE)]
    if tables and study.name != BASE_CLAIMS_PROFILE and not (where / CLAIMS).is_file():
        return [Check(False, f"expected outputs: {where} has blessed tables but no {CLAIMS}",
                      RESTORE)]
    what = f"{len(tables)} blessed tables" if tables else "no tables (claims only)"
    return [Check(True, f"expected outputs: {where}: {what}, {len(claims)} claim checks")]


def _blessed_tables(where: Path) -> list[str]:
    """The tables the folder's PROVENANCE.json blessed, each checked against its sha256; a
    folder without one (the paper's claims, a hand-made folder) lists its CSV files."""
    path = where / PROVENANCE
    if not path.is_file():
        return sorted(p.name for p in where.glob("*.csv"))
    try:
        tables = json.loads(path.read_text(encoding="utf-8"))["tables"]
        items = sorted(tables.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ReproError(f"{path} is unreadable or has no tables") from None
    bad = [name for name, digest in items
           if not (where / name).is_file() or sha256_file(where / name) != digest]
    if bad:
        raise ReproError(f"{len(bad)} of {len(items)} tables in {where} are missing or differ "
                         f"from the sha256 {PROVENANCE} blessed ({', '.join(bad[:3])})")
    return [name for name, _ in items]
