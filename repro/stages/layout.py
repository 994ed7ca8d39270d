"""The run folder's layout, named once: every folder `repro all` writes under --out, and the
files that one stage writes and another (or `repro report`, `verify`, `bless`) reads.

    study.toml                      a copy of the study file (it makes the folder a run folder)
    claims.json, verification.json, report.md ...   the top-level files (outputs/runfolder.py)
    tokens/<model>/<stream>/        token streams (stages/pipeline.py)
    variants/<variant id>/<stage>/  prune, perplexity, activations of a model variant
    runs/<run id>/<stage>/          sae, evaluate of one SAE run
    analysis/                       tables.json, spread.json, claims.json, features.npz,
                                    sanity.json, replicates/<r>/{tables,claims}.json
    tables/                         T*.csv and T*.md (outputs/tables.py), spread.csv, sanity.json
    figures/                        F*.png and F*.pdf, captions.json
    method_controls/                method_controls.json

Paths are built from a run's or variant's id (repro.study.spec), whose every part is a plain
name, so none leads out of --out.
"""

from __future__ import annotations

from pathlib import Path

from repro.study.spec import Run, Variant

STUDY_FILE = "study.toml"
"""The run folder's copy of its study file."""
TOKENS_DIR = "tokens"
VARIANTS_DIR = "variants"
RUNS_DIR = "runs"
ANALYSIS_DIR = "analysis"
TABLES_DIR = "tables"
FIGURES_DIR = "figures"
METHOD_CONTROLS_DIR = "method_controls"

CLAIMS_JSON = "claims.json"
"""The claims: analysis/claims.json, copied to the top of the run folder."""
TABLES_JSON = "tables.json"
"""analysis/tables.json: every table's rows, {table name: [row, ...]}."""
SPREAD_JSON = "spread.json"
"""analysis/spread.json: every cell's spread over the replicates."""
FEATURES_NPZ = "features.npz"
"""analysis/features.npz: the per-feature arrays behind the figures, keyed 'ID|name'."""
REPLICATES = "replicates"
"""analysis/replicates/<r>/{tables,claims}.json: each replicate's own numbers (bless reads
them to measure the spread its bands come from)."""
CAPTIONS_JSON = "captions.json"
"""figures/captions.json: {figure stem: caption}, for the report."""
METHOD_CONTROLS_JSON = "method_controls.json"
"""method_controls/method_controls.json: the synthetic controls of the method, for the report."""


def tokens_dir(out: Path, model: str, stream: str) -> Path:
    """tokens/<model>/<stream>: one token stream of one model."""
    return out / TOKENS_DIR / model / stream


def variant_dir(out: Path, variant: Variant, stage: str) -> Path:
    """variants/<variant id>/<stage>: a stage of one model variant."""
    return out / VARIANTS_DIR / variant.id / stage


def run_folder(out: Path, run: Run) -> Path:
    """runs/<run id>: the stages of one SAE run."""
    return out / RUNS_DIR / run.id


def run_dir(out: Path, run: Run, stage: str) -> Path:
    """runs/<run id>/<stage>."""
    return run_folder(out, run) / stage


def run_part(run_id: str, stage: str) -> str:
    """'runs/<run id>/<stage>', a run's stage as the run folder's relative path (how the
    completeness check and a partial verdict name what is missing)."""
    return f"{RUNS_DIR}/{run_id}/{stage}"


def variant_part(variant: Variant, stage: str) -> str:
    """'variants/<variant id>/<stage>', relative to the run folder."""
    return f"{VARIANTS_DIR}/{variant.id}/{stage}"
