"""Per-run stages: train the run's SAE, then measure SAEs on the eval tokens (RQ1-RQ5 inputs).

Run by `repro all` (repro.stages.run.run_all) after the per-variant stages, dense runs of a
model first, since a pruned run's evaluation reads the dense run's SAE. Each stage writes
one folder of the artifact store, done when its manifest.json is valid.

runs/<run id>/sae/ (every run)
- cfg.json, sae_weights.safetensors: the sae-lens TopK SAE in inference form (decoder rows
  unit-norm); `repro.science.saes.load_sae(folder, device)` or `sae_lens.SAE.load_from_disk(folder)`
  reads it. W_dec is (width, d_model); cfg.json's metadata.hook_name is
  blocks.<probe_layer>.hook_resid_post.
- firing_rates.safetensors: firing_rate float64 [width] (fraction of non-special eval tokens
  with f_i > 0, on the model the SAE was trained on), fire_count int64 [width],
  n_tokens int64 [] (non-special eval tokens).
- The SAEs of one variant (its run's seed, RQ1's extra seeds, the control seed) that are not
  done train together, in one pass of the model over the sae_train tokens
  (repro.science.sae_batch), each in its own data order; the manifest's result names them
  (`trained_together`) and gives the group's training time (`group_train_seconds`; each
  manifest's wall_seconds holds an even share of it).
- training.json: n_tokens, epochs, steps, batch_tokens, width, k, lr, seed,
  norm_scaling_factor, dead_feature_window_steps, train_l0, dead_at_end, alive_on_eval.
- init_decoder.safetensors: W_dec float32 [width, d_model] at initialisation (how far each
  latent moved, the seed control's drift).
- curve.json: the training curve (repro.science.training_curves), recorded from the training steps
  themselves: {"run", "batch_tokens", "dead_feature_window_steps", "every_steps", "steps",
  "points": [{"step", "tokens", "explained_variance", "l0", "dead_fraction"}]}, tokens
  seen so far, EV and L0 over the training batches since the previous point, the fraction
  of latents silent for the dead-feature window at that step.

runs/<run id>/evaluate/
- transfer.json (every run): {"run", "variant", "role": "dense" | "pruned" | "extra_seed",
  "saes": {NAME: METRICS}}. NAME is "own" (the run's SAE on its model), and except for
  extra seeds "dense" (the dense run's SAE, same model and seed, on this run's model) and
  "pretrained" (the public or shipped SAE on this run's model). METRICS: explained_variance,
  mse (squared error summed over dimensions, mean over tokens), l0, dead_fraction (latents
  active on no eval token), n_tokens, ce_loss_score, ce_loss_with_sae, ce_loss_without_sae,
  ce_loss_with_ablation, source (where the SAE came from), and for "pretrained" stand_in
  (true where the model has no public SAE and the dense SAE's numbers stand in). For a dense
  run "own" and "dense" are the same SAE and hold the same numbers.
- fragility.safetensors (pruned runs; RQ4): pearson_r float64 [width] (Pearson r of the dense
  SAE's f_i on dense vs pruned activations of the same eval tokens; NaN where f_i is never
  active on one of the two), fires_dense int64 [width], fires_pruned int64 [width],
  n_tokens int64 [].
- causal.safetensors (dense runs of the base seed; RQ5): feature int64 [n], stratum int64
  [n] (0 = rarest of n_bins equal-count bins of the features active in the RQ5 sequences,
  ranked by their firing rate over all eval tokens), firing_rate float64 [n], delta_ce
  float64 [n] (mean rise in next-token CE over the predictions of the RQ5 sequences when
  f_i * W_dec_i is removed where f_i fires, at the probe layer of the dense model).
- causal.json: clean_ce, n_predictions, per_bin, n_bins, n_sequences (0 = all), seed,
  n_features. Strata come from the firing rates over all eval tokens; CE from the first
  n_sequences sequences.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from repro.errors import ReproError
from repro.files import sha256_file, write_json
from repro.inputs import data
from repro.science import evaluate, pretrained_saes, sae_batch, saes, training_curves
from repro.science.seeding import seed_everything
from repro.science.survival import active, alive
from repro.stages import layout
from repro.stages.codehash import stage_code
from repro.stages.context import (
    STAGE_VERSION,
    Context,
    ModelHolder,
    load_tokens,
    retry_smaller_on_oom,
    upstream,
)
from repro.stages.store import StageOutcome, run_stage, run_stages_together
from repro.study.locations import recorded_path
from repro.study.sources import ModelSpec
from repro.study.spec import Run


def run_dir(ctx: Context, run: Run, stage: str) -> Path:
    return layout.run_dir(ctx.out, run, stage)


def special_ids(tokenizer: Any) -> list[int]:
    """BOS/EOS/PAD ids: positions every SAE measurement skips (see data.special_token_mask)."""
    return [t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
            if t is not None]


def dense_reference(ctx: Context, run: Run) -> Run:
    """The dense run of the same model and seed, whose SAE a pruned run is compared with."""
    ref = run.dense_reference
    if ref not in ctx.study.runs:
        raise ReproError(f"run {run.id} has no dense reference run {ref.id} in the study; "
                         "add the model's dense run")
    return ref


def _needs(ctx: Context, run: Run, folder: Path) -> str:
    """Upstream hash, or a one-line error naming the run that has to be done first."""
    try:
        return upstream(folder)
    except ReproError:
        dense = dense_reference(ctx, run).id
        raise ReproError(f"run {run.id} needs {folder.relative_to(ctx.out)}; run `repro all` "
                         f"with the dense run {dense} selected too") from None


# ---- sae ---------------------------------------------------------------------------------

def sae_stages(ctx: Context, holder: ModelHolder, runs: list[Run]) -> list[StageOutcome]:
    """Train the SAEs of `runs` (the runs of one variant) that are not done, in one pass over
    the variant's sae_train activations (repro.science.sae_batch), and write each run's folder
    with its eval firing rates. A group where some runs are done trains the others only; an
    SAE's bits do not depend on which others train beside it."""
    variant = runs[0].variant
    if any(run.variant != variant for run in runs):
        raise ValueError("SAEs trained together must read the same variant's activations")
    spec = ctx.study.models[variant.model]
    inputs = [_sae_inputs(ctx, run) for run in runs]

    def prepare(todo: list[int]) -> tuple[list[Callable[[Path], dict | None]], float]:
        group = [runs[i] for i in todo]
        tokenizer = holder.tokenizer_for(spec)
        ids = load_tokens(ctx, spec.key, "sae_train")
        initial: dict[str, torch.Tensor] = {}

        def keep_init(run: Run) -> Callable[[Any], None]:  # the seed control's drift
            def keep(sae: Any) -> None:
                initial.setdefault(run.id, sae.W_dec.detach().float().cpu().clone())

            return keep

        curves = [training_curves.CurveRecorder() for _ in group]
        started = time.time()
        trained = sae_batch.train_saes(
            holder.variant_model(variant), ids, data.special_token_mask(ids, tokenizer),
            layer=spec.probe_layer, spec=ctx.study.sae, seeds=[run.seed for run in group],
            seq_batch=ctx.batch_size,
            metadata=[{"model_name": recorded_path(spec.source), "context_size": int(ids.shape[1]),
                       "repro_run": run.id} for run in group],
            on_init=[keep_init(run) for run in group], curves=curves)
        together = [run.id for run in group]
        works: list[Callable[[Path], dict | None]] = [
            functools.partial(_write_sae, ctx, holder, run, sae, record, curve, initial[run.id],
                              together)
            for run, (sae, record), curve in zip(group, trained, curves, strict=True)]
        return works, time.time() - started

    return run_stages_together([run_dir(ctx, run, "sae") for run in runs], inputs, prepare,
                               provenance=[ctx.provenance(run=run.id, seed=run.seed)
                                           for run in runs], force=ctx.force)


