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
  counted before the step; gradients clipped to norm 1 per SAE; torch's Adam with
  sae-lens's betas and learning-rate schedule, holding each SAE's own tensors (views into
  the stacked ones); decoder norms left free (no projection, no renormalisation);
- the end: the scaling factor folded into the weights, and sae-lens's metadata l0 (mean
  firings per token over the sparsity window) and num_dead_features.
The result of each SAE is the sae-lens `TopKTrainingSAE` it started as, holding the trained
weights, so `saes.save_sae` writes it as `fit_sae`'s SAE is written.

Cheaper arithmetic than sae-lens's, equal in exact arithmetic. Only the encoder product is
a dense (batch x d) x (d x width) product. The decoder sums the k chosen rows per token
(`embedding_bag`), and the TopK part's backward touches only its batch x k entries:
their dot products with the output gradient through embedding_bag's own gradient, the
decoder and encoder gradients as embedding_bags with a bag per latent. The AuxK part is
dense over the dead latents only. Of sae-lens's six batch x width x d products per step,
five are gone, and its AuxK's three shrink to the dead latents' columns.

An SAE's bits do not depend on how many others train beside it, nor which: elementwise ops
and row-wise ones (TopK, embedding_bag, each latent's sum over its tokens in order) treat
every SAE's slice alike; matrix products, reductions and Adam run per SAE on its own
tensors, whose shapes are those it has alone (a batched product or a reduction over the
stacked tensor may split its work otherwise). tests/test_sae_batch.py checks it: it is what
lets a resumed group retrain only its missing SAEs and get what an uninterrupted run gets.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from repro.errors import ReproError
from repro.science.sae_streams import ProbeCapture, ShuffledStream, probe_batches
from repro.science.saes import new_sae, trainer_config, training_record, training_steps
from repro.science.training_curves import CurveRecorder
from repro.study.spec import SaeSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel

PARAMS = ("b_dec", "W_dec", "W_enc", "b_enc")
"""sae-lens's parameter order, the order gradient clipping sums their norms in."""


def train_saes(model: PreTrainedModel, input_ids: torch.Tensor, keep: torch.Tensor, *, layer: int,
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
    from host memory (as `sae_streams.ActivationStream` does for one SAE)."""
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
    (SAE, training record) per stream; train_seconds is the whole group's. `spec.autocast`
    runs the encoder product in bfloat16 (sae-lens's trainer autocasts the whole step)."""
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

        def dead(s: int = s) -> torch.Tensor:
            return stack.dead_neurons[s]

        curve.add(torch.stack([err.double(), var.double(), active.double()]), x.shape[0],
                  done=stack.n_training_steps, samples=stack.n_training_samples, dead=dead)


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
    """The forward pass and every parameter's gradient, written out: the TopK part through
    its S * B * k (token, latent) entries, the AuxK part densely over each SAE's dead latents
    (all of them count when there are at most d / 2, the usual case)."""
    p = {name: v.detach() for name, v in t.params.items()}
    S, B, d = x.shape
    u = x - p["b_dec"][:, None]
    pre = torch.empty(S, B, t.W, dtype=x.dtype, device=x.device)
    for s in range(S):  # one product per SAE: the same kernel whatever S is
        if t.cfg.autocast:  # as sae-lens's trainer with autocast: the product in bfloat16
            pre[s] = torch.mm(u[s].bfloat16(), p["W_enc"][s].bfloat16())
        else:
            torch.mm(u[s], p["W_enc"][s], out=pre[s])
    pre += p["b_enc"][:, None]
    norm = _each(lambda w: w.norm(dim=-1), p["W_dec"])
    hidden = pre * norm[:, None]
    values, latents = hidden.topk(t.k, dim=-1, sorted=False)
    acts = values.relu()
    rows = (latents + t.rows).view(S * B, t.k)  # into the flattened (S * W) latents
    inv = norm.reciprocal()
    weight = acts.view(S * B, t.k) * inv.view(-1)[rows]
    summed, grad_of = rows_sum(rows, p["W_dec"].view(S * t.W, d), weight)
    y = summed.view(S, B, d) + p["b_dec"][:, None]
    err = y - x
    grad_y = err * (2.0 / B)
    grad_weight = grad_of(grad_y.view(S * B, d))
    grad_hidden = grad_weight * inv.view(-1)[rows] * (acts.view(S * B, t.k) > 0)
    acc = _topk_gradients(t, rows, weight, grad_weight * acts.view(S * B, t.k), grad_hidden,
                          pre.view(S * B, t.W).gather(-1, latents.view(S * B, t.k)), norm, u,
                          grad_y)
    for s in range(S):
        if dead[s].any():
            _add_aux_gradients(t, acc, s, hidden[s], pre[s], dead[s], -err[s], u[s],
                               p["W_dec"][s], norm[s], inv[s])
    per_norm = acc["per_norm"] - acc["per_inv"] * (inv * inv)
    return Step(x, y, latents, acts), {
        "b_dec": _each(lambda g, w, b: g.sum(0) - w @ b, grad_y, p["W_enc"], acc["b_enc"]),
        "W_dec": acc["dec"] + p["W_dec"] * (per_norm / norm)[..., None],
        "W_enc": acc["enc_t"].transpose(1, 2).contiguous(),
        "b_enc": acc["b_enc"]}


def _topk_gradients(t: StackedTopK, rows: torch.Tensor, weight: torch.Tensor,
                    grad_inv: torch.Tensor, grad_hidden: torch.Tensor, pre: torch.Tensor,
                    norm: torch.Tensor, u: torch.Tensor,
                    grad_y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The TopK part's gradients from its entries, (S * B, k) each: w.r.t. the decoder rows
    (dec), the encoder columns (enc_t, one row per latent), b_enc, and, per latent, the
    decoder norm through hidden_pre = pre * norm (per_norm) and through the inverse norm
    that divides the activations (per_inv)."""
    S, B, d = u.shape
    flat = rows.reshape(-1)
    # a stable sort by latent keeps each latent's tokens in order: (latent, token) sorted
    sorted_rows, order = torch.sort(flat, stable=True)
    tokens = torch.arange(S * B, device=u.device).repeat_interleave(t.k)[order]
    grad_pre = grad_hidden * norm.view(-1)[rows]

    def per_latent(values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return latent_sums(sorted_rows, tokens, values.reshape(-1)[order], dense,
                           S * t.W).view(S, t.W, d)

    def summed(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(S * t.W, dtype=u.dtype, device=u.device)
        return out.index_add_(0, flat, values.reshape(-1)).view(S, t.W)

    return {"dec": per_latent(weight, grad_y.view(S * B, d)),
            "enc_t": per_latent(grad_pre, u.view(S * B, d)), "b_enc": summed(grad_pre),
            "per_norm": summed(grad_hidden * pre), "per_inv": summed(grad_inv)}


def _add_aux_gradients(t: StackedTopK, acc: dict[str, torch.Tensor], s: int,
                       hidden: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor,
                       residual: torch.Tensor, u: torch.Tensor, W_dec: torch.Tensor,
                       norm: torch.Tensor, inv: torch.Tensor) -> None:
    """Add SAE s's AuxK gradients to `acc`: its top min(d / 2, dead) dead latents per token
    (every dead latent when there are at most d / 2), un-rectified, reconstruct the detached
    residual; dense products over the dead latents' columns only."""
    B, d = residual.shape
    idx = dead.nonzero()[:, 0]
    k_aux = min(d // 2, len(idx))
    scale = min(len(idx) / (d // 2), 1.0)
    h = hidden[:, idx]
    chosen = None
    if k_aux < len(idx):
        chosen = torch.zeros_like(h, dtype=torch.bool)
        chosen.scatter_(1, h.topk(k_aux, dim=-1, sorted=False).indices, True)
        h = torch.where(chosen, h, 0.0)
    weight = h * inv[idx]
    rows = W_dec[idx]
    grad_recons = (weight @ rows - residual) * (t.aux_coefficient * scale * 2.0 / B)
    grad_weight = grad_recons @ rows.T
    if chosen is not None:
        grad_weight = torch.where(chosen, grad_weight, 0.0)
    grad_h = grad_weight * inv[idx]
    grad_pre = grad_h * norm[idx]
    acc["dec"][s, idx] += weight.T @ grad_recons
    acc["enc_t"][s, idx] += grad_pre.T @ u
    acc["b_enc"][s, idx] += grad_pre.sum(0)
    acc["per_norm"][s, idx] += (grad_h * pre[:, idx]).sum(0)
    acc["per_inv"][s, idx] += (grad_weight * h).sum(0)


def rows_sum(rows: torch.Tensor, table: torch.Tensor, weight: torch.Tensor
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


def latent_sums(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
                dense: torch.Tensor, n_rows: int) -> torch.Tensor:
    """out[r] = sum over entries (r, c, v) of v * dense[c], (n_rows, dense columns), for
    entries sorted by row: one embedding_bag per row over the dense rows it names, each
    summed in entry order whatever else is in the call (the decoder's own kernel, run
    the other way round: a bag per latent instead of per token)."""
    starts = torch.zeros(n_rows, dtype=torch.long, device=rows.device)
    starts[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)[:-1]
    return F.embedding_bag(cols, dense, starts, per_sample_weights=values, mode="sum")


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
