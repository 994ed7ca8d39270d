"""Sparse autoencoders: training sae-lens TopK SAEs on probe activations, saving, measuring.

Training streams activations straight from the (pruned or dense) model into sae-lens's
`SAETrainer`: the model runs over the study's `sae_train` tokens, special-token positions
(BOS/EOS/PAD) are dropped, a seeded buffer shuffles what is left, and every non-special
token is seen exactly once (one epoch). No TransformerLens model and no wandb are involved.
An SAE is saved with sae-lens (`cfg.json`, `sae_weights.safetensors`), so `SAE.load_from_disk`
reads it, and its hook name is the TransformerLens name of the probe point,
`blocks.{L}.hook_resid_post` (HF `hidden_states[L + 1]`).

The streams of activations the training reads: repro.science.sae_streams. Public pre-trained
SAEs and the tiny profile's shipped stand-ins: repro.science.pretrained_saes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from repro.errors import ReproError
from repro.files import write_json
from repro.science.activations import read_chunks
from repro.science.sae_streams import ActivationStream, ProbeCapture, ShuffledStream
from repro.science.seeding import seed_everything
from repro.science.survival import active
from repro.science.training_curves import CurveRecorder
from repro.study.spec import SaeSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SLICE_TOKENS = 8192
"""Tokens encoded at once when measuring SAEs, so 16384 latents fit in GPU memory."""
MAX_DEAD_WINDOW = 1000
"""sae-lens's default dead-latent window (steps); short runs use an eighth of their steps."""


def hook_name(layer: int) -> str:
    """TransformerLens name of the residual stream after decoder layer `layer`."""
    return f"blocks.{layer}.hook_resid_post"


def hook_layer(name: str | None) -> int:
    """The layer of a `blocks.L.hook_resid_post` hook name; anything else is an error."""
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", name or "")
    if match is None:
        raise ReproError(f"SAE hook {name!r} is not a residual-stream hook "
                         "blocks.L.hook_resid_post; use an SAE trained on the residual stream "
                         "after a decoder layer")
    return int(match.group(1))


def check_layer(sae: Any, probe_layer: int, what: str) -> None:
    """An SAE read at another layer than the probe would be meaningless: refuse it."""
    layer = hook_layer(sae.cfg.metadata.hook_name)
    if layer != probe_layer:
        raise ReproError(f"{what}: SAE hook {sae.cfg.metadata.hook_name} is at layer {layer}, the "
                         f"model's probe_layer is {probe_layer}; use an SAE of layer {probe_layer} "
                         "or fix probe_layer in the study file")


def train_sae(model: PreTrainedModel, input_ids: torch.Tensor, keep: torch.Tensor, *, layer: int,
              spec: SaeSpec, seed: int, seq_batch: int, metadata: dict[str, Any],
              captured: ProbeCapture | None = None,
              on_init: Callable[[Any], None] | None = None,
              curve: CurveRecorder | None = None) -> tuple[Any, dict]:
    """Train a sae-lens TopK SAE for `spec.epochs` epochs over the non-special tokens of
    `input_ids` (the model runs once; later epochs replay its activations, reshuffled).
    What the training does: `fit_sae`; `curve` records the training curve from the steps'
    own outputs (the SAE is the same with or without it).
    """
    if spec.epochs > 1 and captured is None and not ProbeCapture.fits(
            int(keep.sum()), model.config.hidden_size, torch.float32):
        raise ReproError(f"sae.epochs = {spec.epochs} keeps the SAE-training activations in "
                         "memory, and they do not fit; use epochs = 1 or fewer sae_train tokens")
    stream = ActivationStream(model, input_ids, keep, layer=layer, batch_tokens=spec.batch_tokens,
                              seq_batch=seq_batch, seed=seed, captured=captured,
                              epochs=spec.epochs)
    if stream.n_tokens < spec.batch_tokens:
        raise ReproError(f"SAE training stream has {stream.n_tokens} usable tokens, fewer than "
                         f"batch_tokens={spec.batch_tokens}; raise data.sae_train.n_sequences")
    return fit_sae(stream, spec=spec, seed=seed, device=next(model.parameters()).device,
                   layer=layer, metadata=metadata, on_init=on_init, curve=curve)


