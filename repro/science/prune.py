"""Magnitude and Wanda pruning of every matrix inside the decoder layers, unstructured or N:M.

`repro prune --profile tiny --run gemma-3-tiny/wanda/50 --out DIR` prunes one run's model.
Definitions (docs/design.md): magnitude zeroes exactly floor(s * numel) smallest |W| per matrix;
Wanda (Sun et al. 2023, reference locuslab/wanda) scores |W_ij| * ||X_j||_2 and zeroes
exactly floor(s * in_features) lowest scores per output row, ties to the lower column (stable
sort), layer by layer, each layer's inputs coming from the already pruned layers before it.
N:M (the reference's `prune_n`, `prune_m`): in every group of M consecutive inputs of an
output row (columns jM .. jM+M-1 of the (out, in) matrix), the N lowest scores are zeroed,
ties to the lower column; magnitude scores |W|, Wanda its own score. The reference picks them
with `topk`, whose ties are unspecified.
Masks are True where a weight is kept, shaped as the module's own weight (GPT-2's Conv1D
stores (in, out); scores and groups are taken per output, `families.out_in`).
`layer_by_layer` is the reference's sequential loop that Wanda and SparseGPT
(repro/science/sparsegpt.py) share; repro/science/pruners.py names every method's function.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from repro.errors import ReproError
from repro.inputs.families import (
    decoder_layers,
    family_of,
    in_features,
    layer_matrices,
    out_in,
    prunable_matrices,
    to_weight_shape,
    weight_of,
)
from repro.inputs.models import record_layer_calls, run_layer
from repro.study.methods import UNSTRUCTURED_PATTERN, Pattern

Masks = dict[str, torch.Tensor]
SHAPES_KEY = "shapes"
"""Metadata entry of masks.safetensors: JSON {matrix name: "rowsxcols"}."""


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask zeroing exactly floor(sparsity * numel) entries of smallest |W| (stable ties)."""
    k = math.floor(sparsity * weight.numel())
    order = torch.argsort(weight.detach().abs().flatten().float(), stable=True)
    keep = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    keep[order[:k]] = False
    return keep.view_as(weight)


def check_groups(in_features: int, pattern: Pattern) -> None:
    """An N:M pattern needs whole groups of M inputs; say so in one line where it has not."""
    if pattern.m and in_features % pattern.m:
        raise ReproError(f"pattern {pattern} needs every matrix's inputs in whole groups of "
                         f"{pattern.m}, and a matrix has {in_features}; choose an M that "
                         "divides the model's widths")


