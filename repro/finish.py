"""The study-level end of `repro all`: analysis -> tables -> figures -> method controls ->
verify -> report.

These need every run of the study. A sharded or `--runs` invocation that leaves runs
unfinished says which ones and stops before the analysis; the last shard to finish (or a
plain `repro all` afterwards) completes it.
"""

from __future__ import annotations

from pathlib import Path

from repro.codehash import stage_code
from repro.pipeline import Context
from repro.store import StageOutcome, fingerprint, read_manifest, run_stage, write_json

FIGURES_VERSION = 1
METHOD_CONTROLS_VERSION = 1


def unfinished_runs(ctx: Context) -> list[str]:
    """Runs of the study whose last stage (evaluate, or sae for a control run) has no
    manifest yet."""
    return _unfinished(ctx.study, ctx.out)


def _unfinished(study, out: Path) -> list[str]:
    return [r.id for r in study.runs
            if read_manifest(out / "runs" / r.id / last_stage(r)) is None]


STUDY_STAGES = ("analysis", "tables", "figures")


def missing_parts(run_dir: Path) -> list[str] | None:
    """What a run folder still lacks: runs without their last stage, then study-level stages.
    Empty for a complete run; None when the folder's copy of its study file cannot be read
    as a study (then nobody can tell)."""
    from repro.errors import ReproError
    from repro.study_file import load_study

    if not (run_dir / "study.toml").is_file():
        return ["study.toml (nothing has run here, or not with `repro all`)"]
    try:
        study = load_study(run_dir / "study.toml")
    except ReproError:
        return None
    runs = [f"runs/{rid}/{last_stage(study.run(rid))}" for rid in _unfinished(study, run_dir)]
    return runs + [s for s in STUDY_STAGES if read_manifest(run_dir / s) is None]


def describe_missing(missing: list[str]) -> str:
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    return (f"incomplete: {len(missing)} part(s) missing ({shown}); rerun the same `repro all` "
            "(it resumes) to finish")


def last_stage(run) -> str:
    return "evaluate" if run.is_evaluated else "sae"


def figures_stage(ctx: Context) -> StageOutcome:
    from repro.figures import write_figures

    inputs = {
        "version": FIGURES_VERSION,
        "code": stage_code("repro.figures", __name__),
        "analysis": fingerprint(ctx.out / "analysis"),
    }

    def work(tmp: Path) -> dict:
        return {"figures": sorted(write_figures(ctx.out, tmp))}

    return run_stage(
        ctx.out / "figures", inputs, work, provenance=ctx.provenance(), force=ctx.force
    )


def method_controls_stage(ctx: Context) -> StageOutcome:
    """The synthetic positive and negative controls of the whole method (repro.method_controls):
    the same for every profile, seconds on one CPU thread, read by the report."""
    from repro.method_controls import FILE, run_controls

    inputs = {"version": METHOD_CONTROLS_VERSION,
              "code": stage_code("repro.method_controls", __name__)}

    def work(tmp: Path) -> dict:
        result = run_controls()
        write_json(tmp / FILE, result)
        return {"ok": result["ok"]}

    return run_stage(ctx.out / "method_controls", inputs, work, provenance=ctx.provenance(),
                     force=ctx.force)


def finish(ctx: Context, report_stage) -> int | None:
    """Run the study-level stages; return verify's exit code, or None if runs are missing."""
    from repro.tables import analysis_stage, tables_stage

    missing = unfinished_runs(ctx)
    if missing:
        ctx.log(
            f"analysis waits for {len(missing)} unfinished run(s): {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
            + "; run `repro all` without --runs/"
            "--shard (or the remaining shards) to complete them"
        )
        return None
    evaluated = [f"runs/{r.id}/{last_stage(r)}" for r in ctx.study.runs]
    report_stage("analysis", analysis_stage(ctx, evaluated))
    report_stage("tables", tables_stage(ctx))
    report_stage("figures", figures_stage(ctx))
    report_stage("method_controls", method_controls_stage(ctx))
    return verify_and_report(ctx)


def verify_and_report(ctx: Context) -> int:
    """Verify against the expected outputs, then write the report that shows the verdicts."""
    from repro.report import write_report
    from repro.verify import has_expected, record_unverified, verify_run
    from repro.verify_text import summary

    if has_expected(ctx.out, ctx.expected):
        result = verify_run(ctx.out, ctx.expected)
        line, code = summary(result), 0 if result["ok"] else 1
    else:  # a study of one's own before its first bless: a clean end
        line, code = record_unverified(ctx.out, ctx.expected), 0
    md, _html = write_report(ctx.out)
    print(line)
    ctx.log(f"report: {md}")
    return code
