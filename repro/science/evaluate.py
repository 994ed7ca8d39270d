"""Per-run measurements of SAEs on the eval token stream: the inputs of RQ3, RQ4 and RQ5.

- RQ3 transferability (`reconstruction_metrics`, `ce_loss_scores`): an SAE applied to a
  (pruned) model's probe activations: explained variance, MSE, L0, dead fraction, and the
  CE-loss score with the zero-ablation baseline,
  (CE_zero_ablation - CE_with_SAE) / (CE_zero_ablation - CE_clean).
- RQ4 fragility (`fragility`): per feature of the dense SAE, Pearson r between its
  activations on the dense and on the pruned model, same tokens.
- RQ5 causal importance (`causal_importance`): the rise in CE loss on the dense model when
  f_i * W_dec_i is subtracted from the probe-layer output where f_i fires.

Every measurement skips special-token positions (BOS/EOS/PAD), as the SAEs never train on
them, and works slice by slice so that 16384 latents x 262k tokens fit on one GPU. Stages
calling these live in repro/stages/run_stages.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repro.errors import ReproError
from repro.inputs.models import layers_swapped
from repro.science.activations import read_chunks
from repro.science.saes import SLICE_TOKENS, check_layer, encode
from repro.science.stats import ColumnPearson
from repro.science.survival import active
from repro.science.survival import alive as is_alive

# ---- RQ3: reconstruction on stored activations -------------------------------------------

@torch.no_grad()
def reconstruction_metrics(sae: Any, chunks: Iterator[torch.Tensor]) -> dict[str, float]:
    """Explained variance, MSE, L0 and dead fraction of `sae` over (m, d) activation chunks.

    Explained variance is sae-lens's `ExplainedVarianceCalculator` (1 - E||x - x_hat||^2 /
    total variance); MSE follows sae-lens evals (squared error summed over dimensions,
    averaged over tokens); L0 is the mean number of active latents per token; a latent is
    dead when it is active on none of the tokens.
    """
    from sae_lens.evals import ExplainedVarianceCalculator

    ev = ExplainedVarianceCalculator()
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=sae.device)
    # Sums stay on the device until the end: no host round trip per batch.
    sq_err = torch.zeros((), dtype=torch.float64, device=sae.device)
    active = torch.zeros((), dtype=torch.int64, device=sae.device)
    n = 0
    for acts in chunks:
        for x, f in encode(sae, acts):
            x_hat = sae.decode(f)
            ev.add_batch(sae_output=x_hat, hidden_acts=x)
            sq_err += (x - x_hat).double().pow(2).sum()
            active += (f != 0).sum()
            fired |= (f != 0).any(0)
            n += len(x)
    if n == 0:
        raise ReproError("no non-special eval tokens to measure the SAE on; check data.eval")
    return {"explained_variance": ev.compute(), "mse": float(sq_err) / n,
            "l0": int(active) / n,
            "dead_fraction": float((~fired).double().mean()), "n_tokens": n}


# ---- resuming the forward at the probe layer ------------------------------------------------

def load_eval(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All stored eval activations (n, T, d) and their tokens (n, T), on the CPU."""
    chunks = list(read_chunks(folder))
    if not chunks:
        raise ReproError(f"no activation chunks in {folder}; rerun `repro all` to capture them")
    return torch.cat([t for _, t in chunks]), torch.cat([a for a, _ in chunks])


class _PassThrough(nn.Module):
    def forward(self, hidden_states: torch.Tensor, *_args: Any, **_kwargs: Any) -> torch.Tensor:
        return hidden_states


class _Inject(nn.Module):
    """Stands in for the probe layer: its output is whatever `value` holds."""

    value: torch.Tensor | None = None

    def forward(self, *_args: Any, **_kwargs: Any) -> torch.Tensor | None:
        return self.value


@contextmanager
def _injected(model: nn.Module, layer: int) -> Iterator[_Inject]:
    """Layers 0..layer replaced so that the forward starts from given probe activations.

    The layers above, the final norm, soft-capping and the LM head stay the model's own, so
    no family difference is re-implemented; the stored activations spare layers 0..layer.
    """
    inject = _Inject()
    with layers_swapped(model, {**{i: _PassThrough() for i in range(layer)}, layer: inject}):
        yield inject


