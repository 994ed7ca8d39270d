"""Unstructured magnitude and Wanda pruning of every matrix inside the decoder layers.

`repro prune --profile tiny --run gemma-3-tiny/wanda/50 --out DIR` prunes one run's model.
Definitions (docs/design.md): magnitude zeroes exactly floor(s * numel) smallest |W| per matrix;
Wanda (Sun et al. 2023, reference locuslab/wanda) scores |W_ij| * ||X_j||_2 and zeroes
exactly floor(s * in_features) lowest scores per output row, ties to the lower column (stable
sort), layer by layer, each layer's inputs coming from the already pruned layers before it.
Masks are True where a weight is kept, shaped as the module's own weight (GPT-2's Conv1D
stores (in, out); Wanda compares within each output, `families.out_in`).
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

from repro.inputs.families import (
    decoder_layers,
    family_of,
    in_features,
    layer_matrices,
    out_in,
    prunable_matrices,
    to_weight_shape,
)
from repro.inputs.models import record_layer_calls, run_layer

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


def _score_dtype(weight: torch.Tensor) -> torch.dtype:
    """float32 for bf16/fp16/fp32 models (as the reference); float64 models stay float64."""
    return torch.promote_types(weight.dtype, torch.float32)


def wanda_scores(weight: torch.Tensor, input_sq_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2, X_j the j-th input feature over all calibration tokens."""
    dtype = _score_dtype(weight)
    return weight.detach().abs().to(dtype) * input_sq_norm.to(dtype).sqrt().unsqueeze(0)


def wanda_mask(weight: torch.Tensor, input_sq_norm: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask zeroing exactly floor(sparsity * in_features) lowest scores in every row."""
    k = math.floor(sparsity * weight.shape[1])
    order = torch.sort(wanda_scores(weight, input_sq_norm), dim=1, stable=True).indices
    keep = torch.ones_like(weight, dtype=torch.bool)
    keep.scatter_(1, order[:, :k], False)
    return keep


def apply_masks(model: nn.Module, masks: Masks) -> None:
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, keep in masks.items():
            weight = modules[name].weight
            weight.mul_(keep.to(device=weight.device, dtype=weight.dtype))


def prune_magnitude(model: nn.Module, sparsity: float) -> Masks:
    """Prune the model in place; return the keep-masks by module name."""
    masks = {name: magnitude_mask(mod.weight, sparsity)
             for name, mod in prunable_matrices(model).items()}
    apply_masks(model, masks)
    return masks


def _accumulate_input_norms(
    matrices: dict[str, nn.Module],
) -> tuple[dict[str, torch.Tensor], Callable[[], None]]:
    """Forward hooks summing x_j^2 over every token each matrix sees; returns (sums, remove)."""
    sums = {
        name: torch.zeros(in_features(mod), dtype=_score_dtype(mod.weight),
                          device=mod.weight.device)
        for name, mod in matrices.items()
    }

    def hook_for(name: str) -> Callable:
        def hook(_mod: nn.Module, inputs: tuple, _out: torch.Tensor) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(sums[name].dtype)
            sums[name] += (x * x).sum(dim=0)

        return hook

    handles = [mod.register_forward_hook(hook_for(name)) for name, mod in matrices.items()]
    return sums, lambda: [h.remove() for h in handles]


@torch.no_grad()
def prune_wanda(
    model: nn.Module, calibration: torch.Tensor, sparsity: float, batch_size: int = 8
) -> Masks:
    """Wanda, sequentially over layers, in place; returns the keep-masks by module name.

    Each layer is run twice over the calibration batches: dense, to accumulate the input norms
    of all its matrices, then pruned, to produce the next layer's inputs (as the reference does).
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
        sums, remove = _accumulate_input_norms(matrices)
        try:
            for b, h in enumerate(hidden):
                run_layer(layer, h, calls[b][i])
        finally:
            remove()
        for name, mod in matrices.items():
            weight = out_in(mod)
            keep = wanda_mask(weight, sums[name], sparsity)
            weight.mul_(keep.to(weight.dtype))
            masks[f"{prefix}.{i}.{name}"] = to_weight_shape(mod, keep)
        hidden = [run_layer(layer, h, calls[b][i]) for b, h in enumerate(hidden)]
    return masks


def sparsity_report(model: nn.Module) -> dict:
    """Achieved sparsity, measured as exact zeros in the weights: per matrix and overall."""
    per_matrix, zeros, total = {}, 0, 0
    for name, mod in prunable_matrices(model).items():
        z, n = int((mod.weight == 0).sum()), mod.weight.numel()
        per_matrix[name] = {"zeros": z, "numel": n, "sparsity": z / n}
        zeros, total = zeros + z, total + n
    return {"overall": zeros / total, "zeros": zeros, "numel": total, "per_matrix": per_matrix}


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
