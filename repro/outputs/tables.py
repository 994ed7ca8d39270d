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
from repro.outputs.expected import SANITY
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
STAGE_VERSION = {"analysis": 3, "tables": 3}



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


def to_markdown(title: str, rows: list[dict]) -> str:
    cols = list(rows[0]) if rows else ["id"]
    out = [
        f"### {title}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    out += ["| " + " | ".join(_cell(r.get(c), 4) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def analysis_stage(ctx: Any, runs_done: list[str]) -> StageOutcome:
    """Compute all table rows, the claims and the per-feature arrays behind the figures."""
    from repro.outputs.analysis import Analysis, sanity_gates
    from repro.outputs.claims import claims

    inputs = {
        "version": STAGE_VERSION["analysis"],
        "code": {"analysis": stage_code("repro.outputs.analysis", __name__),
                 "claims": code_hash("repro.outputs.claims")},
        "study": ctx.study.path.read_text(),
        "upstream": {p: fingerprint(ctx.out / p) for p in runs_done},
    }

    def work(tmp: Path) -> dict:
        a = Analysis(ctx.study, ctx.out)
        t3 = a.t3_survival()
        t4, t5, t6 = a.t4_ratios(t3), a.t5_transfer(), a.t6_fragility_causal()
        tables = {
            "T1_pruning": a.t1_pruning(),
            "T2_seed_stability": a.t2_seed_stability(),
            "T3_survival": t3,
            "T4_ratios": t4,
            "T5_transfer": t5,
            "T6_fragility_causal": t6,
        }
        # Not write_json: it sorts keys, and the column order (id first) is part of the format.
        atomic_write_text(tmp / "tables.json", json.dumps(tables, indent=1) + "\n")
        write_json(tmp / "claims.json", claims(ctx.study, t3, t4, t5, t6))
        write_json(tmp / SANITY, {"gates": sanity_gates(a, tables["T1_pruning"])})
        np.savez(tmp / "features.npz", **a.features)
        return {"rows": {k: len(v) for k, v in tables.items()}}

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
        for name, title in TITLES.items():
            atomic_write_text(tmp / f"{name}.csv", to_csv(tables[name]))
            atomic_write_text(tmp / f"{name}.md", to_markdown(title, tables[name]))
        atomic_write_text(tmp / SANITY, (ctx.out / "analysis" / SANITY).read_text())
        return {"tables": list(TITLES)}

    outcome = run_stage(
        ctx.out / "tables", inputs, work, provenance=ctx.provenance(), force=ctx.force
    )
    write_text_if_changed(ctx.out / "claims.json",
                          (ctx.out / "analysis" / "claims.json").read_text())
    return outcome
