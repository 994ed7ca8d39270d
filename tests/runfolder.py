"""Synthetic run folders for the verify, bless and report tests: the contract's shape, tiny.

Tables are written through `repro.stages.store.run_stage`, so their manifest holds real sha256s
exactly as the tables stage of a real run would record them.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

from repro.outputs.bless import _claims_toml as bless_claims_toml
from repro.outputs.tables import TABLE_NAMES
from repro.stages.store import run_stage

TABLES = TABLE_NAMES
"""Every table of the study (repro.outputs.tables.TABLES), each with the synthetic rows below."""
IDS = ("gemma-3-tiny/dense/0", "gemma-3-tiny/magnitude/50", "gemma-3-tiny/wanda/50",
       "llama-tiny/wanda/50")
PROVENANCE = {"code_version": "0.1.0+abc123", "device": "cpu (test, 2 threads)",
              "packages": {"python": "3.11", "pandas": "2.3.1"}, "study": "tiny"}
TOLERANCES = """\
[tiny.T3_survival]
survival = { abs = 0.001, rel = 0.01, note = "test: spread 1e-4, x10" }
"*" = { abs = 0.5 }
[tiny.T1_pruning]
perplexity = { rel = 0.02 }
"""
CLAIMS = {"C1": {"value": 11, "of": 17}, "C2": {"value": 3.5, "where": "gemma-3-tiny/0.5"},
          "C3": {"value": 0.5, "model": "gemma-3-tiny"},
          "C4": {"value": 0.12, "abs_rho_ci_high": 0.25, "reliability": 0.8,
                 "per_condition": {"gemma-3-tiny/wanda/50": -0.12}},
          "C4_per_firing": {"value": 0.1, "abs_rho_ci_high": 0.2, "reliability": 0.7,
                            "per_condition": {"gemma-3-tiny/wanda/50": 0.1}},
          "C1_control": {"value": 4, "of": 17},
          "C2_control": {"value": 1.2, "where": "gemma-3-tiny/0.5", "n_infinite": 0}}

Rows = dict[str, list[dict[str, object]]]


def base_tables() -> Rows:
    """Every table: ids, two numeric columns (one with a NaN) and a text column."""
    out: Rows = {}
    for t, name in enumerate(TABLES):
        out[name] = [{"id": rid, "survival": round(0.25 * (i + 1) + 0.01 * t, 6),
                      "perplexity": 10.0 + i if i != 2 else math.nan,
                      "method": rid.split("/")[1]} for i, rid in enumerate(IDS)]
    return out


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                     for k, v in row.items()} for row in rows)


GATES = [{"gate": "gemma-3-tiny: dense perplexity", "value": 5.1, "low": 2.0, "high": 12.0,
          "ok": True, "source": "study file: perplexity_range"}]


def write_tables(folder: Path, tables: Rows, gates: list[dict] | None = None) -> None:
    """Write tables/ as the tables stage does: CSV + Markdown twin, sanity gates, manifest
    last."""
    def work(tmp: Path) -> None:
        for name, rows in tables.items():
            write_csv(tmp / f"{name}.csv", rows)
            (tmp / f"{name}.md").write_text("| id |\n|---|\n" + "".join(
                f"| {r['id']} |\n" for r in rows))
        (tmp / "sanity.json").write_text(json.dumps({"gates": GATES if gates is None
                                                     else gates}))

    run_stage(folder, {"tables": sorted(tables)}, work, provenance=PROVENANCE, force=True)


def make_run(root: Path, edit: Callable[[Rows], None] | None = None,
             claims: dict | None = None, gates: list[dict] | None = None) -> tuple[Path, Path]:
    """A run folder and its expected folder (made from the unedited tables); returns both."""
    run = root / "run"
    (run / "variants" / "x" / "prune").mkdir(parents=True)
    (run / "study.toml").write_text('[study]\nname = "tiny"\n')
    tables = base_tables()
    expected = root / "expected" / "tiny"
    expected.mkdir(parents=True)
    for name, rows in tables.items():
        write_csv(expected / f"{name}.csv", rows)
    (expected / "tolerances.toml").write_text(TOLERANCES)
    (run / "claims.json").write_text(json.dumps(CLAIMS))
    # the blessed run's own claims are the profile's expected claims, as `repro bless` writes
    (expected / "claims.toml").write_text(
        bless_claims_toml(run, expected, "tiny", expected / "tolerances.toml"))
    if edit is not None:
        edit(tables)
    write_tables(run / "tables", tables, gates)
    run_stage(run / "variants" / "x" / "prune", {"p": 1}, lambda tmp: None,
              provenance=PROVENANCE)
    (run / "claims.json").write_text(json.dumps(CLAIMS if claims is None else claims))
    return run, expected


def row(tables: Rows, table: str, rid: str) -> dict[str, object]:
    return next(r for r in tables[table] if r["id"] == rid)
