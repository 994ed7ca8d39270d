"""SparseGPT (Frantar and Alistarh 2023), unstructured or N:M, layer by layer.

`repro prune --profile beyond --run smollm2-135m/sparsegpt/50 --out DIR` prunes one model.
References: IST-DASLab/sparsegpt `SparseGPT.fasterprune` and the `prune_sparsegpt` path of
locuslab/wanda (the same code). Per matrix, from the Hessian H = X^T X of its inputs over the
calibration tokens (the reference's running mean 2/n X^T X differs by a factor, which changes
neither masks nor weights): dead inputs (H_jj = 0) get H_jj = 1 and their weights zeroed; H
is dampened by 1 % of its mean diagonal; U is the upper Cholesky factor of H^-1. Columns go
in blocks of 128. At a block's start (unstructured) the block's mask takes the lowest
w^2 / U_jj^2 over the whole block; at every M-th column (N:M) the N lowest of the next M
columns of each row. Each column in turn: its pruned entries are set to 0, the error
(w - q) / U_jj is spread over the block's later columns along U's row, and at the block's end
the block's errors update every later column at once (the reference's lazy batch update).
Layers go in order, each from the inputs of the already pruned layers (`prune.layer_by_layer`).

Choices, stated: the unstructured block mask removes exactly floor(s * block entries) with
ties to the lower (row-major) position, where the reference's `<= threshold` removes one more
and any ties (the same choice as magnitude, docs/design.md); N:M ties go to the lower column where
the reference's `topk` leaves them unspecified. Arithmetic: each calibration batch's X^T X
in float32 (float64 for a float64 model), as the reference computes it, summed over the
batches in float64 (the reference sums in float32: over 262k tokens that loses digits the
masks depend on); the Cholesky factors and every update in float64 (the reference: float32),
rounded once to the model's dtype at the end. The batch products stay in float32 because
they are most of the work and the pinned CPU arithmetic (repro/science/numerics.py) runs
float64 matrix products four times slower than float32 ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from repro.inputs.families import in_features, out_in, prunable_matrices, weight_of
from repro.science.prune import Masks, check_groups, layer_by_layer
from repro.study.methods import UNSTRUCTURED_PATTERN, Pattern

BLOCK = 128
"""Columns per block (the reference's default blocksize)."""
DAMP = 0.01
"""Dampening: this fraction of the mean diagonal of H is added to its diagonal (percdamp)."""


def _hessian(mod: nn.Module) -> tuple[torch.Tensor, Callable]:
    """SparseGPT's statistic: sum over tokens of x x^T, each batch's product in float32
    (float64 for a float64 model), the sum over batches in float64."""
    n = in_features(mod)
    weight = weight_of(mod)
    dtype = torch.promote_types(weight.dtype, torch.float32)

    def add(acc: torch.Tensor, x: torch.Tensor) -> None:
        x = x.to(dtype)
        acc += (x.T @ x).to(torch.float64)

    return torch.zeros(n, n, dtype=torch.float64, device=weight.device), add


def inverse_factor(hessian: torch.Tensor, damp: float = DAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, dead): U the upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, after the
    dead inputs' diagonal entries are set to 1; dead marks the inputs that never fired."""
    h = hessian.clone()
    dead = h.diagonal() == 0
    h.diagonal()[dead] = 1
    h.diagonal().add_(damp * h.diagonal().mean())
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    del h  # three in x in float64 matrices at most: 2 GB for a 9216-input matrix
    return torch.linalg.cholesky(inverse, upper=True), dead


def _block_mask(w1: torch.Tensor, d: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Pruned entries (True) of one block: the floor(s * entries) lowest w^2 / d^2."""
    scores = (w1 ** 2 / d.unsqueeze(0) ** 2).flatten()
    pruned = torch.zeros_like(scores, dtype=torch.bool)
    pruned[torch.sort(scores, stable=True).indices[: math.floor(sparsity * scores.numel())]] = True
    return pruned.view_as(w1)


def solve(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float,
          pattern: Pattern = UNSTRUCTURED_PATTERN, block: int = BLOCK,
          damp: float = DAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """One matrix: (pruned and updated (out, in) weight in float64, (out, in) keep-mask)."""
    if pattern.m and block % pattern.m:
        raise ValueError(f"block {block} must hold whole groups of {pattern.m}")
    w = weight.detach().to(torch.float64).clone()
    u, dead = inverse_factor(hessian.to(torch.float64), damp)
    w[:, dead] = 0
    pruned = torch.zeros_like(w, dtype=torch.bool)
    for i1 in range(0, w.shape[1], block):
        i2 = min(i1 + block, w.shape[1])
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        d = u1.diagonal()
        mask1 = (torch.zeros_like(w1, dtype=torch.bool) if pattern.m
                 else _block_mask(w1, d, sparsity))
        errors = torch.zeros_like(w1)
        for i in range(i2 - i1):
            if pattern.m and i % pattern.m == 0:
                scores = w1[:, i:i + pattern.m] ** 2 / d[i:i + pattern.m].unsqueeze(0) ** 2
                lowest = torch.sort(scores, dim=1, stable=True).indices[:, : pattern.n]
                mask1[:, i:i + pattern.m].scatter_(1, lowest, True)
            err = w1[:, i] * mask1[:, i] / d[i]  # (w - q) / d, q = w with pruned entries 0
            w1[:, i:].addr_(err, u1[i, i:], alpha=-1)
            w1[:, i] *= ~mask1[:, i]  # exactly q: the update leaves it there up to round-off
            errors[:, i] = err
        w[:, i1:i2] = w1
        pruned[:, i1:i2] = mask1
        w[:, i2:] -= errors @ u[i1:i2, i2:]
    return w, ~pruned


def prune_sparsegpt(model: nn.Module, calibration: torch.Tensor, sparsity: float,
                    batch_size: int = 8, pattern: Pattern = UNSTRUCTURED_PATTERN,
                    block: int = BLOCK) -> Masks:
    """SparseGPT over the model in place (masks and updated weights); returns the keep-masks."""
    for mod in prunable_matrices(model).values():
        check_groups(in_features(mod), pattern)

    def prune_matrix(mod: nn.Module, hessian: torch.Tensor) -> torch.Tensor:
        weight = out_in(mod)
        updated, keep = solve(weight, hessian, sparsity, pattern, block)
        weight.copy_(updated.to(weight.dtype))
        return keep

    return layer_by_layer(model, calibration, batch_size, _hessian, prune_matrix)
