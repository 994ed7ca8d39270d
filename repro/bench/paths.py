"""The hot paths of `repro bench`, each timed beside a reference that does the same work.

Every function returns plain numbers (seconds per repeat, tokens, equality checks) for
repro/bench/run.py to summarise. A reference twin must give the same result as the project's
path (same masks, same assignment, same activations): a ratio between two computations that
disagree would mean nothing, so the equality is measured and reported with the times.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from repro.inputs.families import (
    decoder_layers,
    stack,
)
from repro.science import activations, match


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall seconds of one call (device work included) and its result."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def alternate(fns: dict[str, Callable[[], Any]], repeats: int,
              device: torch.device) -> dict[str, list[float]]:
    """Run the candidates in turn, `repeats` rounds, after one untimed warm-up round each:
    on a noisy machine the ratio of neighbouring runs is what stays meaningful."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device)[0])
    return times


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (as the pipeline's SAE stream); nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---- activation capture -------------------------------------------------------------------

def random_ids(n: int, seq_len: int, vocab: int, bos: int, seed: int = 0) -> torch.Tensor:
    """Random token ids with a BOS in front (special-token masks then look like the study's)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, min(vocab, 32000), (n, seq_len), generator=gen)
    ids[:, 0] = bos
    return ids


def capture(model: nn.Module, ids: torch.Tensor, layer: int, repeats: int) -> dict[str, Any]:
    """The probe hook (stops after `layer`) vs plain forwards with output_hidden_states=True
    over all layers: the causal LM (with its LM head, what a user would call) and the bare
    decoder stack (no LM head)."""
    device = device_of(model)
    ids = ids.to(device)

    def ours() -> torch.Tensor:
        return activations.probe(model, ids, layer)

    def plain_lm() -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=ids, output_hidden_states=True,
                         use_cache=False).hidden_states[layer + 1]

    def plain_stack() -> torch.Tensor:
        with torch.no_grad():
            return stack(model)(input_ids=ids, output_hidden_states=True,
                                use_cache=False).hidden_states[layer + 1]

    same = bool(torch.equal(ours(), plain_stack()))
    times = alternate({"probe": ours, "all_layers_lm": plain_lm,
                       "all_layers_stack": plain_stack}, repeats, device)
    return {"times": times, "tokens": ids.numel(), "same_activations": same}


# ---- matching -----------------------------------------------------------------------------

def decoders(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A decoder and a noisy permuted copy of it: what a pruned model's SAE resembles."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen)
    b = a[torch.randperm(n, generator=gen)] + 0.8 * torch.randn(n, d, generator=gen)
    return a, b


def one_shot_match(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """The whole cosine matrix in one product, then scipy's assignment: the obvious version."""
    from scipy.optimize import linear_sum_assignment

    an = a / a.norm(dim=1, keepdim=True)
    bn = b / b.norm(dim=1, keepdim=True)
    cos = (an @ bn.T).cpu().numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    index = np.full(len(a), -1, dtype=np.int64)
    index[rows] = cols
    return index


def matching(n: int, d: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """match.hungarian_match (block-wise cosine on `device`, then Hungarian) vs one-shot."""
    a, b = (x.to(device) for x in decoders(n, d))
    got: dict[str, np.ndarray] = {}

    def ours() -> None:
        got["project"] = match.hungarian_match(a, b).index

    def reference() -> None:
        got["reference"] = one_shot_match(a, b)

    times = alternate({"project": ours, "reference": reference}, repeats, device)
    return {"times": times, "n": n, "d": d,
            "same_assignment": bool(np.array_equal(got["project"], got["reference"]))}


# ---- SAE training step and CE-loss evaluation --------------------------------------------

def random_sae(d_in: int, width: int, k: int, layer: int, device: torch.device) -> Any:
    """An inference TopK SAE with random weights reading the residual after `layer`."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from repro.science.saes import hook_name

    torch.manual_seed(0)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=width, k=k, device=str(device), dtype="float32",
                        metadata=SAEMetadata(hook_name=hook_name(layer)))
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, d_in ** -0.5)
        sae.W_dec.copy_(sae.W_enc.T)
    return sae.eval().requires_grad_(False)


def sae_steps(d_in: int, width: int, k: int, batch_tokens: int, steps: int,
              device: torch.device) -> dict[str, Any]:
    """sae-lens's SAETrainer on random activations: the SAE's own share of training, without
    the model forward (timed separately as capture)."""
    from sae_lens import LoggingConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(0)
    batches = [torch.randn(batch_tokens, d_in, device=device) for _ in range(min(steps, 4))]
    provider = (batches[i % len(batches)] for i in range(steps + 2))
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=width, k=k, device=str(device),
                                                dtype="float32"))
    trainer = SAETrainer(SAETrainerConfig(
        total_training_samples=steps * batch_tokens, train_batch_size_samples=batch_tokens,
        lr=2e-4, lr_end=2e-4, device=str(device), dead_feature_window=steps + 1,
        feature_sampling_window=steps + 1, logger=LoggingConfig(log_to_wandb=False)),
        sae, data_provider=provider)
    trainer.step(next(provider))  # warm-up (allocations), not timed
    seconds, _ = timed(lambda: [trainer.step(next(provider)) for _ in range(steps)], device)
    return {"seconds": seconds, "tokens": steps * batch_tokens, "width": width, "d_in": d_in}


def ce_eval(model: nn.Module, ids: torch.Tensor, layer: int, sae: Any, *, batch_size: int,
            repeats: int) -> dict[str, Any]:
    """evaluate.ce_loss_scores with one SAE (clean, zero-ablated and spliced passes) on
    stored-style activations captured first."""
    from repro.science.evaluate import ce_loss_scores

    device = device_of(model)
    acts = torch.cat([activations.probe(model, ids[i:i + batch_size], layer).cpu()
                      for i in range(0, len(ids), batch_size)])
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[:, 0] = False

    def run() -> dict:
        with autocast(device):
            return ce_loss_scores(model, {"sae": sae}, ids, acts, keep, layer=layer,
                                  batch_size=batch_size)

    run()
    times = [timed(run, device)[0] for _ in range(repeats)]
    return {"times": times, "tokens": ids.numel(), "passes": 3}


def forward_split(model: nn.Module, ids: torch.Tensor, repeats: int) -> dict[str, float]:
    """Seconds per token of one decoder layer and of the head (final norm, LM head, CE), from a
    probe at the last layer vs a full causal-LM forward with its loss."""
    device = device_of(model)
    ids = ids.to(device)
    n = len(decoder_layers(model))

    def stack() -> None:
        activations.probe(model, ids, n - 1)

    def full() -> None:
        with torch.no_grad():
            model(input_ids=ids, labels=ids, use_cache=False)

    times = alternate({"stack": stack, "full": full}, repeats, device)
    t_stack, t_full = float(np.median(times["stack"])), float(np.median(times["full"]))
    tokens = ids.numel()
    return {"layer_s_per_token": t_stack / n / tokens,
            "head_s_per_token": max(t_full - t_stack, 0.0) / tokens,
            "layers_run": n, "tokens": tokens}


def _ten_products(x: torch.Tensor, y: torch.Tensor) -> Callable[[], list[torch.Tensor]]:
    return lambda: [x @ y for _ in range(10)]


def matmul_dtypes(m: int, k: int, n: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """An (m, k) x (k, n) matmul in float32 and in bfloat16, timed side by side."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(m, k, generator=gen).to(device), torch.randn(k, n, generator=gen)
            .to(device))
    pairs = {"float32": (a, b), "bfloat16": (a.bfloat16(), b.bfloat16())}
    fns = {name: _ten_products(x, y) for name, (x, y) in pairs.items()}
    times = alternate(fns, repeats, device)
    return {"shape": f"({m}, {k}) x ({k}, {n})", "times": times,
            "ratio": ratio_spread(times["bfloat16"], times["float32"])}


def spread(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"min": v[0], "median": float(np.median(v)), "max": v[-1]}


def ratio_spread(slow: list[float], fast: list[float]) -> dict[str, float]:
    """Per-round speed-up slow/fast (rounds ran side by side), summarised."""
    return spread([s / f for s, f in zip(slow, fast, strict=True) if f > 0])


def per_second(units: float, times: list[float]) -> dict[str, float]:
    """Throughput spread: units/s at the slowest, median and fastest repeat."""
    return {"min": units / max(times), "median": units / float(np.median(times)),
            "max": units / min(times)}


def cuda_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30

