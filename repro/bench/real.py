"""`repro bench`'s part on a real pretrained model: the small profile's SmolLM2-135M.

Run after `repro fetch --profile small`; a plain `repro bench` skips it (and says so) where
the model is not fetched. Side by side on real weights and shapes: activation capture vs an
all-layers forward, Wanda vs the per-sequence reference, and what a float32 and a bfloat16
matmul cost on this device; SAE training three ways (`sae_ways`) belongs to the sae part.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from repro.bench import paths as bp
from repro.bench import prune_paths as pp

MODEL = "smollm2-135m"
NOT_FETCHED = "needs `repro fetch --profile small` first"


def _small_study():
    from repro.study.reader import load_study, profile_path

    return load_study(profile_path("small"))


NEEDS_MODEL = ("smollm2", "arithmetic")
"""The bench's parts that run SmolLM2-135M itself."""


def absent(only: tuple[str, ...], explicit: bool) -> dict[str, str]:
    """The parts, with the reason, that a default run asks for while the model is absent."""
    from repro.inputs.models import is_cached

    wanted = [part for part in NEEDS_MODEL if part in only]
    if explicit or not wanted or is_cached(_small_study().models[MODEL]):
        return {}
    return dict.fromkeys(wanted, NOT_FETCHED)


def smollm2(quick: bool, repeats: int, device: torch.device) -> dict[str, Any]:
    """The measurements on real weights (its SAE training: `sae_ways`, in the sae part)."""
    from repro.inputs.families import prunable_matrices, weight_of

    model, tokenizer, spec = _model(device)
    vocab, bos, layer = model.config.vocab_size, tokenizer.bos_token_id, spec.probe_layer
    n = 2 if quick else 8
    cap = bp.capture(model, bp.random_ids(n, 128, vocab, bos), layer, repeats)
    calib = bp.random_ids(n, 128, vocab, bos, seed=1)
    wanda = pp.wanda(model, calib, 0.5, batch_size=8, repeats=repeats)
    # MKL's portable GEMM rounds by shape: batched calibration moves norms in the last bits and
    # flips near-ties at the cut of these 4-bit weights; at the reference's batch of one
    # sequence the masks must be identical
    exact = pp.wanda(model, calib, 0.5, batch_size=1, repeats=1)
    wanda["masks_equal_at_batch_1"] = exact["masks_equal"]
    wanda["mask_entries"] = sum(weight_of(m).numel() for m in prunable_matrices(model).values())
    return {"model": spec.key, "probe_layer": layer, "n_layers": spec.n_layers,
            "capture": {**cap, "ratio_vs_lm": bp.ratio_spread(cap["times"]["all_layers_lm"],
                                                               cap["times"]["probe"]),
                        "probe_tokens_per_s": bp.per_second(cap["tokens"],
                                                            cap["times"]["probe"])},
            "wanda": {**wanda, "ratio": bp.ratio_spread(wanda["times"]["reference"],
                                                         wanda["times"]["project"])},
            "matmul": bp.matmul_dtypes(1024, model.config.hidden_size,
                                       model.config.intermediate_size, repeats, device)}


def _model(device: torch.device) -> tuple[Any, Any, Any]:
    from repro.inputs.models import load_model, load_tokenizer

    spec = _small_study().models[MODEL]
    model = load_model(spec, dtype="float32", device=device)  # one line if not fetched
    return model, load_tokenizer(spec), spec


def sae_ways(quick: bool, repeats: int, device: torch.device) -> dict[str, Any]:
    """SAEs per hour three ways (repro.bench.saelens.sae_ways) at the small profile's SAE
    (d_model 576, its width, k and batch; width 256 with --quick), one epoch over
    64 x 128 random tokens (16 x 128 with --quick)."""
    from repro.bench.saelens import sae_ways as ways

    model, tokenizer, spec = _model(device)
    sae = _small_study().sae
    sae = dataclasses.replace(sae, width=256 if quick else sae.width, epochs=1)
    bos = tokenizer.bos_token_id
    ids = bp.random_ids(16 if quick else 64, 128, model.config.vocab_size, bos, seed=2)
    return ways(model, tokenizer, ids, ids != bos, layer=spec.probe_layer, spec=sae,
                seq_batch=8, repeats=repeats)


def ratios(x: dict[str, Any], goals: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The part's rows of the bench's side-by-side table."""
    w, m = x["wanda"], x["matmul"]
    at_1 = "none" if w["masks_equal_at_batch_1"] else "SOME"
    return {
        "capture_smollm2": {**x["capture"]["ratio_vs_lm"], "goal": goals["capture"],
                            "check": x["capture"]["same_activations"],
                            "what": f"probe hook vs all-layers LM forward, SmolLM2-135M (real "
                                    f"weights), probe {x['probe_layer']} of {x['n_layers']}"},
        "wanda_smollm2": {**w["ratio"], "goal": None, "check": w["masks_equal_at_batch_1"],
                          "what": f"prune_wanda (batches of 8) vs per-sequence reference, "
                                  f"SmolLM2-135M: {w['mask_entries_differing']} of "
                                  f"{w['mask_entries']:,} mask entries differ at batch 8 "
                                  f"(GEMM rounding), {at_1} at batch 1"},
        "matmul_bf16_vs_fp32": {**m["ratio"], "goal": None, "check": True,
                                "what": f"bfloat16 vs float32 matmul time, {m['shape']} "
                                        "(above 1: float32 is faster)"},
    }