def fit_sae(stream: ShuffledStream, *, spec: SaeSpec, seed: int, device: torch.device,
            layer: int, metadata: dict[str, Any],
            on_init: Callable[[Any], None] | None = None,
            curve: CurveRecorder | None = None, dtype: str = "float32") -> tuple[Any, dict]:
    """Train a sae-lens TopK SAE on `stream` (`spec.epochs` passes already in it).

    Seeded: the same activations and seed give the same SAE (initialisation through the
    global torch seed, shuffling through the stream's own generator). Activations are
    rescaled to mean norm sqrt(d_model) during training, as sae-lens's
    `expected_average_only_in` does, and the factor is folded back into the weights when
    training ends. b_dec starts at the activations' mean (as in Gao et al.'s TopK SAEs, which
    use their geometric median): residual streams carry a large shared component, and from
    b_dec = 0 the same k latents win on every token and the rest never fire. `dtype` is the
    SAE's parameter dtype (float64 only for the tests that compare trainers to round-off).
    Many SAEs on the same activations train together in repro.science.sae_batch.
    """
    from sae_lens import SAETrainer
    from sae_lens.training import sae_trainer as trainer_module

    sae, scaling = new_sae(stream.prime(), spec=spec, seed=seed, device=device, layer=layer,
                           metadata=metadata, on_init=on_init, dtype=dtype)
    cfg = trainer_config(spec, stream.n_tokens, device)
    trainer = SAETrainer(cfg, sae, data_provider=stream)
    trainer.activation_scaler.scaling_factor = scaling
    started = time.time()
    # sae-lens draws a progress bar; keep it for terminals, off in logs and CI.
    with (patched(trainer_module, "tqdm", functools.partial(trainer_module.tqdm, disable=None)),
          curve.attached(trainer, training_steps(spec, stream.n_tokens))
          if curve is not None else contextlib.nullcontext()):
        sae = trainer.fit()
    return sae, training_record(sae, spec, stream.n_tokens, seed=seed, scaling=scaling,
                                steps=trainer.n_training_steps,
                                dead_window=cfg.dead_feature_window,
                                seconds=time.time() - started)


def training_steps(spec: SaeSpec, n_tokens: int) -> int:
    """Steps of a training over `n_tokens` activations per epoch (the last batch may be short)."""
    return math.ceil(n_tokens * spec.epochs / spec.batch_tokens)


def decay_start(spec: SaeSpec, steps: int) -> int:
    """The step after which the learning rate starts falling (`steps` when it never does)."""
    return steps - round(spec.lr_decay * steps)


