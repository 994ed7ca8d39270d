"""Whether a run folder is complete, and if not, what it lacks: what `repro all` waits for
before the study-level stages, and what `repro report` and `repro verify` say about a
half-finished, killed or empty run.
"""

from __future__ import annotations

from pathlib import Path

from repro.stages import layout
from repro.stages.context import Context
from repro.stages.store import read_manifest


def unfinished_runs(ctx: Context) -> list[str]:
    """Runs of the study whose last stage (evaluate, or sae for a control run) has no
    manifest yet."""
    return _unfinished(ctx.study, ctx.out)


def _unfinished(study, out: Path) -> list[str]:
    return [r.id for r in study.runs
            if read_manifest(out / layout.run_part(r.id, last_stage(r))) is None]


STUDY_STAGES = (layout.ANALYSIS_DIR, layout.TABLES_DIR, layout.FIGURES_DIR)


def missing_parts(run_dir: Path) -> list[str] | None:
    """What a run folder still lacks: runs without their last stage, then study-level stages.
    Empty for a complete run; None when the folder's copy of its study file cannot be read
    as a study (then nobody can tell)."""
    from repro.errors import ReproError
    from repro.study.reader import load_study

    if not (run_dir / layout.STUDY_FILE).is_file():
        return [f"{layout.STUDY_FILE} (nothing has run here, or not with `repro all`)"]
    try:
        study = load_study(run_dir / layout.STUDY_FILE)
    except ReproError:
        return None
    runs = [layout.run_part(rid, last_stage(study.run(rid))) for rid in _unfinished(study, run_dir)]
    return runs + [s for s in STUDY_STAGES if read_manifest(run_dir / s) is None]


def describe_missing(missing: list[str], command: str | None = None) -> str:
    """What a run folder lacks, and how to finish it: `command` (repro.outputs.partial.
    finish_command), else `repro all` with the folder's study and --out and without
    --runs/--shard, which a rerun of a `--runs` command would not be."""
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    how = (f"`{command}`" if command else "`repro all` with its study and --out, without "
           "--runs or --shard")
    return f"incomplete: {len(missing)} part(s) missing ({shown}); finish with {how} (it resumes)"


def last_stage(run) -> str:
    return "evaluate" if run.is_evaluated else "sae"