def _sequence_losses(model: nn.Module, inject: _Inject, ids: torch.Tensor,
                     hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per sequence, the summed next-token CE (float64, on the device) over predictions made
    from non-special positions."""
    inject.value = hidden
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                           reduction="none").view(ids.shape[0], -1)
    return (loss.double() * keep[:, :-1]).sum(1)


def _loss_sum(model: nn.Module, inject: _Inject, ids: torch.Tensor, hidden: torch.Tensor,
              keep: torch.Tensor) -> torch.Tensor:
    """Summed next-token CE over a batch (float64, on the device), see `_sequence_losses`."""
    return _sequence_losses(model, inject, ids, hidden, keep).sum()


# ---- RQ3: CE-loss score with the SAE spliced in --------------------------------------------

def _splice(sae: Any, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The SAE's reconstruction at non-special positions, the activations elsewhere."""
    x = hidden.reshape(-1, hidden.shape[-1])
    x_hat = torch.cat([sae.decode(f) for _, f in encode(sae, x)]).view_as(hidden)
    return torch.where(keep[..., None], x_hat.to(hidden.dtype), hidden)


@torch.no_grad()
def ce_loss_scores(model: nn.Module, saes: dict[str, Any], input_ids: torch.Tensor,
                   acts: torch.Tensor, keep: torch.Tensor, *, layer: int,
                   batch_size: int) -> dict[str, dict[str, float]]:
    """sae-lens's CE-loss score of each SAE spliced in at the output of decoder layer `layer`.

    Same definition as `sae_lens.evals.get_recons_loss` and
    `get_downstream_reconstruction_metrics` (the test suite checks it against them): the
    reconstruction replaces the probe activations at non-special positions, the
    zero-ablation baseline zeroes them at every position, CE is averaged over next-token
    predictions made from non-special positions, and the score is
    (CE_ablation - CE_sae) / (CE_ablation - CE_clean). sae-lens's own functions need a
    HookedTransformer-like model and run the whole model three times per SAE; here the
    forward starts from the stored probe activations `acts` (n, T, d) (see `_injected`) and
    the clean and zero-ablated passes are shared by all SAEs of the run.
    """
    for sae in saes.values():
        check_layer(sae, layer, "CE-loss score")
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor | float] = dict.fromkeys(["clean", "zero", *saes], 0.0)
    with _injected(model, layer) as inject:
        for start in range(0, len(input_ids), batch_size):
            g = slice(start, start + batch_size)
            ids, h, k = input_ids[g].to(device), acts[g].to(device), keep[g].to(device)
            sums["clean"] += _loss_sum(model, inject, ids, h, k)
            sums["zero"] += _loss_sum(model, inject, ids, torch.zeros_like(h), k)
            for name, sae in saes.items():
                sums[name] += _loss_sum(model, inject, ids, _splice(sae, h, k), k)
    n = int(keep[:, :-1].sum())
    totals = {name: float(total) for name, total in sums.items()}  # one host transfer each
    clean, zero = totals["clean"] / n, totals["zero"] / n
    return {name: {"ce_loss_score": (zero - totals[name] / n) / (zero - clean),
                   "ce_loss_with_sae": totals[name] / n, "ce_loss_without_sae": clean,
                   "ce_loss_with_ablation": zero} for name in saes}


# ---- RQ4: fragility ---------------------------------------------------------------------

