"""The study-level end of `repro all`: analysis -> tables -> figures -> method controls ->
verify -> report.

These need every run of the study. A sharded or `--runs` invocation that leaves runs
unfinished says which ones and stops before the analysis; the last shard to finish (or a
plain `repro all` afterwards) completes it.
"""

from __future__ import annotations

from pathlib import Path

from repro.files import write_json
from repro.outputs.completeness import last_stage, unfinished_runs
from repro.stages.codehash import stage_code
from repro.stages.context import Context
from repro.stages.store import StageOutcome, fingerprint, run_stage

FIGURES_VERSION = 1
METHOD_CONTROLS_VERSION = 1


def figures_stage(ctx: Context) -> StageOutcome:
    from repro.outputs.figures import write_figures

    inputs = {
        "version": FIGURES_VERSION,
        "code": stage_code("repro.outputs.figures", __name__),
        "analysis": fingerprint(ctx.out / "analysis"),
    }

    def work(tmp: Path) -> dict:
        return {"figures": sorted(write_figures(ctx.out, tmp))}

    return run_stage(
        ctx.out / "figures", inputs, work, provenance=ctx.provenance(), force=ctx.force
    )


def method_controls_stage(ctx: Context) -> StageOutcome:
    """The synthetic positive and negative controls of the whole method
    (repro.science.method_controls): the same for every profile, seconds on one CPU thread,
    read by the report."""
    from repro.science.method_controls import FILE, run_controls

    inputs = {"version": METHOD_CONTROLS_VERSION,
              "code": stage_code("repro.science.method_controls", __name__)}

    def work(tmp: Path) -> dict:
        result = run_controls()
        write_json(tmp / FILE, result)
        return {"ok": result["ok"]}

    return run_stage(ctx.out / "method_controls", inputs, work, provenance=ctx.provenance(),
                     force=ctx.force)


def finish(ctx: Context, report_stage) -> int | None:
    """Run the study-level stages; return verify's exit code, or None if runs are missing."""
    from repro.outputs.tables import analysis_stage, tables_stage

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
    from repro.outputs.report import write_report
    from repro.outputs.verify import has_expected, record_unverified, verify_run
    from repro.outputs.verify_text import summary

    if has_expected(ctx.out, ctx.expected):
        result = verify_run(ctx.out, ctx.expected)
        line, code = summary(result), 0 if result["ok"] else 1
    else:  # a study of one's own before its first bless: a clean end
        line, code = record_unverified(ctx.out, ctx.expected), 0
    md, _html = write_report(ctx.out)
    print(line)
    ctx.log(f"report: {md}")
    return code
