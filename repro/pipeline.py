"""The stages of a study, run over the artifact store: `repro all --profile tiny --out DIR`.

Per model: tokens (every stream, tokenized once). Per variant (a model dense or pruned):
prune -> perplexity -> activations. Per run (repro.research_stages): sae -> evaluate. Each
stage is a function from files to files, skipped when its folder already holds a valid
manifest for the same inputs.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from repro import activations, data, models, prune, saes
from repro.codehash import stage_code
from repro.errors import ReproError
from repro.families import prunable_matrices
from repro.locks import writer_lock
from repro.perplexity import perplexity
from repro.provenance import provenance
from repro.seeding import seed_everything
from repro.store import (
    StageOutcome,
    fingerprint,
    run_stage,
    write_json,
    write_text_if_changed,
)
from repro.study import ModelSpec, Run, Study, Variant

STAGE_VERSION = {
    "tokens": 1,
    "prune": 2,
    "perplexity": 1,
    "activations": 1,
    "sae": 2,
    "evaluate": 2,
}
STREAMS = ("calibration", "sae_train", "eval", "perplexity")


@dataclass
class Context:
    """Everything a stage needs besides its own inputs: where, on what, and how to report."""

    study: Study
    out: Path
    device: torch.device
    force: bool = False
    quiet: bool = False
    started: float = field(default_factory=time.time)
    shrink: int = 1
    """Divides the batch size while a stage retries after running out of GPU memory."""
    expected: Path | None = None
    """The expected outputs to verify against (--expected), else the package's for the study."""

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.time() - self.started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def provenance(self, **extra: object) -> dict:
        return provenance(self.device, study=self.study.name, **extra)

    @property
    def batch_size(self) -> int:
        """Sequences per forward pass; small on CPU, where larger batches do not pay."""
        return max(1, (16 if self.device.type == "cuda" else 32) // self.shrink)

    def tokens_dir(self, model: str, stream: str) -> Path:
        return self.out / "tokens" / model / stream

    def variant_dir(self, variant: Variant, stage: str) -> Path:
        return self.out / "variants" / variant.id / stage


def check_output_dir(out: Path) -> None:
    """The output folder must be creatable and writable; say so in one line if not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{id(out)}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ReproError(
            f"cannot write to output folder {out} ({exc.strerror}); choose another --out"
        ) from None


# ---- tokens ------------------------------------------------------------------------------


def tokens_stage(
    ctx: Context, spec: ModelSpec, stream: str, tokenizer_fn: Callable
) -> StageOutcome:
    stream_spec = getattr(ctx.study.data, stream)
    inputs = {
        "version": STAGE_VERSION["tokens"],
        "code": stage_code("repro.data", __name__),
        "stream": stream_spec,
        "model": spec.source,
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


def load_tokens(ctx: Context, model: str, stream: str) -> torch.Tensor:
    return load_file(str(ctx.tokens_dir(model, stream) / "tokens.safetensors"))["input_ids"]


def _upstream(folder: Path) -> str:
    """Downstream stages depend on an upstream stage through its fingerprint."""
    found = fingerprint(folder)
    if found is None:
        raise ReproError(f"{folder} has no manifest; rerun `repro all` to rebuild it")
    return found


# ---- variants ------------------------------------------------------------------------------


class ModelHolder:
    """Keeps one dense model loaded and turns it into any of its variants on demand.

    The dense weights of the pruned matrices are kept aside, so switching from one variant to
    the next restores them and applies the next masks instead of reloading from disk.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.key: str | None = None
        self.model: torch.nn.Module | None = None
        self.tokenizers: dict[str, object] = {}
        self.dense: dict[str, torch.Tensor] = {}
        self.current: Variant | None = None
        self.capture: tuple[tuple, saes.ProbeCapture] | None = None

    def probe_capture(self, variant: Variant, tokens: str, n_tokens: int,
                      d_model: int) -> saes.ProbeCapture | None:
        """The SAE-training activations of `variant` to record or replay, when more than one
        run (seed) of the study trains on them and they fit in host memory; else None."""
        key = (variant, tokens)
        if self.capture is not None and self.capture[0] == key:
            return self.capture[1]
        self.capture = None  # another variant's stream: free it
        seeds = sum(r.variant == variant for r in self.ctx.study.runs)
        dtype = models.DTYPES[self.ctx.study.dtype]
        if seeds < 2 or not saes.ProbeCapture.fits(n_tokens, d_model, dtype):
            return None
        self.capture = (key, saes.ProbeCapture())
        return self.capture[1]

    def tokenizer_for(self, spec: ModelSpec):
        if spec.key not in self.tokenizers:
            self.tokenizers[spec.key] = models.load_tokenizer(spec)
        return self.tokenizers[spec.key]

    def dense_model(self, spec: ModelSpec) -> torch.nn.Module:
        if self.key != spec.key:
            self.model = models.load_model(spec, dtype=self.ctx.study.dtype, device=self.ctx.device)
            self.key = spec.key
            self.dense = {
                n: m.weight.detach().clone() for n, m in prunable_matrices(self.model).items()
            }
        else:
            self.restore()
        self.current = None
        return self.model

    def restore(self) -> None:
        with torch.no_grad():
            for name, mod in prunable_matrices(self.model).items():
                mod.weight.copy_(self.dense[name])

    def variant_model(self, variant: Variant) -> torch.nn.Module:
        """The model with this variant's stored masks applied."""
        if self.current == variant:
            return self.model
        model = self.dense_model(self.ctx.study.models[variant.model])
        if not variant.is_dense:
            masks = prune.load_masks(self.ctx.variant_dir(variant, "prune") / "masks.safetensors")
            prune.apply_masks(model, masks)
        self.current = variant
        return model


def retry_smaller_on_oom(ctx: Context, what: str,
                         work: Callable[[Path], dict | None]) -> Callable[[Path], dict | None]:
    """`work` that, on CUDA out-of-memory, starts again with half the batch size, down to 1.

    The outputs of the failed attempt are deleted first; the batch size used is recorded in the
    manifest's result. A stage that does not fit at batch size 1 stops with a one-line error.
    """

    def attempt(tmp: Path) -> dict | None:
        try:
            while True:
                try:
                    extra = work(tmp) or {}
                    return {**extra, "batch_size": ctx.batch_size} if ctx.shrink > 1 else extra
                except torch.OutOfMemoryError:
                    if ctx.batch_size == 1:
                        raise ReproError(f"{what}: out of GPU memory even at batch size 1; free "
                                         "the GPU or use one with more memory") from None
                    shutil.rmtree(tmp)
                    tmp.mkdir()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    ctx.shrink *= 2
                    ctx.log(f"{what}: out of GPU memory; retrying with batch size "
                            f"{ctx.batch_size}")
        finally:
            ctx.shrink = 1

    return attempt


def _variant_stage(ctx: Context, variant: Variant, name: str, inputs: dict,
                   work: Callable[[Path], dict | None]) -> StageOutcome:
    """One stage of one variant, in variants/<id>/<name>, stamped with the variant id."""
    return run_stage(ctx.variant_dir(variant, name), inputs, work,
                     provenance=ctx.provenance(variant=variant.id), force=ctx.force)


def prune_stage(ctx: Context, holder: ModelHolder, variant: Variant) -> StageOutcome:
    spec = ctx.study.models[variant.model]
    inputs = {
        "version": STAGE_VERSION["prune"],
        "code": stage_code("repro.prune", __name__),
        "variant": variant,
        "model": spec.source,
        "revision": spec.revision,
        "dtype": ctx.study.dtype,
    }
    if variant.method == "wanda":
        inputs["calibration"] = _upstream(ctx.tokens_dir(spec.key, "calibration"))

    def work(tmp: Path) -> dict:
        model = holder.dense_model(spec)
        seed_everything(ctx.study.seed)
        if variant.method == "magnitude":
            masks = prune.prune_magnitude(model, variant.sparsity)
        elif variant.method == "wanda":
            masks = prune.prune_wanda(
                model,
                load_tokens(ctx, spec.key, "calibration"),
                variant.sparsity,
                batch_size=ctx.batch_size,
            )
        else:
            masks = {}
        holder.current = variant
        report = prune.sparsity_report(model)
        prune.save_masks(masks, tmp / "masks.safetensors")
        write_json(tmp / "sparsity.json", report)
        return {"achieved_sparsity": report["overall"]}

    return _variant_stage(ctx, variant, "prune", inputs, work)


def perplexity_stage(ctx: Context, holder: ModelHolder, variant: Variant) -> StageOutcome:
    spec = ctx.study.models[variant.model]
    inputs = {
        "version": STAGE_VERSION["perplexity"],
        "code": stage_code("repro.perplexity", __name__),
        "prune": _upstream(ctx.variant_dir(variant, "prune")),
        "tokens": _upstream(ctx.tokens_dir(spec.key, "perplexity")),
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
        "code": stage_code("repro.activations", __name__),
        "layer": spec.probe_layer,
        "prune": _upstream(ctx.variant_dir(variant, "prune")),
        "tokens": _upstream(ctx.tokens_dir(spec.key, "eval")),
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


def with_references(study: Study, runs: tuple[Run, ...]) -> tuple[Run, ...]:
    """The selected runs plus the dense runs their evaluation compares with (same model and
    seed), which a shard may have to train itself when no other shard has yet."""
    refs = [r.dense_reference for r in runs if not r.variant.is_dense and r.is_evaluated]
    return tuple(dict.fromkeys([*runs, *(r for r in refs if r in study.runs)]))


def run_all(ctx: Context, runs: tuple[Run, ...]) -> dict[str, int | None]:
    """Run every stage for the selected runs, then the study-level stages when all runs are
    done. Returns the counts of stages done and skipped, and verify's exit code (None when
    the analysis still waits for runs)."""
    check_output_dir(ctx.out)
    with writer_lock(ctx.out, [r.id for r in runs], log=ctx.log):
        return _run_selected(ctx, runs)


def _run_selected(ctx: Context, runs: tuple[Run, ...]) -> dict[str, int | None]:
    write_text_if_changed(ctx.out / "study.toml", ctx.study.path.read_text(encoding="utf-8"))
    counts = {"done": 0, "skipped": 0}
    holder = ModelHolder(ctx)
    needed = with_references(ctx.study, runs)
    variants = tuple(dict.fromkeys(r.variant for r in needed))
    for key in dict.fromkeys(v.model for v in variants):
        spec = ctx.study.models[key]
        for stream in STREAMS:
            outcome = tokens_stage(ctx, spec, stream, lambda spec=spec: holder.tokenizer_for(spec))
            _report(ctx, counts, f"[{key}] tokens/{stream}", outcome)
    for i, variant in enumerate(variants, 1):
        for name, stage in VARIANT_STAGES:
            outcome = stage(ctx, holder, variant)
            _report(ctx, counts, f"[{i}/{len(variants)} {variant.id}] {name}", outcome)
    from repro.research_stages import RUN_STAGES  # it imports this module

    # Per model, dense runs first: a pruned run's evaluation reads the dense run's SAE. The
    # runs of one variant (its seeds, its control) follow each other, so that the later ones
    # replay the first one's probe activations. A reference run outside the selection only
    # gets the SAE that evaluation needs; a control run has no evaluation.
    models_order = list(dict.fromkeys(v.model for v in variants))
    ordered = sorted(
        needed, key=lambda r: (models_order.index(r.variant.model), not r.variant.is_dense,
                               variants.index(r.variant))
    )
    for i, run in enumerate(ordered, 1):
        for name, stage in RUN_STAGES:
            if name == "sae" or (run in runs and run.is_evaluated):
                outcome = stage(ctx, holder, run)
                _report(ctx, counts, f"[{i}/{len(ordered)} {run.id}] {name}", outcome)
    from repro.finish import finish

    verdict = finish(ctx, lambda name, outcome: _report(ctx, counts, f"[study] {name}", outcome))
    ctx.log(f"finished: {counts['done']} stages done, {counts['skipped']} already done")
    return {**counts, "verify": verdict}


def _report(ctx: Context, counts: dict[str, int], what: str, outcome: StageOutcome) -> None:
    counts[outcome.status] += 1
    if outcome.reason == "recovered":
        ctx.log(f"{what}: recovered (it had finished when the previous run was stopped)")
    if outcome.status == "done":
        why = f" ({outcome.reason})" if outcome.reason not in ("not run yet", "") else ""
        ctx.log(f"{what}: done in {outcome.seconds:.1f}s{why}")
