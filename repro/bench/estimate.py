"""The full-study budget: `repro bench --estimate --profile paper`.

Per-stage wall time = work units of the study (tokens, layers, runs, pairs; read from the
study file) x measured seconds per unit (from `repro bench` on this device). The work model
follows what each stage runs (repro/stages/pipeline.py, repro/stages/run_stages.py):
  prune        per method (repro/study/methods.py): magnitude sorts every matrix (s/layer);
               a calibrated method runs two passes of every layer over the calibration
               tokens, then Wanda sorts rows (s/layer), SparseGPT sums every matrix's
               Hessian (s per layer-token) and solves (s/layer: Cholesky factors and the
               column-by-column update, which does not depend on the tokens); RTN
               quantization makes a few elementwise passes over every matrix, priced at
               magnitude's sort of the same weights (an upper bound: it sorts nothing);
  perplexity   full forward with the LM head over the perplexity tokens, per variant;
  activations  forward up to the probe layer over the eval tokens, per variant;
  sae          per variant one forward up to the probe layer over the SAE tokens, read once
               by every SAE of the variant trained together (repro.science.sae_batch: its
               runs, control SAE and further replicates); one TopK SAE step per token per SAE;
  evaluate     CE-loss scores: clean, zero-ablated and one pass per SAE (own, dense for pruned
               runs, pre-trained) through the layers above the probe and the head; a further
               replicate passes clean, zero-ablated and its dense SAE only; RQ5 (dense runs,
               every replicate): one more such pass per sampled feature over the groups where
               it fires, bounded here by all groups (an upper bound);
  analyze      one Hungarian matching per condition, RQ1 seed pair and control SAE, per
               replicate (CPU, scipy), as many at once as `match.match_workers` runs on
               the machine (here: this one; the GPU column: the lent GPU host's cores and
               memory, GPU_HOST_CORES and GPU_HOST_MEMORY).
Seconds per layer-token are measured at short sequences; attention's share grows with the
sequence (2048 for calibration and perplexity), which this model leaves out.

The H100/H200-class figure is computed, not measured: FLOPs per unit / (peak x utilisation),
with the constants below; matching stays on the CPU and keeps its measured time. SparseGPT
(repro/science/sparsegpt.py) sums its Hessians in float32 and solves in float64: both are
counted at 67 TFLOP/s (an H100's FP32 and FP64 tensor-core peaks), plus a kernel launch
overhead per column of its update loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from repro.bench.paper_configs import PAPER_ARCHS, layer_params, layer_shapes
from repro.science import match
from repro.study.methods import METHODS, PRUNING_METHODS
from repro.study.spec import Study

H100_BF16_FLOPS = 989e12
"""Dense bf16 tensor-core peak of an H100 SXM (H200: same compute, more and faster memory)."""
H100_FP32_FLOPS = 67e12
"""FP32 (non-tensor-core) peak: sae-lens trains its SAEs in float32 without TF32."""
MFU_MODEL = 0.35
"""Assumed utilisation of model forwards (bf16, batches of 16 x 1024 tokens)."""
MFU_SAE = 0.6
"""Assumed utilisation of SAE steps in float32 (one dense product, the rest over k latents)."""
SAE_DENSE_FLOPS_PER_WEIGHT = 2
"""Per token and encoder weight: the encoder's forward, the one dense product of a step."""
SAE_SPARSE_FLOPS_PER_WEIGHT = 8
"""Per token and weight of the k active latents: decoder forward (2), the decoder's gradient
and the latents' (2 + 2), the active encoder rows' gradient (2) (repro.science.sae_batch
computes these over the k active latents only)."""
GPU_HOST_CORES = 16
"""CPU cores of the machine that holds the GPU (the H100 and H200 machines lent to this
project: 16 cores, 128 GiB): the matchings run there, in parallel processes."""
GPU_HOST_MEMORY = 128 * 2**30
H100_FP64_FLOPS = 67e12
"""FP64 tensor-core peak of an H100 SXM (its FP32 peak too): SparseGPT's Hessians, factors
and updates."""
MFU_FP64 = 0.35
"""Assumed utilisation of SparseGPT's float64 matmuls and factorisations."""
LAUNCH_S = 10e-6
"""Seconds per GPU kernel launch; SparseGPT's update runs about 8 kernels per column."""


@dataclass(frozen=True)
class Rates:
    """Measured seconds per unit of work of one model on the current device."""

    layer_s_per_token: float
    head_s_per_token: float
    wanda_mask_s_per_layer: float
    magnitude_s_per_layer: float
    sae_s_per_token: float
    sparsegpt_s_per_layer: float = 0.0
    """SparseGPT's solve of every matrix of a layer (factors and update), tokens aside."""
    hessian_s_per_token: float = 0.0
    """SparseGPT's Hessian sums of every matrix of a layer, per calibration token."""