def _sae_inputs(ctx: Context, run: Run) -> dict[str, Any]:
    spec = ctx.study.models[run.variant.model]
    s = ctx.study.sae
    return {"version": STAGE_VERSION["sae"],
            "code": stage_code("repro.science.sae_batch", __name__),
            "seed": run.seed, "layer": spec.probe_layer,
            "sae": {"width": s.width, "k": s.k, "lr": s.lr, "batch_tokens": s.batch_tokens,
                    "epochs": s.epochs},
            "prune": upstream(ctx.variant_dir(run.variant, "prune")),
            "tokens": upstream(ctx.tokens_dir(spec.key, "sae_train")),
            "activations": upstream(ctx.variant_dir(run.variant, "activations"))}


def _write_sae(ctx: Context, holder: ModelHolder, run: Run, sae: Any, record: dict,
               curve: training_curves.CurveRecorder, initial: torch.Tensor,
               together: list[str], tmp: Path) -> dict[str, Any]:
    """One run's sae folder from its trained SAE: weights, initial decoder, curve, eval
    firing rates, training record; the manifest's result."""
    spec = ctx.study.models[run.variant.model]
    saes.save_sae(sae, tmp)
    save_file({"W_dec": initial.contiguous()}, str(tmp / "init_decoder.safetensors"))
    training_curves.save_curve(
        curve.curve(run=run.id, batch_tokens=ctx.study.sae.batch_tokens,
                    dead_feature_window_steps=record["dead_feature_window_steps"],
                    decay_from_step=saes.decay_start(ctx.study.sae, record["steps"])),
        tmp / training_curves.CURVE_FILE)
    rates = saes.firing_rates(saes.load_sae(tmp, ctx.device),
                              ctx.variant_dir(run.variant, "activations"),
                              special_ids(holder.tokenizer_for(spec)))
    saes.save_firing_rates(rates, tmp / "firing_rates.safetensors")
    record["alive_on_eval"] = int(alive(rates["fire_count"]).sum())
    saes.save_training_record(record, tmp / "training.json")
    return {"n_tokens": record["n_tokens"], "steps": record["steps"],
            "alive_on_eval": record["alive_on_eval"],
            "group_train_seconds": record["train_seconds"], "trained_together": together}


