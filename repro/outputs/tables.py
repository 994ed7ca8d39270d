"""The six tables as CSV (machine-checked by `repro verify`) and Markdown (for people),
and the stages that produce them: analysis -> tables (+ RUN_DIR/claims.json).

Formats: every table has an `id` column first (a run, condition or pair id); CSV floats are
written with 10 significant digits; the Markdown twin rounds to 4.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from repro.files import atomic_write_text, write_json, write_text_if_changed
from repro.outputs.expected import SANITY, SPREAD
from repro.stages.codehash import code_hash, stage_code
from repro.stages.store import StageOutcome, fingerprint, run_stage

TITLES = {
    "T1_pruning": "Table 1. Pruning: achieved sparsity and perplexity (dense vs pruned)",
    "T2_seed_stability": "Table 2. RQ1 seed stability of dense SAEs (Hungarian matching)",
    "T3_survival": "Table 3. RQ2 feature survival and its dependence on firing rate",
    "T4_ratios": "Table 4. C2 Wanda / magnitude survival ratios",
    "T5_transfer": "Table 5. RQ3 transferability of the dense-trained and pre-trained SAEs",
    "T6_fragility_causal": "Table 6. RQ4 fragility and RQ5 causal importance vs survival",
}
STAGE_VERSION = {"analysis": 4, "tables": 4}
REPLICATES = "replicates"
"""analysis/replicates/<r>/{tables,claims}.json: each replicate's own numbers (bless reads
them to measure the spread its bands come from)."""



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
    t3 = a.t3_survival()
    t4, t5, t6 = a.t4_ratios(t3), a.t5_transfer(), a.t6_fragility_causal()
    tables = {"T1_pruning": a.t1_pruning(), "T2_seed_stability": a.t2_seed_stability(),
              "T3_survival": t3, "T4_ratios": t4, "T5_transfer": t5, "T6_fragility_causal": t6}
    return a, tables, claims(ctx.study, t3, t4, t5, t6)


def _dump_tables(path: Path, tables: dict) -> None:
    # Not write_json: it sorts keys, and the column order (id first) is part of the format.
    atomic_write_text(path, json.dumps(tables, indent=1) + "\n")


def analysis_stage(ctx: Any, runs_done: list[str]) -> StageOutcome:
    """Compute every replicate's table rows and claims, and their means with spreads
    (repro.outputs.replicates); the per-feature arrays behind the figures are replicate 0's."""
    from repro.outputs.analysis import sanity_gates
    from repro.outputs.replicates import combine_claims, combine_tables

    inputs = {
        "version": STAGE_VERSION["analysis"],
        "code": {"analysis": stage_code("repro.outputs.analysis", __name__),
                 "claims": code_hash("repro.outputs.claims"),
                 "replicates": code_hash("repro.outputs.replicates")},
        "study": ctx.study.path.read_text(),
        "upstream": {p: fingerprint(ctx.out / p) for p in runs_done},
    }

    def work(tmp: Path) -> dict:
        per_tables, per_claims = [], []
        for r in range(ctx.study.verdict.replicates):
            a, tables, claims = replicate_tables(ctx, r)
            (tmp / REPLICATES / str(r)).mkdir(parents=True)
            if r == 0:
                np.savez(tmp / "features.npz", **a.features)
                write_json(tmp / SANITY, {"gates": sanity_gates(a, tables["T1_pruning"])})
            _dump_tables(tmp / REPLICATES / str(r) / "tables.json", tables)
            write_json(tmp / REPLICATES / str(r) / "claims.json", claims)
            per_tables.append(tables)
            per_claims.append(claims)
        tables, spreads = combine_tables(per_tables)
        _dump_tables(tmp / "tables.json", tables)
        write_json(tmp / "spread.json", {"replicates": len(per_tables), "cells": spreads})
        write_json(tmp / "claims.json", combine_claims(per_claims))
        return {"rows": {k: len(v) for k, v in tables.items()},
                "replicates": len(per_tables)}

    return run_stage(
        ctx.out / "analysis", inputs, work, provenance=ctx.provenance(), force=ctx.force
    )


def tables_stage(ctx: Any) -> StageOutcome:
    """Render the analysis rows as CSV and Markdown; copy the claims to RUN_DIR/claims.json."""
    inputs = {
        "version": STAGE_VERSION["tables"],
        "code": stage_code("repro.outputs.tables", __name__),
        "analysis": fingerprint(ctx.out / "analysis"),
    }

    def work(tmp: Path) -> dict:
        tables = json.loads((ctx.out / "analysis" / "tables.json").read_text())
        cells = json.loads((ctx.out / "analysis" / "spread.json").read_text())["cells"]
        for name, title in TITLES.items():
            sds = {(c["id"], c["column"]): c["sd"] for c in cells if c["table"] == name}
            atomic_write_text(tmp / f"{name}.csv", to_csv(tables[name]))
            atomic_write_text(tmp / f"{name}.md", to_markdown(title, tables[name], sds))
        atomic_write_text(tmp / SPREAD, spread_csv(cells))
        atomic_write_text(tmp / SANITY, (ctx.out / "analysis" / SANITY).read_text())
        return {"tables": list(TITLES)}

    outcome = run_stage(
        ctx.out / "tables", inputs, work, provenance=ctx.provenance(), force=ctx.force
    )
    write_text_if_changed(ctx.out / "claims.json",
                          (ctx.out / "analysis" / "claims.json").read_text())
    return outcome
