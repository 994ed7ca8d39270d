"""Many TopK SAEs of one shape trained in one pass: every activation batch is read once for
all of them, their parameters are stacked along a leading dimension S, and one step updates
them all with batched tensor ops.

Each SAE is trained as `saes.fit_sae` trains it alone with sae-lens (`TopKTrainingSAE` in
`SAETrainer`, configured by `saes.trainer_config`), only with other rounding:
- initialisation: each SAE is built by sae-lens under its own seed (`saes.new_sae`: decoder
  rows of norm 0.1, W_enc = W_dec^T, b_enc = 0, b_dec at the scaled activation mean), then
  its tensors are stacked; its own data order comes from its own seeded stream;
- the step: inputs times the SAE's scaling factor; hidden_pre = ((x - b_dec) W_enc + b_enc)
  scaled by the decoder row norms (`rescale_acts_by_decoder_norm`); TopK, then ReLU;
  reconstruction from the k chosen rows divided by their norms, plus b_dec; loss = summed
  squared error per token, mean over tokens, plus the AuxK loss: the top min(d/2, dead)
  dead latents' (no ReLU) reconstruction of the detached residual, scaled by
  min(dead / (d/2), 1), dead meaning silent for more than `dead_feature_window` steps as
  counted before the step; gradients clipped to norm 1 per SAE; Adam with sae-lens's
  betas and learning-rate schedule (one torch Adam over the stacked tensors is S Adams:
  it is elementwise); decoder norms left free (no projection, no renormalisation);
- the end: the scaling factor folded into the weights, and sae-lens's metadata l0 (mean
  firings per token over the sparsity window) and num_dead_features.
The result of each SAE is the sae-lens `TopKTrainingSAE` it started as, holding the trained
weights, so `saes.save_sae` writes it as `fit_sae`'s SAE is written.

Cheaper arithmetic than sae-lens's, equal in exact arithmetic: only the encoder product is a
dense matrix product; the decoder sums k rows per token (`embedding_bag`), and the backward
pass touches only the chosen latents: per-entry dot products through embedding_bag's own
gradient, and one sparse-by-dense product per step for the decoder and encoder gradients.
The dense decoder and its dense backward (five of sae-lens's six large products per step)
are gone.

Every op works on each SAE's slice as it would on that SAE alone (elementwise ops, batched
matrix products, row-wise TopK, per-row sums, sums per SAE in a loop), so an SAE's bits do
not depend on how many others train beside it: tests/test_sae_batch.py checks this, which
is what lets a resumed group train only its missing SAEs and still give the SAEs an
uninterrupted run gives.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repro.errors import ReproError
from repro.science.saes import (
    ProbeCapture,
    ShuffledStream,
    new_sae,
    probe_batches,
    trainer_config,
    training_record,
    training_steps,
)
from repro.science.training_curves import CurveRecorder
from repro.study.spec import SaeSpec

PARAMS = ("b_dec", "W_dec", "W_enc", "b_enc")
"""sae-lens's parameter order, the order gradient clipping sums their norms in."""


def train_saes(model: nn.Module, input_ids: torch.Tensor, keep: torch.Tensor, *, layer: int,
               spec: SaeSpec, seeds: Sequence[int], seq_batch: int,
               metadata: Sequence[dict[str, Any]],
               on_init: Sequence[Callable[[Any], None] | None] | None = None,
               curves: Sequence[CurveRecorder | None] | None = None) -> list[tuple[Any, dict]]:
    """`saes.train_sae` for one SAE per seed, all in one pass over the model's activations:
    the model runs once, each SAE draws its own shuffled order from them. Returns one
    (SAE, training record) per seed, in order."""
    n_tokens = int(keep.sum())
    if spec.epochs > 1 and not ProbeCapture.fits(n_tokens, model.config.hidden_size,
                                                 torch.float32):
        raise ReproError(f"sae.epochs = {spec.epochs} keeps the SAE-training activations in "
                         "memory, and they do not fit; use epochs = 1 or fewer sae_train tokens")
    if n_tokens < spec.batch_tokens:
        raise ReproError(f"SAE training stream has {n_tokens} usable tokens, fewer than "
                         f"batch_tokens={spec.batch_tokens}; raise data.sae_train.n_sequences")
    source = probe_batches(model, input_ids, keep, layer=layer, seq_batch=seq_batch)
    streams = [ShuffledStream(part, n_tokens, batch_tokens=spec.batch_tokens, seed=seed,
                              epochs=spec.epochs)
               for part, seed in zip(_shared(source, len(seeds), spec.epochs,
                                             next(model.parameters()).device), seeds,
                                     strict=True)]
    return fit_saes(streams, spec=spec, seeds=seeds, device=next(model.parameters()).device,
                    layer=layer, metadata=metadata, on_init=on_init, curves=curves)


