"""The tables as CSV (machine-checked by `repro verify`) and Markdown (for people), and the
stages that produce them: analysis -> tables (+ RUN_DIR/claims.json). The paper's six are in
every study; T7 and T8, beyond the paper, where the study asks for them.

Formats: every table has an `id` column first (a run, condition or pair id); CSV floats are
written with 10 significant digits; the Markdown twin rounds to 4.

`TABLES` is the one list of tables: a new table is one entry there (its name, its title and
the rows repro.outputs.analysis builds for it); the analysis stage, this stage, `repro bless`
and the tests' synthetic run folders all read it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from repro.files import atomic_write_text, write_json, write_text_if_changed
from repro.outputs import predictability
from repro.outputs.expected import SANITY, SPREAD
from repro.stages import layout
from repro.stages.codehash import code_hash, stage_code
from repro.stages.store import StageOutcome, fingerprint, run_stage

if TYPE_CHECKING:
    from repro.outputs.analysis import Analysis
    from repro.study.spec import Study

Rows = list[dict[str, Any]]


def _always(study: Study) -> bool:
    return True


@dataclass(frozen=True)
class Table:
    """One table of the study."""

    name: str
    """Its file stem under tables/ and its key in analysis/tables.json."""
    title: str
    """Its heading in the Markdown twin and the report."""
    build: Callable[[Analysis, dict[str, Rows]], Rows]
    """Its rows, from one replicate's Analysis and the tables built before it (T4 reads T3)."""
    applies: Callable[[Study], bool] = _always
    """Whether a study has this table: the paper's six always, those beyond it when the study
    asks for them (repro.outputs.predictability)."""


TABLES: tuple[Table, ...] = (
    Table("T1_pruning", "Table 1. Pruning: achieved sparsity and perplexity (dense vs pruned)",
          lambda a, done: a.t1_pruning()),
    Table("T2_seed_stability", "Table 2. RQ1 seed stability of dense SAEs (Hungarian matching)",
          lambda a, done: a.t2_seed_stability()),
    Table("T3_survival", "Table 3. RQ2 feature survival and its dependence on firing rate",
          lambda a, done: a.t3_survival()),
    Table("T4_ratios", "Table 4. C2 Wanda / magnitude survival ratios",
          lambda a, done: a.t4_ratios(done["T3_survival"])),
    Table("T5_transfer",
          "Table 5. RQ3 transferability of the dense-trained and pre-trained SAEs",
          lambda a, done: a.t5_transfer()),
    Table("T6_fragility_causal",
          "Table 6. RQ4 fragility and RQ5 causal importance vs survival",
          lambda a, done: a.t6_fragility_causal()),
    Table("T7_predictability",
          "Table 7. RQ6 (beyond the paper) survival predicted from the dense model: "
          "cross-validated AUC",
          lambda a, done: predictability.t7_predictability(a), predictability.wants_t7),
    Table("T8_matched",
          "Table 8. Quantization beside pruning at equal perplexity: overlap of damaged features",
          lambda a, done: predictability.t8_matched(a, done["T1_pruning"]),
          predictability.wants_t8),
)
"""Every table, in the order they are built and shown."""
TABLE_NAMES = tuple(t.name for t in TABLES if t.applies is _always)
"""The paper's six tables, which every study has."""


def study_tables(study: Study) -> tuple[Table, ...]:
    """The tables a study has."""
    return tuple(t for t in TABLES if t.applies(study))


def run_table_names(tables_dir: Path) -> tuple[str, ...]:
    """The tables a run folder's study has: the paper's six, and those beyond them that its
    tables stage wrote."""
    return TABLE_NAMES + tuple(t.name for t in TABLES if t.name not in TABLE_NAMES
                               and (tables_dir / f"{t.name}.csv").is_file())
STAGE_VERSION = {"analysis": 4, "tables": 4}


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else f"{float(value):.{digits}g}"
    return str(value)


def to_csv(rows: list[dict]) -> str:
    cols = list(rows[0]) if rows else ["id"]
    lines = [",".join(cols)]
    lines += [",".join(_cell(r.get(c), 10) for c in cols) for r in rows]
    return "\n".join(lines) + "\n"


