"""The per-model and per-variant stages: tokens, then prune -> perplexity -> activations.

Per model: tokens (every stream, tokenized once). Per variant (a model dense or pruned):
prune -> perplexity -> activations. Each stage is a function from files to files, skipped
when its folder already holds a valid manifest for the same inputs; repro.stages.run runs
them in order, then the per-run stages (repro.stages.run_stages).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from safetensors.torch import save_file

from repro.files import write_json
from repro.inputs import data, models
from repro.science import activations, prune, pruners
from repro.science.perplexity import perplexity
from repro.science.seeding import seed_everything
from repro.stages.codehash import stage_code
from repro.stages.context import (
    KEPT_WEIGHTS,
    STAGE_VERSION,
    Context,
    ModelHolder,
    load_tokens,
    retry_smaller_on_oom,
    upstream,
)
from repro.stages.store import StageOutcome, run_stage
from repro.study.locations import recorded_path
from repro.study.sources import ModelSpec
from repro.study.spec import Variant

# ---- tokens ------------------------------------------------------------------------------


def tokens_stage(
    ctx: Context, spec: ModelSpec, stream: str, tokenizer_fn: Callable
) -> StageOutcome:
    stream_spec = getattr(ctx.study.data, stream)
    inputs = {
        "version": STAGE_VERSION["tokens"],
        "code": stage_code("repro.inputs.data", __name__),
        "stream": stream_spec,
        "model": recorded_path(spec.source),  # the same key in every install
        "revision": spec.revision,
    }

    def work(tmp: Path) -> dict:
        ids = data.token_stream(stream_spec, tokenizer_fn())
        save_file({"input_ids": ids}, str(tmp / "tokens.safetensors"))
        return {"shape": list(ids.shape)}

    return run_stage(
        ctx.tokens_dir(spec.key, stream),
        inputs,
        work,
        provenance=ctx.provenance(model=spec.key),
        force=ctx.force,
    )


def _variant_stage(ctx: Context, variant: Variant, name: str, inputs: dict,
                   work: Callable[[Path], dict | None]) -> StageOutcome:
    """One stage of one variant, in variants/<id>/<name>, stamped with the variant id."""
    return run_stage(ctx.variant_dir(variant, name), inputs, work,
                     provenance=ctx.provenance(variant=variant.id), force=ctx.force)


def prune_stage(ctx: Context, holder: ModelHolder, variant: Variant) -> StageOutcome:
    spec = ctx.study.models[variant.model]
    method = None if variant.is_dense else pruners.pruner(variant.method, variant.pattern).method
    inputs = {
        "version": STAGE_VERSION["prune"],
        "code": stage_code("repro.science.pruners", __name__),
        "variant": variant,
        "model": recorded_path(spec.source),  # the same key in every install
        "revision": spec.revision,
        "dtype": ctx.study.dtype,
    }
    if method is not None and method.needs_calibration:
        inputs["calibration"] = upstream(ctx.tokens_dir(spec.key, "calibration"))

    def work(tmp: Path) -> dict:
        model = holder.dense_model(spec)
        seed_everything(ctx.study.seed)
        masks = {}
        if method is not None:
            calibration = (load_tokens(ctx, spec.key, "calibration")
                           if method.needs_calibration else None)
            masks = pruners.prune_variant(model, variant.method, variant.sparsity,
                                          variant.pattern, calibration, ctx.batch_size)
        holder.current = variant
        report = prune.sparsity_report(model)
        prune.save_masks(masks, tmp / "masks.safetensors")
        if method is not None and method.updates_weights:
            prune.save_kept_weights(model, masks, tmp / KEPT_WEIGHTS)
        write_json(tmp / "sparsity.json", report)
        # a quantized weight that rounds to 0 is a level of its grid, not a removed weight:
        # such a variant's sparsity is what its masks remove (none); sparsity.json counts zeros
        removes = method is None or method.prunes
        return {"achieved_sparsity": report["overall"] if removes else prune.removed(masks)}

    return _variant_stage(ctx, variant, "prune", inputs, work)


def perplexity_stage(ctx: Context, holder: ModelHolder, variant: Variant) -> StageOutcome:
    spec = ctx.study.models[variant.model]
    inputs = {
        "version": STAGE_VERSION["perplexity"],
        "code": stage_code("repro.science.perplexity", __name__),
        "prune": upstream(ctx.variant_dir(variant, "prune")),
        "tokens": upstream(ctx.tokens_dir(spec.key, "perplexity")),
    }

    def work(tmp: Path) -> dict:
        ids = load_tokens(ctx, spec.key, "perplexity")
        ppl = perplexity(holder.variant_model(variant), ids, batch_size=max(1, ctx.batch_size // 4))
        write_json(tmp / "perplexity.json", {"perplexity": ppl, "n_tokens": ids.numel()})
        return {"perplexity": ppl}

    return _variant_stage(ctx, variant, "perplexity", inputs,
                          retry_smaller_on_oom(ctx, f"{variant.id} perplexity", work))


def activations_stage(ctx: Context, holder: ModelHolder, variant: Variant) -> StageOutcome:
    spec = ctx.study.models[variant.model]
    inputs = {
        "version": STAGE_VERSION["activations"],
        "code": stage_code("repro.science.activations", __name__),
        "layer": spec.probe_layer,
        "prune": upstream(ctx.variant_dir(variant, "prune")),
        "tokens": upstream(ctx.tokens_dir(spec.key, "eval")),
    }

    def work(tmp: Path) -> dict:
        ids = load_tokens(ctx, spec.key, "eval")
        names = activations.write_chunks(
            holder.variant_model(variant),
            ids,
            spec.probe_layer,
            tmp,
            batch_size=ctx.batch_size,
            sequences_per_chunk=max(ctx.batch_size, 64),
            dtype=models.DTYPES[ctx.study.dtype],
        )
        return {"chunks": len(names), "n_tokens": ids.numel()}

    return _variant_stage(ctx, variant, "activations", inputs,
                          retry_smaller_on_oom(ctx, f"{variant.id} activations", work))


VARIANT_STAGES = (
    ("prune", prune_stage),
    ("perplexity", perplexity_stage),
    ("activations", activations_stage),
)