def prune_seconds_per_layer(method: str, w: dict[str, Any], r: Rates) -> float:
    """One variant's pruning time per layer: the method's own work, and for a calibrated
    method the dense and the pruned pass of the layer over the calibration tokens."""
    own = {"magnitude": r.magnitude_s_per_layer, "wanda": r.wanda_mask_s_per_layer,
           "sparsegpt": r.sparsegpt_s_per_layer
           + w["calibration_tokens"] * r.hessian_s_per_token,
           "rtn": r.magnitude_s_per_layer}[method]
    passes = 2 * w["calibration_tokens"] * r.layer_s_per_token
    return own + (passes if METHODS[method].needs_calibration else 0.0)


def study_work(study: Study) -> dict[str, dict[str, Any]]:
    """Work units per model of the study: variants by method, runs by role, token counts."""
    d = study.data
    out: dict[str, dict[str, Any]] = {}
    base = study.replicate_runs(0)
    for key, spec in study.models.items():
        variants = [v for v in study.variants if v.model == key]
        controls = sum(1 for r in base if r.variant.model == key and r.is_control)
        runs = [r for r in base if r.variant.model == key and not r.is_control]
        seeds_dense = sum(1 for r in runs if r.variant.is_dense)
        n_pretrained = 1 if spec.pretrained_sae is not None else 0
        sae_passes = 0
        for r in runs:
            if r.is_extra_seed:
                sae_passes += 1
            elif r.variant.is_dense:
                sae_passes += 1 + n_pretrained
            else:
                sae_passes += 2 + n_pretrained
        extra = sum(1 for r in runs if r.is_extra_seed)
        out[key] = {
            "n_layers": spec.n_layers, "probe_layer": spec.probe_layer,
            "variants": len(variants),
            **{m: sum(v.method == m for v in variants) for m in PRUNING_METHODS},
            "runs": len(runs), "ce_passes": 2 * (len(runs) - extra) + 2 * extra + sae_passes,
            # each further replicate: every SAE again on replayed activations; its evaluation
            # passes clean, zero-ablated and the dense SAE (repro.stages.run_stages._transfer)
            "replicates": study.verdict.replicates, "ce_passes_replicate": 3 * len(runs),
            "dense_runs": seeds_dense - extra,
            # a control SAE replays its variant's recorded activations: training only
            "control_saes": controls,
            "match_pairs": len(variants) - 1 + seeds_dense * (seeds_dense - 1) // 2 + controls,
            "calibration_tokens": d.calibration.n_tokens, "sae_tokens": d.sae_train.n_tokens,
            "eval_tokens": d.eval.n_tokens, "ppl_tokens": d.perplexity.n_tokens,
            # RQ5 ablates on the first causal_sequences evaluation sequences (0: all)
            "causal_tokens": d.eval.seq_len * min(
                study.thresholds.causal_sequences or d.eval.n_sequences, d.eval.n_sequences),
            "causal_features": study.thresholds.causal_features_per_bin
            * study.thresholds.frequency_bins,
        }
    return out


def stage_seconds(w: dict[str, Any], r: Rates, match_s: float,
                  match_workers: int = 1) -> dict[str, float]:
    """Seconds per stage for one model's share of the study (module docstring)."""
    L, p = w["n_layers"], w["probe_layer"]
    full = L * r.layer_s_per_token + r.head_s_per_token
    upper = (L - p - 1) * r.layer_s_per_token + r.head_s_per_token
    to_probe = (p + 1) * r.layer_s_per_token
    more = w.get("replicates", 1) - 1
    causal = w["dense_runs"] * (1 + w["causal_features"])
    return {
        "prune": sum(w.get(m, 0) * L * prune_seconds_per_layer(m, w, r)
                     for m in PRUNING_METHODS),
        "perplexity": w["variants"] * w["ppl_tokens"] * full,
        "activations": w["variants"] * w["eval_tokens"] * to_probe,
        "sae": w["variants"] * w["sae_tokens"] * to_probe
        + (1 + more) * (w["runs"] + w.get("control_saes", 0)) * w["sae_tokens"]
        * r.sae_s_per_token,
        "evaluate": upper * (w["eval_tokens"] * (w["ce_passes"]
                                                 + more * w.get("ce_passes_replicate", 0))
                             + w.get("causal_tokens", w["eval_tokens"]) * causal * (1 + more)),
        "analyze": (1 + more) * w["match_pairs"] * match_s / match_workers,
    }


