"""SAE training, the project's `saes.train_sae` vs sae-lens's own `LanguageModelSAETrainingRunner`,
and SAEs per hour three ways (`sae_ways`: the runner, one SAE at a time, many together).

Both train the same TopK SAE (width, k, lr, batch) on the same model, hook point and tokens,
from activations produced on the fly by the model. sae-lens gets the HF model wrapped in its
`HookedProxyLM` with the hook at the probe layer's module, a pre-tokenized in-memory dataset,
no wandb, no checkpoints, no evals, and the smallest norm-estimation budget it accepts
(1 batch; the project's stream estimates the norm from its first shuffle buffer without
spending extra forward passes), and the project's dead-latent windows. Tokens that reach the
model are counted for both.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from repro.bench.paths import device_of, spread, timed
from repro.inputs.families import decoder_layers, embeddings, family_of
from repro.science.sae_streams import ProbeCapture
from repro.science.saes import MAX_DEAD_WINDOW, hook_name, train_sae, training_steps
from repro.study.spec import SaeSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class _TokenCounter:
    """Counts the input tokens of every model forward (a pre-hook on the embeddings)."""

    def __init__(self, model: nn.Module) -> None:
        self.count = 0
        self.handle = embeddings(model).register_forward_pre_hook(self._hook)

    def _hook(self, _mod: nn.Module, inputs: tuple) -> None:
        self.count += inputs[0].numel()


def _runner(model: PreTrainedModel, tokenizer: Any, ids: torch.Tensor, *, layer: int, spec: SaeSpec,
            n_tokens: int, seq_batch: int, special: list[int], seed: int, out: str) -> Any:
    from datasets import Dataset
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
        TopKTrainingSAEConfig,
    )
    from sae_lens.load_model import HookedProxyLM

    device = str(device_of(model))
    module = f"{family_of(model).layers_path}.{layer}"
    steps = math.ceil(n_tokens / spec.batch_tokens)
    buffer_batches = max(2, -(-64 * spec.batch_tokens // (seq_batch * ids.shape[1])))
    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=model.config.hidden_size, d_sae=spec.width, k=spec.k,
                                  normalize_activations="expected_average_only_in",
                                  device=device, dtype="float32"),
        model_name="repro-bench", model_class_name="AutoModelForCausalLM", hook_name=module,
        dataset_path="", is_dataset_tokenized=True, streaming=False,
        context_size=int(ids.shape[1]), training_tokens=n_tokens,
        train_batch_size_tokens=spec.batch_tokens, store_batch_size_prompts=seq_batch,
        n_batches_in_buffer=buffer_batches, lr=spec.lr, lr_end=spec.lr,
        lr_scheduler_name="constant", device=device, seed=seed, dtype="float32",
        prepend_bos=False, exclude_special_tokens=special, n_batches_for_norm_estimate=1,
        autocast_lm=device.startswith("cuda"),
        # the project's dead-latent windows (saes.train_sae), so both do the same TopK work
        dead_feature_window=max(1, min(MAX_DEAD_WINDOW, steps // 8)),
        feature_sampling_window=steps + 1,
        logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0, checkpoint_path=None,
        output_path=out, save_final_checkpoint=False, verbose=False)
    proxy = HookedProxyLM(model, tokenizer, hook_names=[module])
    dataset = Dataset.from_dict({"input_ids": ids.tolist()})
    return LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=proxy)


def sae_training(model: PreTrainedModel, tokenizer: Any, ids: torch.Tensor, keep: torch.Tensor, *,
                 layer: int, spec: SaeSpec, seq_batch: int, repeats: int,
                 seed: int = 0) -> dict[str, Any]:
    """Seconds and model tokens of both trainers, `repeats` rounds side by side."""
    n_layers = len(decoder_layers(model))
    special = sorted({int(t) for t in ids[~keep].unique()})
    times: dict[str, list[float]] = {"project": [], "project_replay": [], "sae_lens": []}
    lm_tokens: dict[str, int] = {}
    trained: dict[str, int] = {}
    # "project_replay": a further seed of the same run, replaying the recorded probe activations
    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    # one untimed round on a few sequences: imports and first-call costs of both trainers
    warm = max(2, -(-2 * spec.batch_tokens // ids.shape[1]))
    for rounds, seqs in ((1, warm), (repeats, len(ids))):
        _rounds(model, tokenizer, ids[:seqs], keep[:seqs], layer=layer, spec=spec,
                seq_batch=seq_batch, seed=seed, special=special, rounds=rounds,
                times=times, lm_tokens=lm_tokens, trained=trained)
    return {"times": times, "trained_tokens": trained, "model_tokens": lm_tokens,
            "hook": {"project": hook_name(layer),
                     "sae_lens": f"{family_of(model).layers_path}.{layer}"},
            "n_layers": n_layers, "width": spec.width, "k": spec.k,
            "batch_tokens": spec.batch_tokens}


def _rounds(model: PreTrainedModel, tokenizer: Any, ids: torch.Tensor, keep: torch.Tensor, *,
            layer: int, spec: SaeSpec, seq_batch: int, seed: int, special: list[int],
            rounds: int, times: dict, lm_tokens: dict, trained: dict) -> None:
    device = device_of(model)
    for name in times:
        times[name].clear()
    captured = ProbeCapture()  # recorded once, untimed: what a second seed of a run replays
    train_sae(model, ids, keep, layer=layer, spec=spec, seed=seed, seq_batch=seq_batch,
              metadata={"model_name": "repro-bench"}, captured=captured)
    for _ in range(rounds):
        seconds, _ = timed(lambda: train_sae(
            model, ids, keep, layer=layer, spec=spec, seed=seed + 1, seq_batch=seq_batch,
            metadata={"model_name": "repro-bench"}, captured=captured), device)
        times["project_replay"].append(seconds)
        counter = _TokenCounter(model)
        seconds, (_, record) = timed(lambda: train_sae(
            model, ids, keep, layer=layer, spec=spec, seed=seed, seq_batch=seq_batch,
            metadata={"model_name": "repro-bench"}), device)
        counter.handle.remove()
        times["project"].append(seconds)
        lm_tokens["project"], trained["project"] = counter.count, record["n_tokens"]
        with tempfile.TemporaryDirectory() as out, _quiet_warnings():
            counter = _TokenCounter(model)

            def run_sae_lens(out: str = out, n_tokens: int = record["n_tokens"]) -> Any:
                runner = _runner(model, tokenizer, ids, layer=layer, spec=spec,
                                 n_tokens=n_tokens, seq_batch=seq_batch,
                                 special=special, seed=seed, out=out)
                return runner.run()

            seconds, _ = timed(run_sae_lens, device)
            counter.handle.remove()
        times["sae_lens"].append(seconds)
        lm_tokens["sae_lens"] = counter.count
        trained["sae_lens"] = record["n_tokens"]


@contextlib.contextmanager
def _quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


GROUPS = (1, 4, 8)
"""SAEs trained together in the bench's `together` timings."""