def _shared(source: Iterator[torch.Tensor], n: int, epochs: int,
            device: torch.device) -> list[Iterator[torch.Tensor]]:
    """`n` copies of `source` run `epochs` times, reading it once: the streams consume it in
    step, so a copy holds back at most a shuffle buffer; later epochs replay the first one
    from host memory (as `saes.ActivationStream` does for one SAE)."""
    if epochs == 1:
        return list(itertools.tee(source, n))
    captured = ProbeCapture()

    def epochs_of(first: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        yield from first
        for _ in range(epochs - 1):
            yield from captured.replay(device)

    return [epochs_of(first) for first in itertools.tee(captured.recording(source), n)]


def fit_saes(streams: Sequence[ShuffledStream], *, spec: SaeSpec, seeds: Sequence[int],
             device: torch.device, layer: int, metadata: Sequence[dict[str, Any]],
             on_init: Sequence[Callable[[Any], None] | None] | None = None,
             curves: Sequence[CurveRecorder | None] | None = None,
             dtype: str = "float32") -> list[tuple[Any, dict]]:
    """`saes.fit_sae` for S SAEs at once, SAE s on streams[s] from seeds[s] (streams of equal
    length, one batch each per step); on_init[s] and curves[s] as fit_sae's. Returns one
    (SAE, training record) per stream; train_seconds is the whole group's."""
    n = len(streams)
    on_init = on_init or [None] * n
    curves = curves or [None] * n
    built = [new_sae(stream.prime(), spec=spec, seed=seed, device=device, layer=layer,
                     metadata=meta, on_init=hook, dtype=dtype)
             for stream, seed, meta, hook in zip(streams, seeds, metadata, on_init, strict=True)]
    n_tokens = streams[0].n_tokens
    if any(stream.n_tokens != n_tokens for stream in streams):
        raise ValueError("SAEs trained together need streams of the same length")
    cfg = trainer_config(spec, n_tokens, device)
    stack = StackedTopK([sae for sae, _ in built], cfg, [scaling for _, scaling in built])
    for curve in curves:
        if curve is not None:
            curve.begin(training_steps(spec, n_tokens))
    started = time.time()
    while stack.n_training_samples < cfg.total_training_samples:
        step = stack.step(torch.stack([next(stream) for stream in streams]).to(device))
        _record(stack, step, curves)
    trained = stack.finish()
    seconds = time.time() - started
    return [(sae, training_record(sae, spec, n_tokens, seed=seed, scaling=scaling,
                                  steps=stack.n_training_steps,
                                  dead_window=cfg.dead_feature_window, seconds=seconds))
            for sae, seed, (_, scaling) in zip(trained, seeds, built, strict=True)]


@torch.no_grad()
def _record(stack: StackedTopK, step: Step, curves: Sequence[CurveRecorder | None]) -> None:
    """Each SAE's curve sums of the step, as CurveRecorder.observe takes them from sae-lens."""
    for s, curve in enumerate(curves):
        if curve is None:
            continue
        x = step.x[s].float()
        err = (step.y[s].float() - x).pow(2).sum()
        var = (x - x.mean(0)).pow(2).sum()
        active = (step.acts[s] > 0).sum()
        curve.add(torch.stack([err.double(), var.double(), active.double()]), x.shape[0],
                  done=stack.n_training_steps, samples=stack.n_training_samples,
                  dead=lambda s=s: stack.dead_neurons[s])


@dataclass
class Step:
    """What one step computed, per SAE: inputs x (S, B, d), reconstruction, chosen latents
    (S, B, k) and their activations after ReLU."""

    x: torch.Tensor
    y: torch.Tensor
    latents: torch.Tensor
    acts: torch.Tensor


class StackedTopK:
    """S sae-lens TopK training SAEs of one shape, stacked, with S trainers' state."""

    def __init__(self, saes: Sequence[Any], cfg: Any, scalings: Sequence[float]) -> None:
        from sae_lens.training.optim import get_lr_scheduler

        self.saes, self.cfg = list(saes), cfg
        first = self.saes[0].cfg
        self.k, self.aux_coefficient = first.k, first.aux_loss_coefficient
        self.S, self.W, self.d = len(self.saes), first.d_sae, first.d_in
        self.params = {name: torch.stack([getattr(s, name).detach() for s in self.saes])
                       for name in PARAMS}
        # Adam sees each SAE's own tensors (views into the stacked ones, so its updates land
        # there): S Adams, each on exactly the tensors sae-lens's Adam would hold
        self.views = [{name: self.params[name][s].detach().requires_grad_(True)
                       for name in PARAMS} for s in range(self.S)]
        device = self.params["W_dec"].device
        self.scalings = list(scalings)
        # sae-lens multiplies a float32 batch by a Python float, i.e. by the float32 value
        self.scaling = torch.tensor(scalings, dtype=torch.float32, device=device)[:, None, None]
        self.optimizer = torch.optim.Adam([v for views in self.views for v in views.values()],
                                          lr=cfg.lr,
                                          betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.scheduler = get_lr_scheduler(
            cfg.lr_scheduler_name, optimizer=self.optimizer,
            training_steps=cfg.total_training_steps, lr=cfg.lr,
            warm_up_steps=cfg.lr_warm_up_steps, decay_steps=cfg.lr_decay_steps,
            lr_end=cfg.lr_end, num_cycles=cfg.n_restart_cycles)
        self.since_fired = torch.zeros(self.S, self.W, device=device)
        self.act_freq = torch.zeros(self.S, self.W, device=device)
        self.n_frac_active_samples = 0
        self.n_training_steps = 0
        self.n_training_samples = 0
        self.rows = torch.arange(self.S, device=device)[:, None, None] * self.W
        """Offsets of each SAE's latents in the flattened (S * W) latent axis."""

    @property
    def dead_neurons(self) -> torch.Tensor:
        """(S, W): latents silent for more than the dead-feature window (sae-lens's rule)."""
        return self.since_fired > self.cfg.dead_feature_window

    def step(self, batch: torch.Tensor) -> Step:
        """One training step of every SAE on its own raw batch, batch[s] of (S, B, d)."""
        if (self.n_training_steps > 0
                and self.n_training_steps % self.cfg.feature_sampling_window == 0):
            self.act_freq.zero_()  # sae-lens's sparsity window starts over
            self.n_frac_active_samples = 0
        self.n_training_samples += batch.shape[1]
        x = (batch * self.scaling).to(self.params["W_dec"].dtype)
        dead = self.dead_neurons
        with torch.no_grad():
            step, grads = _forward_backward(self, x, dead)
            fired = (step.latents + self.rows)[step.acts > 0]
            self.since_fired += 1
            self.since_fired.view(-1)[fired] = 0
            self.act_freq += torch.bincount(fired, minlength=self.S * self.W).view(
                self.S, self.W).to(self.act_freq.dtype)
            self.n_frac_active_samples += self.cfg.train_batch_size_samples
            _clip_per_sae(grads)
        for s, views in enumerate(self.views):
            for name, view in views.items():
                view.grad = grads[name][s]
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.scheduler.step()
        self.n_training_steps += 1
        return step

    @torch.no_grad()
    def finish(self) -> list[Any]:
        """The sae-lens SAEs holding the trained weights, scaling folded in, with the metadata
        sae-lens's trainer sets at the end."""
        dead = self.dead_neurons
        for s, sae in enumerate(self.saes):
            for name in PARAMS:
                getattr(sae, name).data.copy_(self.params[name][s])
            sae.fold_activation_norm_scaling_factor(self.scalings[s])
            if self.n_frac_active_samples > 0:
                sae.cfg.metadata.l0 = (self.act_freq[s] / self.n_frac_active_samples).sum().item()
                sae.cfg.metadata.num_dead_features = dead[s].sum().item()
        return self.saes


def _forward_backward(t: StackedTopK, x: torch.Tensor,
                      dead: torch.Tensor) -> tuple[Step, dict[str, torch.Tensor]]:
    """The forward pass and the gradients of every SAE's loss, written out for sparse entries.

    Entries are (token, latent) pairs of the TopK (and of the AuxK for SAEs with dead latents);
    `rows` index the flattened (S * W) latents, `cols` the flattened (S * B) tokens.
    """
    p = {name: v.detach() for name, v in t.params.items()}
    S, B, d = x.shape
    W_dec = p["W_dec"].reshape(S * t.W, d)
    u = x - p["b_dec"][:, None]
    pre = torch.empty(S, B, t.W, dtype=x.dtype, device=x.device)
    for s in range(S):  # one product per SAE: the same kernel whatever S is
        torch.mm(u[s], p["W_enc"][s], out=pre[s])
    pre += p["b_enc"][:, None]
    norm = _each(lambda w: w.norm(dim=-1), p["W_dec"])
    hidden = pre * norm[:, None]
    values, latents = hidden.topk(t.k, dim=-1, sorted=False)
    acts = values.relu()
    rows = latents + t.rows
    inv = norm.reciprocal().view(-1)
    weight = acts * inv[rows]
    summed, grad_of = _rows_sum(rows.view(S * B, t.k), W_dec, weight.view(S * B, t.k))
    y = summed.view(S, B, d) + p["b_dec"][:, None]
    err = y - x
    grad_y = err * (2.0 / B)
    grad_weight = grad_of(grad_y.view(S * B, d)).view(S, B, t.k)
    grad_hidden = grad_weight * inv[rows] * (acts > 0)
    cols = torch.arange(S * B, device=x.device).view(S, B, 1).expand(S, B, t.k)
    main = _Entries(rows.reshape(-1), cols.reshape(-1), cols.reshape(-1),
                    pre.gather(-1, latents).reshape(-1), grad_hidden.reshape(-1),
                    (grad_weight * acts).reshape(-1), weight.reshape(-1))
    with_dead = [s for s in range(S) if dead[s].any()]
    aux = [_aux_entries(t, s, S * B + i * B, hidden[s], pre[s], dead[s], -err[s], W_dec, inv)
           for i, s in enumerate(with_dead)]
    grads = _gradients(t, [main, *(e for e, _ in aux)], norm, u,
                       torch.cat([grad_y.reshape(S * B, d), *(g for _, g in aux)]), p)
    return Step(x, y, latents, acts), grads


@dataclass
class _Entries:
    """Sparse entries of one part of the loss: latent row, token column, row of the
    reconstruction gradient it meets, pre-activation, gradient w.r.t. the scaled
    pre-activation, gradient w.r.t. the inverse decoder norm, and the weight the entry's
    decoder row got in the reconstruction."""

    rows: torch.Tensor
    cols: torch.Tensor
    recons_cols: torch.Tensor
    pre: torch.Tensor
    grad_hidden: torch.Tensor
    grad_inv: torch.Tensor
    weight: torch.Tensor


def _aux_entries(t: StackedTopK, s: int, offset: int, hidden: torch.Tensor, pre: torch.Tensor,
                 dead: torch.Tensor, residual: torch.Tensor, W_dec: torch.Tensor,
                 inv: torch.Tensor) -> tuple[_Entries, torch.Tensor]:
    """SAE s's AuxK part (it has dead latents): its entries, and the gradient of its loss
    w.r.t. its auxiliary reconstruction (B, d), which the entries meet from row `offset` on."""
    B, d = residual.shape
    n_dead = int(dead.sum())
    k_aux = min(d // 2, n_dead)
    scale = min(n_dead / (d // 2), 1.0)
    values, latents = torch.where(dead[None], hidden, -torch.inf).topk(k_aux, sorted=False)
    rows = latents + s * t.W
    weight = values * inv[rows]
    recons, grad_of = _rows_sum(rows, W_dec, weight)
    grad_recons = (recons - residual) * (t.aux_coefficient * scale * 2.0 / B)
    grad_weight = grad_of(grad_recons)
    tokens = torch.arange(B, device=rows.device)[:, None].expand(B, k_aux).reshape(-1)
    return _Entries(rows.reshape(-1), tokens + s * B, tokens + offset,
                    pre.gather(-1, latents).reshape(-1), (grad_weight * inv[rows]).reshape(-1),
                    (grad_weight * values).reshape(-1), weight.reshape(-1)), grad_recons


def _rows_sum(rows: torch.Tensor, table: torch.Tensor, weight: torch.Tensor
              ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """sum_j weight[b, j] * table[rows[b, j]] per bag b, and the function that turns a
    gradient w.r.t. that sum into one w.r.t. `weight` (the dot product of each bag's gradient
    with each of its rows, by embedding_bag's own backward: no (bags, j, d) gather)."""
    weight = weight.detach().requires_grad_(True)
    with torch.enable_grad():
        summed = F.embedding_bag(rows, table, per_sample_weights=weight, mode="sum")

    def grad_of(grad: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(summed, weight, grad)[0]

    return summed.detach(), grad_of


def _gradients(t: StackedTopK, parts: list[_Entries], norm: torch.Tensor, u: torch.Tensor,
               grad_recons: torch.Tensor, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every parameter's gradient from the entries of the loss's parts; `grad_recons` holds
    the gradients w.r.t. the main reconstruction (S * B rows), then the auxiliary ones."""
    S, B, d = u.shape
    flat_norm = norm.view(-1)
    rows = torch.cat([e.rows for e in parts])
    # decoder rows: the entry's weight x the gradient of the reconstruction it is part of
    grad_dec = _sparse_product(rows, torch.cat([e.recons_cols for e in parts]),
                               torch.cat([e.weight for e in parts]), grad_recons, S * t.W)
    # encoder columns and b_enc: the pre-activation's gradient x (x - b_dec at the token, 1)
    grad_pre = torch.cat([e.grad_hidden for e in parts]) * flat_norm[rows]
    ones = torch.ones(S * B, 1, dtype=u.dtype, device=u.device)
    grad_enc = _sparse_product(rows, torch.cat([e.cols for e in parts]), grad_pre,
                               torch.cat([u.reshape(S * B, d), ones], dim=1), S * t.W)
    # decoder norms: through hidden_pre = pre * norm and through the inverse norms
    per_norm = torch.zeros(S * t.W, dtype=u.dtype, device=u.device)
    per_norm.index_add_(0, rows, torch.cat([e.grad_hidden * e.pre for e in parts]))
    per_inv = torch.zeros_like(per_norm)
    per_inv.index_add_(0, rows, torch.cat([e.grad_inv for e in parts]))
    inv = flat_norm.reciprocal()
    per_norm = (per_norm - per_inv * (inv * inv)).view(S, t.W)
    grad_b_enc = grad_enc[:, d].reshape(S, t.W).contiguous()
    grad_y = grad_recons[:S * B].view(S, B, d)
    return {"b_dec": _each(lambda g, w, b: g.sum(0) - w @ b, grad_y, p["W_enc"], grad_b_enc),
            "W_dec": grad_dec.view(S, t.W, d) + p["W_dec"] * (per_norm / norm)[..., None],
            "W_enc": grad_enc[:, :d].reshape(S, t.W, d).transpose(1, 2).contiguous(),
            "b_enc": grad_b_enc}


def _sparse_product(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
                    dense: torch.Tensor, n_rows: int) -> torch.Tensor:
    """sum over entries of values * dense[cols] into out[rows], (n_rows, dense columns): each
    row summed over its entries in column order, whatever else is in the product."""
    matrix = torch.sparse_coo_tensor(torch.stack([rows, cols]), values,
                                     (n_rows, dense.shape[0]), check_invariants=False)
    matrix = matrix.coalesce()
    return torch.sparse.mm(matrix, dense)


def _each(fn: Callable[..., torch.Tensor], *stacked: torch.Tensor) -> torch.Tensor:
    """fn on each SAE's slices, stacked: for reductions, whose order of summation may depend on
    the shape of the whole tensor."""
    return torch.stack([fn(*(t[s] for t in stacked)) for s in range(stacked[0].shape[0])])


def _clip_per_sae(grads: dict[str, torch.Tensor], max_norm: float = 1.0) -> None:
    """sae-lens's `clip_grad_norm_(sae.parameters(), 1.0)`, for each SAE on its own."""
    for s in range(grads["W_dec"].shape[0]):
        norms = [torch.linalg.vector_norm(grads[name][s]) for name in PARAMS]
        total = torch.linalg.vector_norm(torch.stack(norms))
        coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for name in PARAMS:
            grads[name][s].mul_(coefficient)
