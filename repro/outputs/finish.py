"""The study-level end of `repro all`: analysis -> tables -> figures -> method controls ->
verify -> report.

These need every run of the study. A sharded or `--runs` invocation that leaves runs
unfinished stops before the analysis with a PARTIAL verdict (repro.outputs.partial): what
ran, what did not, the rows that can already be compared, and the command that finishes the
rest; the last shard to finish (or a plain `repro all` afterwards) completes it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from repro.files import write_json
from repro.outputs.completeness import last_stage, unfinished_runs
from repro.stages import layout
from repro.stages.codehash import stage_code
from repro.stages.context import Context
from repro.stages.locks import stage_lock
from repro.stages.store import StageOutcome, fingerprint, run_stage

VERIFIED = "verification.json"
"""Its lock serialises the verdicts of shards that finish at the same time."""
FIGURES_VERSION = 1
METHOD_CONTROLS_VERSION = 1


def figures_stage(ctx: Context) -> StageOutcome:
    from repro.outputs.figures import write_figures

    inputs = {
        "version": FIGURES_VERSION,
        "code": stage_code("repro.outputs.figures", __name__),
        "analysis": fingerprint(ctx.out / layout.ANALYSIS_DIR),
        # the thresholds the figures draw and name in their captions
        "tau": ctx.study.sae.survival_threshold,
        "thresholds": asdict(ctx.study.thresholds),
    }

    def work(tmp: Path) -> dict:
        return {"figures": sorted(write_figures(ctx.out, tmp, ctx.study))}

    return run_stage(
        ctx.out / layout.FIGURES_DIR, inputs, work, provenance=ctx.provenance(), force=ctx.force
    )


def method_controls_stage(ctx: Context) -> StageOutcome:
    """The synthetic positive and negative controls of the whole method
    (repro.science.method_controls): the same for every profile, seconds on one CPU thread,
    read by the report."""
    from repro.science.method_controls import run_controls

    inputs = {"version": METHOD_CONTROLS_VERSION,
              "code": stage_code("repro.science.method_controls", __name__)}

    def work(tmp: Path) -> dict:
        result = run_controls()
        write_json(tmp / layout.METHOD_CONTROLS_JSON, result)
        return {"ok": result["ok"]}

    return run_stage(ctx.out / layout.METHOD_CONTROLS_DIR, inputs, work,
                     provenance=ctx.provenance(), force=ctx.force)


def finish(ctx: Context, report_stage) -> int | None:
    """Run the study-level stages; return verify's exit code (the PARTIAL one when runs are
    missing)."""
    from repro.outputs.tables import analysis_stage, tables_stage

    if unfinished_runs(ctx):
        return partial_end(ctx)
    evaluated = [layout.run_part(r.id, last_stage(r)) for r in ctx.study.runs]
    report_stage("analysis", analysis_stage(ctx, evaluated))
    report_stage("tables", tables_stage(ctx))
    report_stage("figures", figures_stage(ctx))
    report_stage("method_controls", method_controls_stage(ctx))
    return verify_and_report(ctx)


def partial_end(ctx: Context) -> int:
    """The end of a `repro all` that left runs unfinished (--runs, --shard): what ran, what
    did not, the comparison of what finished (repro.outputs.partial), the report, and the
    command that finishes the rest; exit code 3 (1 when a compared row already fails)."""
    from repro.outputs.partial import finish_command, summary, verify_partial
    from repro.outputs.report import write_report
    from repro.stages.launch import launched_shard

    others = len(unfinished_runs(ctx))
    if launched_shard(None) is not None:  # a nonzero exit would make the launcher stop the rest
        ctx.log(f"this process's runs are done; {others} run(s) of the other processes are not "
                "yet: the last process to finish completes the study")
        return 0
    with stage_lock(ctx.out / VERIFIED, ctx.log):  # a concurrent shard's final verdict wins
        if not unfinished_runs(ctx):
            ctx.log("the other runs finished meanwhile: their shard completes the study")
            return 0
        command = finish_command(ctx.out, ctx.study.path, ctx.expected)
        result = verify_partial(ctx.out, ctx.study, ctx.expected, command)
        md, _html = write_report(ctx.out)
    print(summary(result))
    ctx.log(f"report: {md}")
    return result["exit_code"]


def verify_and_report(ctx: Context) -> int:
    """Verify against the expected outputs, then write the report that shows the verdicts."""
    from repro.outputs.report import write_report
    from repro.outputs.verify import has_expected, record_unverified, verify_run
    from repro.outputs.verify_text import summary

    with stage_lock(ctx.out / VERIFIED, ctx.log):
        if has_expected(ctx.out, ctx.expected):
            result = verify_run(ctx.out, ctx.expected)
            line, code = summary(result), 0 if result["ok"] else 1
        else:  # a study of one's own before its first bless: a clean end
            line, code = record_unverified(ctx.out, ctx.expected), 0
        md, _html = write_report(ctx.out)
    print(line)
    ctx.log(f"report: {md}")
    return code