def n_m_mask(scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Keep-mask of (out, in) scores zeroing the pattern.n lowest of every group of pattern.m
    consecutive inputs of each output row (stable: ties to the lower column)."""
    check_groups(scores.shape[1], pattern)
    groups = scores.reshape(scores.shape[0], -1, pattern.m)
    lowest = torch.sort(groups, dim=2, stable=True).indices[..., : pattern.n]
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(2, lowest, False)
    return keep.reshape(scores.shape)


def _score_dtype(weight: torch.Tensor) -> torch.dtype:
    """float32 for bf16/fp16/fp32 models (as the reference); float64 models stay float64."""
    return torch.promote_types(weight.dtype, torch.float32)


def wanda_scores(weight: torch.Tensor, input_sq_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2, X_j the j-th input feature over all calibration tokens."""
    dtype = _score_dtype(weight)
    return weight.detach().abs().to(dtype) * input_sq_norm.to(dtype).sqrt().unsqueeze(0)


def wanda_mask(weight: torch.Tensor, input_sq_norm: torch.Tensor, sparsity: float,
               pattern: Pattern = UNSTRUCTURED_PATTERN) -> torch.Tensor:
    """Keep-mask of an (out, in) weight: exactly floor(sparsity * in_features) lowest scores
    zeroed in every row (unstructured), or pattern.n of every pattern.m (N:M)."""
    scores = wanda_scores(weight, input_sq_norm)
    if pattern.m:
        return n_m_mask(scores, pattern)
    k = math.floor(sparsity * weight.shape[1])
    order = torch.sort(scores, dim=1, stable=True).indices
    keep = torch.ones_like(weight, dtype=torch.bool)
    keep.scatter_(1, order[:, :k], False)
    return keep


def apply_masks(model: nn.Module, masks: Masks) -> None:
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, keep in masks.items():
            weight = modules[name].weight
            weight.mul_(keep.to(device=weight.device, dtype=weight.dtype))


def prune_magnitude(model: nn.Module, sparsity: float,
                    pattern: Pattern = UNSTRUCTURED_PATTERN) -> Masks:
    """Prune the model in place; return the keep-masks by module name."""
    masks = {}
    for name, mod in prunable_matrices(model).items():
        if pattern.m:
            scores = out_in(mod).detach().abs().to(_score_dtype(weight_of(mod)))
            masks[name] = to_weight_shape(mod, n_m_mask(scores, pattern))
        else:
            masks[name] = magnitude_mask(weight_of(mod), sparsity)
    apply_masks(model, masks)
    return masks


Statistic = Callable[[nn.Module], tuple[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], None]]]
"""What a calibrated method gathers from one matrix's inputs: its empty accumulator and how
to add a batch of inputs (tokens, in_features) to it."""
PruneMatrix = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""Prunes one matrix in place from its accumulated statistic; returns the (out, in) keep-mask."""


def _accumulate(
    matrices: dict[str, nn.Module], statistic: Statistic
) -> tuple[dict[str, torch.Tensor], Callable[[], None]]:
    """Forward hooks adding every token each matrix sees to its statistic; returns
    (accumulators, remove)."""
    started = {name: statistic(mod) for name, mod in matrices.items()}
    sums = {name: acc for name, (acc, _) in started.items()}

    def hook_for(name: str) -> Callable:
        add = started[name][1]

        def hook(_mod: nn.Module, inputs: tuple, _out: torch.Tensor) -> None:
            add(sums[name], inputs[0].detach().reshape(-1, inputs[0].shape[-1]))

        return hook

    handles = [mod.register_forward_hook(hook_for(name)) for name, mod in matrices.items()]

    def remove() -> None:
        for h in handles:
            h.remove()

    return sums, remove


@torch.no_grad()
def layer_by_layer(model: nn.Module, calibration: torch.Tensor, batch_size: int,
                   statistic: Statistic, prune_matrix: PruneMatrix) -> Masks:
    """The reference's sequential loop, in place; returns the keep-masks by module name.

    Each layer is run twice over the calibration batches: dense, to gather the statistic of
    every matrix's inputs, then pruned, to produce the next layer's inputs (as the reference
    does for Wanda and SparseGPT alike).
    """
    device = next(model.parameters()).device
    batches = [
        calibration[i : i + batch_size].to(device) for i in range(0, len(calibration), batch_size)
    ]
    hidden, calls = [], []
    for ids in batches:
        h, c = record_layer_calls(model, ids)
        hidden.append(h)
        calls.append(c)
    masks: Masks = {}
    prefix = family_of(model).layers_path
    for i, layer in enumerate(decoder_layers(model)):
        matrices = layer_matrices(layer)
        sums, remove = _accumulate(matrices, statistic)
        try:
            for b, h in enumerate(hidden):
                run_layer(layer, h, calls[b][i])
        finally:
            remove()
        for name, mod in matrices.items():
            masks[f"{prefix}.{i}.{name}"] = to_weight_shape(mod, prune_matrix(mod, sums[name]))
        hidden = [run_layer(layer, h, calls[b][i]) for b, h in enumerate(hidden)]
    return masks


def _input_sq_norms(mod: nn.Module) -> tuple[torch.Tensor, Callable]:
    """Wanda's statistic: sum over tokens of x_j^2, in the score dtype."""
    weight = weight_of(mod)
    dtype = _score_dtype(weight)

    def add(acc: torch.Tensor, x: torch.Tensor) -> None:
        x = x.to(dtype)
        acc += (x * x).sum(dim=0)

    return torch.zeros(in_features(mod), dtype=dtype, device=weight.device), add