def to_markdown(title: str, rows: list[dict], sds: dict[tuple[str, str], float] | None = None
                ) -> str:
    """A table for people: 4 significant digits, and `mean ± sd` where replicates differ."""
    cols = list(rows[0]) if rows else ["id"]
    sds = sds or {}
    out = [
        f"### {title}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for r in rows:
        cells = []
        for c in cols:
            sd = sds.get((r["id"], c))
            cells.append(_cell(r.get(c), 4) + (f" ± {sd:.2g}" if sd else ""))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


SPREAD_COLUMNS = ("table", "id", "column", "n", "mean", "sd", "ci_low", "ci_high", "values")


def spread_csv(cells: list[dict]) -> str:
    """analysis/spread.json as a long CSV: one row per table cell that has replicates."""
    lines = [",".join(SPREAD_COLUMNS)]
    for c in cells:
        values = " ".join(_cell(v, 10) for v in c["values"])
        lines.append(",".join([c["table"], c["id"], c["column"], str(c["n"]),
                               *(_cell(c[k], 10) for k in ("mean", "sd", "ci_low", "ci_high")),
                               values]))
    return "\n".join(lines) + "\n"


def replicate_tables(ctx: Any, replicate: int) -> tuple[Any, dict, dict]:
    """One replicate's analysis: (the Analysis, its six tables, its claims)."""
    from repro.outputs.analysis import Analysis
    from repro.outputs.claims import claims

    a = Analysis(ctx.study, ctx.out, replicate=replicate)
    a.prefetch_matches()
    tables: dict[str, Rows] = {}
    for table in study_tables(ctx.study):
        tables[table.name] = table.build(a, tables)
    return a, tables, claims(ctx.study, *(tables[name] for name in (
        "T3_survival", "T4_ratios", "T5_transfer", "T6_fragility_causal")))


def _dump_tables(path: Path, tables: dict) -> None:
    # Not write_json: it sorts keys, and the column order (id first) is part of the format.
    atomic_write_text(path, json.dumps(tables, indent=1) + "\n")


def analysis_code() -> dict[str, object]:
    """The code the analysis stage puts into its input hash (and `repro bless` compares with
    a run's manifest)."""
    return {"analysis": stage_code("repro.outputs.analysis", __name__),
            "claims": code_hash("repro.outputs.claims"),
            "replicates": code_hash("repro.outputs.replicates"),
            "predictability": code_hash("repro.outputs.predictability")}


def analysis_stage(ctx: Any, runs_done: list[str]) -> StageOutcome:
    """Compute every replicate's table rows and claims, and their means with spreads
    (repro.outputs.replicates); the per-feature arrays behind the figures are replicate 0's."""
    from repro.outputs.replicates import combine_claims, combine_tables
    from repro.outputs.sanity import sanity_gates

    inputs = {
        "version": STAGE_VERSION["analysis"],
        "code": analysis_code(),
        "study": ctx.study.path.read_text(),
        "upstream": {p: fingerprint(ctx.out / p) for p in runs_done},
    }

    def work(tmp: Path) -> dict:
        per_tables, per_claims = [], []
        for r in range(ctx.study.verdict.replicates):
            a, tables, claims = replicate_tables(ctx, r)
            (tmp / layout.REPLICATES / str(r)).mkdir(parents=True)
            if r == 0:
                np.savez(tmp / layout.FEATURES_NPZ, **a.features)
                write_json(tmp / SANITY, {"gates": sanity_gates(a, tables["T1_pruning"])})
            _dump_tables(tmp / layout.REPLICATES / str(r) / layout.TABLES_JSON, tables)
            write_json(tmp / layout.REPLICATES / str(r) / layout.CLAIMS_JSON, claims)
            per_tables.append(tables)
            per_claims.append(claims)
        tables, spreads = combine_tables(per_tables)
        _dump_tables(tmp / layout.TABLES_JSON, tables)
        write_json(tmp / layout.SPREAD_JSON, {"replicates": len(per_tables), "cells": spreads})
        write_json(tmp / layout.CLAIMS_JSON, combine_claims(per_claims))
        return {"rows": {k: len(v) for k, v in tables.items()},
                "replicates": len(per_tables)}

    return run_stage(
        ctx.out / layout.ANALYSIS_DIR, inputs, work, provenance=ctx.provenance(), force=ctx.force
    )


def tables_stage(ctx: Any) -> StageOutcome:
    """Render the analysis rows as CSV and Markdown; copy the claims to RUN_DIR/claims.json."""
    analysis = ctx.out / layout.ANALYSIS_DIR
    inputs = {
        "version": STAGE_VERSION["tables"],
        "code": stage_code("repro.outputs.tables", __name__),
        "analysis": fingerprint(analysis),
    }

    def work(tmp: Path) -> dict:
        tables = json.loads((analysis / layout.TABLES_JSON).read_text())
        cells = json.loads((analysis / layout.SPREAD_JSON).read_text())["cells"]
        written = [table for table in TABLES if table.name in tables]
        for table in written:
            name = table.name
            sds = {(c["id"], c["column"]): c["sd"] for c in cells if c["table"] == name}
            atomic_write_text(tmp / f"{name}.csv", to_csv(tables[name]))
            atomic_write_text(tmp / f"{name}.md", to_markdown(table.title, tables[name], sds))
        atomic_write_text(tmp / SPREAD, spread_csv(cells))
        atomic_write_text(tmp / SANITY, (analysis / SANITY).read_text())
        return {"tables": [table.name for table in written]}

    outcome = run_stage(
        ctx.out / layout.TABLES_DIR, inputs, work, provenance=ctx.provenance(), force=ctx.force
    )
    write_text_if_changed(ctx.out / layout.CLAIMS_JSON,
                          (analysis / layout.CLAIMS_JSON).read_text())
    return outcome