# ---- evaluate ----------------------------------------------------------------------------

class Role(StrEnum):
    """What a run's evaluate stage measures (transfer.json's "role")."""

    DENSE = "dense"
    """The dense model's SAE of the study's seed: transfer and causal importance (RQ3, RQ5)."""
    PRUNED = "pruned"
    """A pruned model's SAE: transfer and fragility (RQ3, RQ4)."""
    EXTRA_SEED = "extra_seed"
    """A further dense seed (RQ1): its own SAE's transfer only."""


def _role(run: Run) -> Role:
    if run.is_extra_seed:
        return Role.EXTRA_SEED
    return Role.DENSE if run.variant.is_dense else Role.PRUNED


def _pretrained_key(spec: ModelSpec) -> str | None:
    """What identifies the pre-trained SAE: its release/id, or the hash of its local files."""
    p = spec.pretrained_sae
    if p is None:
        return None
    if p.release:
        return f"{p.release}/{p.sae_id}"
    files = [Path(p.path) / n for n in ("cfg.json", "sae_weights.safetensors")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ReproError(f"pretrained SAE of {spec.key}: {missing[0]} is missing; run "
                         "`repro build-tiny-assets` or fix pretrained_sae.path")
    return ":".join(sha256_file(f) for f in files)


def _causal_settings(ctx: Context, seed: int) -> dict[str, int]:
    t = ctx.study.thresholds
    return {"per_bin": t.causal_features_per_bin, "n_bins": t.frequency_bins,
            "n_sequences": t.causal_sequences, "seed": seed}


def evaluate_stage(ctx: Context, holder: ModelHolder, run: Run) -> StageOutcome:
    """Measure the run's SAEs on its model's eval tokens (transfer, fragility, causal)."""
    spec = ctx.study.models[run.variant.model]
    role = _role(run)
    inputs: dict[str, Any] = {
        "version": STAGE_VERSION["evaluate"],
        "code": stage_code("repro.science.evaluate", __name__),
        "role": role, "layer": spec.probe_layer,
        "sae": upstream(run_dir(ctx, run, "sae")),
        "activations": upstream(ctx.variant_dir(run.variant, "activations"))}
    if role != Role.EXTRA_SEED:
        ref = dense_reference(ctx, run)
        inputs["dense_sae"] = _needs(ctx, run, run_dir(ctx, ref, "sae"))
        inputs["dense_activations"] = _needs(ctx, run, ctx.variant_dir(ref.variant, "activations"))
        if run.replicate == 0:
            inputs["pretrained"] = _pretrained_key(spec)
    if role == Role.DENSE:
        inputs["causal"] = _causal_settings(ctx, run.seed)

    def work(tmp: Path) -> dict:
        seed_everything(run.seed)
        transfer = _transfer(ctx, holder, run, role)
        write_json(tmp / "transfer.json", transfer)
        result = {f"{name}_ce_loss_score": m["ce_loss_score"]
                  for name, m in transfer["saes"].items()}
        if role == Role.PRUNED:
            result.update(_write_fragility(ctx, holder, run, tmp))
        if role == Role.DENSE:
            result.update(_write_causal(ctx, holder, run, tmp))
        return result

    return run_stage(run_dir(ctx, run, "evaluate"), inputs,
                     retry_smaller_on_oom(ctx, f"{run.id} evaluate", work),
                     provenance=ctx.provenance(run=run.id, seed=run.seed), force=ctx.force)


def _transfer(ctx: Context, holder: ModelHolder, run: Run, role: Role) -> dict[str, Any]:
    """RQ3 numbers of the run's SAEs on its model: reconstruction, then CE-loss scores.

    A further replicate (run.replicate > 0) measures only what its seeds change: the dense
    run's SAE on this model (and, where no pre-trained SAE exists, as its stand-in). A
    public pre-trained SAE and the pruned run's own SAE are measured in replicate 0 alone (no
    table reads the latter; the former is the same SAE on the same activations in every
    replicate), which saves two of the five forwards a pruned run costs.
    """
    spec = ctx.study.models[run.variant.model]
    special = special_ids(holder.tokenizer_for(spec))
    folder = ctx.variant_dir(run.variant, "activations")
    first = run.replicate == 0
    paths = {"own": run_dir(ctx, run, "sae")} if first or role != Role.PRUNED else {}
    if role == Role.PRUNED:
        paths["dense"] = run_dir(ctx, dense_reference(ctx, run), "sae")
    loaded = {name: saes.load_sae(path, ctx.device) for name, path in paths.items()}
    sources = {name: str(path.relative_to(ctx.out)) for name, path in paths.items()}
    p = spec.pretrained_sae
    if role != Role.EXTRA_SEED and p is not None and first:
        loaded["pretrained"] = pretrained_saes.load_pretrained(p, ctx.device, spec.probe_layer)
        sources["pretrained"] = recorded_path(p.path) if p.path else f"{p.release}/{p.sae_id}"
    ids, acts = evaluate.load_eval(folder)
    scores = evaluate.ce_loss_scores(
        holder.variant_model(run.variant), loaded, ids, acts,
        data.special_token_mask(ids, holder.tokenizer_for(spec)), layer=spec.probe_layer,
        batch_size=max(1, ctx.batch_size // 4))
    out = {name: {**evaluate.reconstruction_metrics(
        sae, (a for a, _ in saes.masked_chunks(folder, special))), **scores[name],
        "source": sources[name]} for name, sae in loaded.items()}
    if role == Role.DENSE:
        out["dense"] = out["own"]
    if role != Role.EXTRA_SEED:
        if p is None:  # the run's own dense SAE stands in
            out["pretrained"] = {**out["dense"], "stand_in": True}
        elif first:
            out["pretrained"] = {**out["pretrained"], "stand_in": False,
                                 "published": pretrained_saes.published_stats(p)}
    return {"run": run.id, "variant": run.variant.id, "role": role, "saes": out}


def _write_fragility(ctx: Context, holder: ModelHolder, run: Run, tmp: Path) -> dict[str, Any]:
    spec = ctx.study.models[run.variant.model]
    ref = dense_reference(ctx, run)
    special = special_ids(holder.tokenizer_for(spec))
    sae = saes.load_sae(run_dir(ctx, ref, "sae"), ctx.device)
    got = evaluate.fragility(
        sae, saes.masked_chunks(ctx.variant_dir(ref.variant, "activations"), special),
        saes.masked_chunks(ctx.variant_dir(run.variant, "activations"), special))
    save_file({k: v.contiguous() for k, v in got.items()}, str(tmp / "fragility.safetensors"))
    r = got["pearson_r"]
    defined = torch.isfinite(r)
    return {"fragility_defined": int(defined.sum()),
            "fragility_mean_r": float(r[defined].mean()) if defined.any() else None}


def _write_causal(ctx: Context, holder: ModelHolder, run: Run, tmp: Path) -> dict[str, Any]:
    """RQ5 on the first n_sequences eval sequences, features stratified by firing rate.

    Only features active somewhere in those sequences are drawn, so that a feature's zero
    is a measured absence of effect, never an artefact of looking at too few tokens.
    """
    spec = ctx.study.models[run.variant.model]
    settings = _causal_settings(ctx, run.seed)
    sae_dir = run_dir(ctx, run, "sae")
    sae = saes.load_sae(sae_dir, ctx.device)
    rates = saes.load_firing_rates(sae_dir / "firing_rates.safetensors")["firing_rate"].numpy()
    ids, acts = evaluate.load_eval(ctx.variant_dir(run.variant, "activations"))
    if settings["n_sequences"] > 0:
        ids, acts = ids[:settings["n_sequences"]], acts[:settings["n_sequences"]]
    keep = data.special_token_mask(ids, holder.tokenizer_for(spec))
    counts = sum(active(f).sum(0) for _, f in saes.encode(sae, acts[keep]))
    assert isinstance(counts, torch.Tensor)  # encode yields a slice even of no tokens
    fired = alive(counts.cpu().numpy())
    features, strata = evaluate.stratified_sample(np.where(fired, rates, 0.0),
                                                  settings["per_bin"], settings["n_bins"],
                                                  settings["seed"])
    model = holder.variant_model(run.variant)
    if next(model.parameters()).dtype != torch.float32:
        # bf16 ablations round the subtracted term away and reorder small effects: a float32
        # copy of the layers above the probe keeps the arithmetic exact enough to rank
        model = copy.deepcopy(model).float()
    got = evaluate.causal_importance(
        model, sae, ids, acts, keep, layer=spec.probe_layer,
        features=features, batch_size=max(1, ctx.batch_size // 4))
    save_file({"feature": torch.from_numpy(features).long(),
               "stratum": torch.from_numpy(strata).long(),
               "firing_rate": torch.from_numpy(rates[features]).double(),
               "delta_ce": torch.from_numpy(np.asarray(got["delta_ce"])).double(),
               "delta_ce_halves": torch.from_numpy(got["delta_ce_halves"]).double(),
               "delta_ce_per_firing": torch.from_numpy(got["delta_ce_per_firing"]).double(),
               "delta_ce_halves_per_firing":
                   torch.from_numpy(got["delta_ce_halves_per_firing"]).double(),
               "n_firing": torch.from_numpy(got["n_firing"]).long()},
              str(tmp / "causal.safetensors"))
    write_json(tmp / "causal.json", {"clean_ce": got["clean_ce"],
                                     "n_predictions": got["n_predictions"],
                                     "n_features": len(features), **settings})
    return {"causal_features": len(features), "clean_ce": got["clean_ce"]}


def evaluate_stages(ctx: Context, holder: ModelHolder,
                    runs: list[Run]) -> Iterator[StageOutcome]:
    """Evaluate `runs` one after another, each outcome as soon as it is done."""
    return (evaluate_stage(ctx, holder, run) for run in runs)


RUN_STAGES = (("sae", sae_stages), ("evaluate", evaluate_stages))
"""The stages of each group of runs that read one variant, in order: names and functions."""