def prune_wanda(
    model: nn.Module, calibration: torch.Tensor, sparsity: float, batch_size: int = 8,
    pattern: Pattern = UNSTRUCTURED_PATTERN,
) -> Masks:
    """Wanda, sequentially over layers, in place; returns the keep-masks by module name."""
    for mod in prunable_matrices(model).values():
        check_groups(in_features(mod), pattern)

    def prune_matrix(mod: nn.Module, sq_norms: torch.Tensor) -> torch.Tensor:
        weight = out_in(mod)
        keep = wanda_mask(weight, sq_norms, sparsity, pattern)
        weight.mul_(keep.to(weight.dtype))
        return keep

    return layer_by_layer(model, calibration, batch_size, _input_sq_norms, prune_matrix)


def sparsity_report(model: nn.Module) -> dict:
    """Achieved sparsity, measured as exact zeros in the weights: per matrix and overall."""
    per_matrix, zeros, total = {}, 0, 0
    for name, mod in prunable_matrices(model).items():
        weight = weight_of(mod)
        z, n = int((weight == 0).sum()), weight.numel()
        per_matrix[name] = {"zeros": z, "numel": n, "sparsity": z / n}
        zeros, total = zeros + z, total + n
    return {"overall": zeros / total, "zeros": zeros, "numel": total, "per_matrix": per_matrix}


def removed(masks: Masks) -> float:
    """The fraction of the masked weights that the keep-masks remove."""
    return sum(int((~keep).sum()) for keep in masks.values()) / sum(
        keep.numel() for keep in masks.values())


def save_masks(masks: Masks, path: Path) -> None:
    """Bit-packed keep-masks: 1/16 of a bf16 model, so pruned models cost little disk."""
    packed = {
        name: torch.from_numpy(np.packbits(m.cpu().numpy().ravel())) for name, m in masks.items()
    }
    shapes = {name: "x".join(map(str, m.shape)) for name, m in masks.items()}
    # one sorted JSON entry: safetensors writes its metadata map in a per-process random
    # order, so one key per matrix gave the same masks other bytes in every process
    save_file(packed, str(path), metadata={SHAPES_KEY: json.dumps(shapes, sort_keys=True)})


def load_masks(path: Path) -> Masks:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    shapes = json.loads(meta[SHAPES_KEY]) if SHAPES_KEY in meta else meta
    out: Masks = {}
    for name, bits in load_file(str(path)).items():
        shape = tuple(int(x) for x in shapes[name].split("x"))
        flat = np.unpackbits(bits.numpy(), count=math.prod(shape)).astype(bool)
        out[name] = torch.from_numpy(flat.reshape(shape))
    return out


def save_kept_weights(model: nn.Module, masks: Masks, path: Path) -> None:
    """The kept entries of every pruned matrix, in the weight's own layout and dtype, row-major:
    with the masks, the pruned model of a method that changes the weights it keeps (SparseGPT),
    at the kept fraction of the matrices' size."""
    modules = dict(model.named_modules())
    kept = {name: modules[name].weight.detach()[keep.to(modules[name].weight.device)].cpu()
            for name, keep in masks.items()}
    save_file(kept, str(path))


def apply_kept_weights(model: nn.Module, masks: Masks, path: Path) -> None:
    """Set every pruned matrix to its stored kept entries and zeros elsewhere (the inverse of
    `save_kept_weights`)."""
    kept = load_file(str(path))
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, keep in masks.items():
            weight = modules[name].weight
            weight.zero_()
            weight[keep.to(weight.device)] = kept[name].to(device=weight.device, dtype=weight.dtype)