def gpu_rates(key: str, width: int, k: int, bf16_flops: float = H100_BF16_FLOPS,
              fp32_flops: float = H100_FP32_FLOPS, autocast: bool = False) -> Rates:
    """Rates of an H100/H200-class GPU from FLOP counts (2 FLOPs per weight and token); with
    `autocast` an SAE step's dense encoder product runs at the bfloat16 peak."""
    v = PAPER_ARCHS[key].values
    model = bf16_flops * MFU_MODEL
    layer = 2 * layer_params(key) / model
    head = 2 * v["vocab_size"] * v["hidden_size"] / model
    dense_flops = bf16_flops if autocast else fp32_flops
    sae = (SAE_DENSE_FLOPS_PER_WEIGHT * width / dense_flops
           + SAE_SPARSE_FLOPS_PER_WEIGHT * k / fp32_flops) * v["hidden_size"] / MFU_SAE
    fp64 = H100_FP64_FLOPS * MFU_FP64
    shapes = layer_shapes(key)
    # per matrix: H += x^T x (2 in^2 per token); three in^3 factorisations (Cholesky, its
    # inverse, Cholesky again: about 2 in^3 in all) and the OBS updates (2 out in^2)
    hessian = sum(2 * n_in**2 for _, n_in in shapes) / fp64
    solve = sum((2 * n_in**3 + 2 * n_out * n_in**2) / fp64 + 8 * n_in * LAUNCH_S
                for n_out, n_in in shapes)
    # sorting a layer's scores on the GPU: memory-bound, ~1 ms per layer at these sizes
    return Rates(layer, head, 1e-3, 1e-3, sae, solve, hessian)


def estimate(study: Study, rates: dict[str, Rates], match_s: float) -> dict[str, Any]:
    """Per stage and in total: seconds on the measured device, and on an H100/H200 class GPU."""
    work = study_work(study)
    pairs, width = sum(w["match_pairs"] for w in work.values()), study.sae.width
    workers = match.match_workers(pairs, width, width)
    host_workers = match.match_workers(pairs, width, width, cores=GPU_HOST_CORES,
                                       memory=GPU_HOST_MEMORY, mode=study.numerics)
    measured = {k: stage_seconds(w, rates[k], match_s, workers) for k, w in work.items()}
    gpu = {k: stage_seconds(w, gpu_rates(k, study.sae.width, study.sae.k,
                                         autocast=study.sae.autocast), match_s, host_workers)
           for k, w in work.items()}

    def by_stage(per_model: dict[str, dict[str, float]]) -> dict[str, float]:
        stages = next(iter(per_model.values())).keys()
        return {s: sum(m[s] for m in per_model.values()) for s in stages}

    here, h100 = by_stage(measured), by_stage(gpu)
    return {"work": work, "per_model": measured, "stages": here,
            "total_s": sum(here.values()), "h100_class_stages": h100,
            "h100_class_total_s": sum(h100.values()),
            "assumptions": {"bf16_peak_flops": H100_BF16_FLOPS,
                            "fp32_peak_flops": H100_FP32_FLOPS, "mfu_model": MFU_MODEL,
                            "mfu_sae": MFU_SAE, "sae_autocast": study.sae.autocast,
                            "fp64_peak_flops": H100_FP64_FLOPS,
                            "mfu_fp64": MFU_FP64,
                            "matching": f"scipy on the CPU, measured time per pair, "
                                        f"{workers} at once here, {host_workers} on the GPU "
                                        f"host ({GPU_HOST_CORES} cores, "
                                        f"{GPU_HOST_MEMORY // 2**30} GiB)",
                            "match_workers": workers, "match_workers_gpu_host": host_workers,
                            "causal": "every group rerun for every sampled feature (bound)"}}


def footprint(study: Study) -> dict[str, float]:
    """GPU memory and disk of the study, from repro.inputs.footprint's derivations."""
    from repro.inputs import footprint as fp
    facts = {k: fp.KNOWN_MODELS.get(s.source, fp.ASSUMED) for k, s in study.models.items()}
    disk = fp.out_bytes(study, facts)
    return {"gpu_gib": fp.gpu_need_gib(study) or fp.GPU_NEED_GIB.get(study.name, 0.0),
            "disk_gb": sum(disk.values()) / 1e9,
            "download_gb": sum(f.download_bytes for f in facts.values()) / 1e9}


def hms(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def lines(est: dict[str, Any], fp: dict[str, float], device: str) -> list[str]:
    """The estimate as a Markdown table with its derivation."""
    out = [f"| stage | measured rates, {device} | H100/H200 class (computed) |",
           "|---|---:|---:|"]
    for stage, s in est["stages"].items():
        out.append(f"| {stage} | {hms(s)} | {hms(est['h100_class_stages'][stage])} |")
    out.append(f"| **total** | **{hms(est['total_s'])}** | "
               f"**{hms(est['h100_class_total_s'])}** |")
    a = est["assumptions"]
    out += ["", f"GPU memory (peak, repro.inputs.footprint): {fp['gpu_gib']:.0f} GiB; "
            "disk under --out: "
            f"{fp['disk_gb']:.1f} GB; downloads: {fp['download_gb']:.1f} GB.",
            f"H100/H200 column: FLOPs / (peak x utilisation): bf16 {a['bf16_peak_flops']:.3g} "
            f"FLOP/s x {a['mfu_model']} for model passes, fp32 {a['fp32_peak_flops']:.3g} "
            f"FLOP/s x {a['mfu_sae']} for SAE steps, fp64 {a['fp64_peak_flops']:.3g} FLOP/s x "
            f"{a['mfu_fp64']} for SparseGPT; matching: {a['matching']}; "
            f"RQ5: {a['causal']}."]
    return out