def trainer_config(spec: SaeSpec, n_tokens: int, device: torch.device) -> Any:
    """sae-lens's `SAETrainerConfig` of every SAE training: the learning rate constant, then
    falling linearly to 0 over the last `spec.lr_decay` of the steps, bfloat16 autocast
    where `spec.autocast` asks, Adam with sae-lens's
    defaults, a dead-latent window of an eighth of the steps (at most sae-lens's default
    1000) for the auxiliary loss, and one sparsity window over the whole training."""
    from sae_lens import LoggingConfig
    from sae_lens.config import SAETrainerConfig

    steps = training_steps(spec, n_tokens)
    decay_steps = steps - decay_start(spec, steps)
    return SAETrainerConfig(
        total_training_samples=n_tokens * spec.epochs, train_batch_size_samples=spec.batch_tokens,
        lr=spec.lr, lr_end=0.0 if decay_steps else spec.lr, lr_decay_steps=decay_steps,
        autocast=spec.autocast, device=str(device),
        dead_feature_window=max(1, min(MAX_DEAD_WINDOW, steps // 8)),
        feature_sampling_window=steps + 1, logger=LoggingConfig(log_to_wandb=False))


def new_sae(first: torch.Tensor, *, spec: SaeSpec, seed: int, device: torch.device, layer: int,
            metadata: dict[str, Any], on_init: Callable[[Any], None] | None = None,
            dtype: str = "float32") -> tuple[Any, float]:
    """A freshly initialised sae-lens `TopKTrainingSAE` of `seed` and its activation scaling
    factor, from `first`, the stream's first (unshuffled) buffer: the factor that brings the
    mean norm to sqrt(d_model), and b_dec at the scaled mean."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    scaling = math.sqrt(first.shape[1]) / float(first.norm(dim=-1).double().mean())
    seed_everything(seed)
    cfg = TopKTrainingSAEConfig(
        d_in=first.shape[1], d_sae=spec.width, k=spec.k, dtype=dtype, device=str(device),
        normalize_activations="expected_average_only_in",
        metadata=SAEMetadata(hook_name=hook_name(layer), prepend_bos=True, **metadata))
    sae = TopKTrainingSAE(cfg)
    if on_init is not None:  # e.g. to keep the initial decoder: how far each latent moves
        on_init(sae)
    with torch.no_grad():  # residual streams sit far from the origin; start b_dec at their mean
        sae.b_dec.copy_(first.mean(0) * scaling)
    return sae, scaling


def training_record(sae: Any, spec: SaeSpec, n_tokens: int, *, seed: int, scaling: float,
                    steps: int, dead_window: int, seconds: float) -> dict[str, Any]:
    """What training.json records of a finished SAE (train_seconds goes to the manifest)."""
    return {"n_tokens": n_tokens, "epochs": spec.epochs, "steps": steps,
            "batch_tokens": spec.batch_tokens, "width": spec.width, "k": spec.k,
            "lr": spec.lr, "lr_decay": spec.lr_decay, "autocast": spec.autocast, "seed": seed,
            "norm_scaling_factor": scaling,
            "dead_feature_window_steps": dead_window,
            "train_l0": sae.cfg.metadata.l0,
            "dead_at_end": sae.cfg.metadata.num_dead_features,
            "train_seconds": round(seconds, 3)}


def save_training_record(record: dict[str, Any], path: Path) -> None:
    """training.json without the training time: the same training gives the same bytes, so a
    retrained SAE keeps its stage fingerprint (the time goes to the stage's manifest)."""
    write_json(path, {k: v for k, v in record.items() if k != "train_seconds"})


def save_sae(sae: Any, folder: Path) -> None:
    """Save the inference form (decoder norms folded) that `SAE.load_from_disk` reads.

    cfg.json is rewritten with sorted keys: sae-lens orders them by a set, so the same SAE
    would otherwise give other bytes in another process (and another SHA256SUMS line).
    """
    weights_path, cfg_path = sae.save_inference_model(str(folder))
    Path(weights_path).chmod(0o644)  # safetensors writes 0600; assets ship readable
    cfg_path = Path(cfg_path)
    cfg_path.write_text(json.dumps(json.loads(cfg_path.read_text()), sort_keys=True) + "\n")


def load_sae(folder: Path, device: torch.device | str) -> Any:
    """An SAE saved by sae-lens, in float32 on `device`, in eval mode."""
    from sae_lens import SAE

    if not (Path(folder) / "cfg.json").is_file():
        raise ReproError(f"no sae-lens SAE in {folder} (cfg.json missing); rerun `repro all`, or "
                         "point pretrained_sae.path at a folder saved by sae-lens")
    sae = SAE.load_from_disk(str(folder), device=str(device), dtype="float32")
    return sae.eval().requires_grad_(False)


# ---- measuring an SAE on stored activations ----------------------------------------------

def masked_chunks(folder: Path,
                  special_ids: list[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stored eval activations chunk by chunk: (acts (m, d) at non-special positions, tokens)."""
    found = False
    for acts, tokens in read_chunks(folder):
        found = True
        keep = ~torch.isin(tokens, torch.tensor(special_ids, dtype=tokens.dtype))
        yield acts[keep], tokens
    if not found:
        raise ReproError(f"no activation chunks in {folder}; rerun `repro all` to capture them")


@torch.no_grad()
def encode(sae: Any, acts: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, f) slice by slice: x float32 on the SAE's device, f = sae.encode(x)."""
    for part in acts.split(SLICE_TOKENS):
        x = part.to(sae.device, torch.float32)
        yield x, sae.encode(x)


@torch.no_grad()
def firing_rates(sae: Any, folder: Path, special_ids: list[int]) -> dict[str, torch.Tensor]:
    """Per latent, the fraction of non-special eval tokens on which it is active (f_i > 0)."""
    counts = torch.zeros(sae.cfg.d_sae, dtype=torch.int64, device=sae.device)
    n = 0
    for acts, _ in masked_chunks(folder, special_ids):
        for _, f in encode(sae, acts):
            counts += active(f).sum(0)
        n += len(acts)
    if n == 0:
        raise ReproError(f"the eval activations in {folder} hold only special tokens")
    counts = counts.cpu()
    return {"firing_rate": counts.double() / n, "fire_count": counts,
            "n_tokens": torch.tensor(n, dtype=torch.int64)}


def save_firing_rates(rates: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.contiguous() for k, v in rates.items()}, str(path))


def load_firing_rates(path: Path) -> dict[str, torch.Tensor]:
    """firing_rate, fire_count and n_tokens as `save_firing_rates` wrote them."""
    return load_file(str(path))


@contextlib.contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
    """Swap one attribute of a library module for the duration of a call, then restore it."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)
