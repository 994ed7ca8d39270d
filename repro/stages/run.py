"""The order a study runs in: `repro all --profile tiny --out DIR`.

Per model the token streams, per variant its stages (repro.stages.pipeline), then per
variant the SAEs of its runs (trained together) and each run's evaluation
(repro.stages.run_stages), then the study-level stages `finish` is given
(repro.outputs.finish: analysis, tables, figures, method controls, report, verification),
all under one writer lock on the output folder.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from repro.files import write_text_if_changed
from repro.stages import layout
from repro.stages.context import Context, ModelHolder, check_output_dir
from repro.stages.locks import writer_lock
from repro.stages.pipeline import VARIANT_STAGES, tokens_stage
from repro.stages.run_stages import RUN_STAGES
from repro.stages.store import StageOutcome, Status
from repro.study.spec import Run, Study


def with_references(study: Study, runs: tuple[Run, ...]) -> tuple[Run, ...]:
    """The selected runs plus the dense runs their evaluation compares with (same model and
    seed), which a shard may have to train itself when no other shard has yet."""
    refs = [r.dense_reference for r in runs if not r.variant.is_dense and r.is_evaluated]
    return tuple(dict.fromkeys([*runs, *(r for r in refs if r in study.runs)]))


Finish = Callable[[Context, Callable[[str, StageOutcome], None]], int | None]
"""The study-level stages (repro.outputs.finish.finish): given the context and a callback
reporting each of their outcomes, verify's exit code, or None while runs are missing."""


def run_all(ctx: Context, runs: tuple[Run, ...], finish: Finish) -> dict[str, int | None]:
    """Run every stage for the selected runs, then `finish` (the study-level stages, which
    wait until all runs are done). Returns the counts of stages done and skipped, and
    verify's exit code (None when the analysis still waits for runs)."""
    check_output_dir(ctx.out)
    with writer_lock(ctx.out, [r.id for r in runs], log=ctx.log):
        return _run_selected(ctx, runs, finish)


def _run_selected(ctx: Context, runs: tuple[Run, ...], finish: Finish) -> dict[str, int | None]:
    write_text_if_changed(ctx.out / layout.STUDY_FILE, ctx.study.path.read_text(encoding="utf-8"))
    counts: dict[str, int] = {Status.DONE: 0, Status.SKIPPED: 0}  # a Status is a str
    holder = ModelHolder(ctx)
    needed = with_references(ctx.study, runs)
    variants = tuple(dict.fromkeys(r.variant for r in needed))
    for key in dict.fromkeys(v.model for v in variants):
        spec = ctx.study.models[key]
        for stream in ctx.study.data.streams:
            outcome = tokens_stage(ctx, spec, stream, lambda spec=spec: holder.tokenizer_for(spec))
            _report(ctx, counts, f"[{key}] tokens/{stream}", outcome)
    for i, variant in enumerate(variants, 1):
        for name, stage in VARIANT_STAGES:
            outcome = stage(ctx, holder, variant)
            _report(ctx, counts, f"[{i}/{len(variants)} {variant.id}] {name}", outcome)
    # Per model, dense runs first: a pruned run's evaluation reads the dense run's SAE. The
    # runs of one variant (its seeds, its control) train their SAEs together, in one pass
    # over the variant's activations, then each is evaluated. A reference run outside the
    # selection only gets the SAE that evaluation needs; a control run has no evaluation.
    models_order = list(dict.fromkeys(v.model for v in variants))
    ordered = sorted(
        needed, key=lambda r: (models_order.index(r.variant.model), not r.variant.is_dense,
                               variants.index(r.variant))
    )
    position = {run: i for i, run in enumerate(ordered, 1)}
    for _, grouped in itertools.groupby(ordered, key=lambda r: r.variant):
        group = list(grouped)
        for name, run_stage in RUN_STAGES:
            todo = group if name == "sae" else [r for r in group if r in runs and r.is_evaluated]
            for run, outcome in zip(todo, run_stage(ctx, holder, todo), strict=True):
                _report(ctx, counts, f"[{position[run]}/{len(ordered)} {run.id}] {name}", outcome)
    verdict = finish(ctx, lambda name, outcome: _report(ctx, counts, f"[study] {name}", outcome))
    ctx.log(f"finished: {counts[Status.DONE]} stages done, {counts[Status.SKIPPED]} already done")
    return {**counts, "verify": verdict}


def _report(ctx: Context, counts: dict[str, int], what: str, outcome: StageOutcome) -> None:
    counts[outcome.status] += 1
    if outcome.reason == "recovered":
        ctx.log(f"{what}: recovered (it had finished when the previous run was stopped)")
    if outcome.status == Status.DONE:
        why = f" ({outcome.reason})" if outcome.reason not in ("not run yet", "") else ""
        ctx.log(f"{what}: done in {outcome.seconds:.1f}s{why}")