def sae_ways(model: PreTrainedModel, tokenizer: Any, ids: torch.Tensor, keep: torch.Tensor, *,
             layer: int, spec: SaeSpec, seq_batch: int, repeats: int,
             groups: tuple[int, ...] = GROUPS) -> dict[str, Any]:
    """SAEs per hour three ways, side by side in `repeats` rounds (after an untimed round on a
    few sequences), each SAE trained on the activations of `ids` from the model's forward:
    - sae_lens_runner: sae-lens's LanguageModelSAETrainingRunner, one SAE per run;
    - one_at_a_time: saes.train_sae (sae-lens's SAETrainer, the model's forward included),
      and one_at_a_time_replayed, a further seed replaying the recorded activations (what
      repro did for a variant's second and later SAEs);
    - together_S: sae_batch.train_saes, S seeds in one pass (one forward for all)."""
    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    warm = max(2, -(-2 * spec.batch_tokens // ids.shape[1]))
    for fn in _ways(model, tokenizer, ids[:warm], keep[:warm], layer=layer, spec=spec,
                    seq_batch=seq_batch, groups=groups).values():
        fn()
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        ways = _ways(model, tokenizer, ids, keep, layer=layer, spec=spec, seq_batch=seq_batch,
                     groups=groups)
        for name, fn in ways.items():
            times.setdefault(name, []).append(timed(fn, device_of(model))[0])
    n_saes = {name: int(name.split("_")[1]) if name.startswith("together") else 1
              for name in times}
    return {"times": times, "saes": n_saes,
            "saes_per_hour": {name: spread([3600 * n_saes[name] / t for t in ts])
                              for name, ts in times.items()},
            "tokens": int(keep.sum()), "steps": training_steps(spec, int(keep.sum())),
            "width": spec.width, "k": spec.k, "batch_tokens": spec.batch_tokens,
            "epochs": spec.epochs, "d_model": model.config.hidden_size}


def _ways(model: PreTrainedModel, tokenizer: Any, ids: torch.Tensor, keep: torch.Tensor, *,
          layer: int, spec: SaeSpec, seq_batch: int,
          groups: tuple[int, ...]) -> dict[str, Any]:
    """The three ways as calls, in the order they run in each round; the replayed seed's
    recording is made here, untimed."""
    from repro.science.sae_batch import train_saes

    special = sorted({int(t) for t in ids[~keep].unique()})
    meta = {"model_name": "repro-bench"}

    def one(seed: int, captured: ProbeCapture | None = None) -> Any:
        return train_sae(model, ids, keep, layer=layer, spec=spec, seed=seed,
                         seq_batch=seq_batch, metadata=meta, captured=captured)

    def runner() -> Any:
        with tempfile.TemporaryDirectory() as out, _quiet_warnings():
            return _runner(model, tokenizer, ids, layer=layer, spec=spec,
                           n_tokens=int(keep.sum()), seq_batch=seq_batch, special=special,
                           seed=0, out=out).run()

    captured = ProbeCapture()
    one(0, captured)
    return {"sae_lens_runner": runner, "one_at_a_time": lambda: one(0),
            "one_at_a_time_replayed": lambda: one(1, captured),
            **{f"together_{n}": (lambda n=n: train_saes(
                model, ids, keep, layer=layer, spec=spec, seeds=list(range(n)),
                seq_batch=seq_batch, metadata=[meta] * n)) for n in groups}}