@torch.no_grad()
def fragility(sae: Any, dense: Iterator[tuple[torch.Tensor, torch.Tensor]],
              pruned: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per feature, Pearson r of f_i on dense vs pruned activations of the same tokens.

    r is stats.ColumnPearson's: centred float64 sums merged chunk by chunk, over all features
    at once. It is NaN where the feature is constant (never active) on either model;
    `fires_dense` and `fires_pruned` count its active tokens so the analysis can tell "never
    fired" from "died when pruned".
    """
    d = sae.cfg.d_sae
    pearson = ColumnPearson()
    fires = {k: torch.zeros(d, dtype=torch.int64, device=sae.device) for k in ("x", "y")}
    for (acts_d, tok_d), (acts_p, tok_p) in zip(dense, pruned, strict=True):
        if not torch.equal(tok_d, tok_p):
            raise ReproError("dense and pruned eval activations hold different tokens; "
                             "rerun `repro all --force` for the eval activations")
        for (_, fd), (_, fp) in zip(encode(sae, acts_d), encode(sae, acts_p), strict=True):
            pearson.update(fd, fp)
            fires["x"] += active(fd).sum(0)
            fires["y"] += active(fp).sum(0)
    nan = torch.full((d,), float("nan"), dtype=torch.float64)
    return {"pearson_r": torch.from_numpy(pearson.result()) if pearson.n else nan,
            "fires_dense": fires["x"].cpu(), "fires_pruned": fires["y"].cpu(),
            "n_tokens": torch.tensor(pearson.n, dtype=torch.int64)}


# ---- RQ5: causal importance --------------------------------------------------------------

def stratified_sample(rates: np.ndarray, per_bin: int, n_bins: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features alive on the eval tokens, in n_bins equal-count firing-rate bins, per_bin each.

    Bins are formed as in RQ2 (alive features ranked by firing rate, ties by index, split
    into equal counts); up to per_bin features are drawn from each without replacement.
    Returns (feature indices, bin of each), sorted by feature index.
    """
    alive = np.flatnonzero(is_alive(rates))
    if len(alive) < n_bins:
        raise ReproError(f"only {len(alive)} SAE features fire on the eval tokens, fewer than "
                         f"{n_bins} strata; use more eval tokens or check the SAE")
    order = alive[np.argsort(rates[alive], kind="stable")]
    rng = np.random.default_rng(seed)
    feats, strata = [], []
    for b, members in enumerate(np.array_split(order, n_bins)):
        pick = rng.choice(members, size=min(per_bin, len(members)), replace=False)
        feats.append(pick)
        strata.append(np.full(len(pick), b))
    feats_a, strata_a = np.concatenate(feats), np.concatenate(strata)
    idx = np.argsort(feats_a)
    return feats_a[idx], strata_a[idx]


def decoder_directions(sae: Any) -> torch.Tensor:
    """Rows that f_i multiplies in the SAE's decode (divided by their norm when it rescales)."""
    w = sae.W_dec.detach().float()
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        w = w / w.norm(dim=-1, keepdim=True)
    return w


@torch.no_grad()
def causal_importance(model: nn.Module, sae: Any, input_ids: torch.Tensor, acts: torch.Tensor,
                      keep: torch.Tensor, *, layer: int, features: np.ndarray,
                      batch_size: int) -> dict[str, Any]:
    """Mean rise in next-token CE when each feature's reconstruction term is removed.

    `acts` are the dense model's stored probe activations of `input_ids` (n, T, d). For
    feature i the probe output h becomes h - f_i(h) W_dec_i at non-special positions, and
    the forward resumes from there. Sequences are taken in fixed groups of `batch_size` and
    only groups where the feature fires are rerun: the clean and ablated passes then have
    identical shapes, so untouched sequences contribute exactly 0 to the difference.
    `delta_ce_halves` (features x 2) is the same rise over the even and the odd sequences
    alone: how well the two halves agree says whether the sample measures anything (C4).
    `delta_ce` averages the rise over every prediction, so a feature that fires often scores
    high because it fires often; `delta_ce_per_firing` divides the same summed rise by the
    tokens on which the feature fires: its effect where it acts.

    The ablated residual enters the layers above in the model's dtype: pass a float32 model
    (repro.stages.run_stages does, whatever the study's dtype) for float32 arithmetic throughout.
    """
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    groups = [slice(s, s + batch_size) for s in range(0, len(input_ids), batch_size)]
    index = torch.as_tensor(features, dtype=torch.long, device=sae.device)
    directions = decoder_directions(sae)[index].to(device)
    half = torch.arange(len(input_ids)) % 2  # even and odd sequences: two independent halves
    with _injected(model, layer) as inject:
        clean, fired = [], []
        for g in groups:
            ids, h, k = input_ids[g].to(device), acts[g].to(device), keep[g].to(device)
            clean.append(_sequence_losses(model, inject, ids, h.to(dtype), k).cpu())
            f = torch.cat([sae.encode(x)[:, index] for x in
                           h.reshape(-1, h.shape[-1]).float().split(SLICE_TOKENS)])
            fired.append((f.view(*h.shape[:2], -1) * k[..., None]).cpu())
        halves = np.zeros((len(features), 2))
        n_fire = np.zeros((len(features), 2), dtype=np.int64)
        for j in range(len(features)):
            for gi, g in enumerate(groups):
                f_j = fired[gi][..., j]
                n_fire[j] += np.bincount(half[g].numpy(), weights=active(f_j).sum(1).numpy(),
                                         minlength=2).astype(np.int64)
                if not bool(active(f_j).any()):
                    continue
                h = acts[g].to(device)
                ablated = h.float() - f_j.to(device)[..., None] * directions[j]
                rise = _sequence_losses(model, inject, input_ids[g].to(device),
                                        ablated.to(dtype), keep[g].to(device)).cpu() - clean[gi]
                halves[j] += np.bincount(half[g].numpy(), weights=rise.numpy(), minlength=2)
    n_pred = int(keep[:, :-1].sum())
    n_half = np.bincount(half.numpy(), weights=keep[:, :-1].sum(1).double().numpy(), minlength=2)
    delta = halves.sum(1)
    return {"delta_ce": delta / n_pred, "delta_ce_halves": halves / np.maximum(n_half, 1),
            "delta_ce_per_firing": delta / np.maximum(n_fire.sum(1), 1),
            "delta_ce_halves_per_firing": halves / np.maximum(n_fire, 1),
            "n_firing": n_fire.sum(1),
            "clean_ce": float(torch.cat(clean).sum()) / n_pred, "n_predictions": n_pred}
