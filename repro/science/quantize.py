"""Round-to-nearest (RTN) weight quantization of every matrix pruning touches, stored dequantized.

`repro prune --study FILE --run smollm2-135m/rtn-int4/0 --out DIR` quantizes one model (a study
with a condition `methods = ["rtn"]`, `patterns = ["int4"]`). Definition (docs/beyond.md):
each output row of an (out, in) matrix is cut into groups of `group` consecutive inputs (the
last group of a row holds what is left when `group` does not divide in_features); per group,
with q_max = 2^(bits-1) - 1,

    scale = max |w| over the group / q_max
    w_q   = clamp(round(w / scale), -q_max, q_max) * scale

round() ties to even, and a group whose weights are all zero has scale 0 and stays zero.
The grid is symmetric (no zero point) and never uses -2^(bits-1). The arithmetic is the
weight's dtype promoted to at least float32; w_q is rounded once to the weight's dtype.
Which matrices: `families.prunable_matrices`, the ones pruning touches; GPT-2's Conv1D groups
its inputs along the weight's rows (`families.out_in`). No weight is removed: the keep-masks
are all True, and the prune stage stores the quantized values as kept weights.
"""

from __future__ import annotations

import torch
from torch import nn

from repro.inputs.families import out_in, prunable_matrices, weight_of
from repro.science.prune import Masks
from repro.study.methods import Pattern


def q_max(bits: int) -> int:
    """The largest integer level of a symmetric `bits`-bit grid (127 for 8 bits, 7 for 4)."""
    return 2 ** (bits - 1) - 1


def rtn(weight: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """The (out, in) weight quantized per group of inputs and dequantized, in its own dtype.

    The inputs are padded with zeros to whole groups, which changes no group's max |w|, so
    the last, shorter group of a row gets the scale of its own weights."""
    dtype = torch.promote_types(weight.dtype, torch.float32)
    rows, cols = weight.shape
    padded = torch.zeros(rows, -(-cols // group) * group, dtype=dtype, device=weight.device)
    padded[:, :cols] = weight.detach()
    groups = padded.view(rows, -1, group)
    top = q_max(bits)
    scale = groups.abs().amax(dim=2, keepdim=True) / top
    # 0 / 0 in an all-zero group is computed and discarded: its levels are 0
    levels = torch.where(scale > 0, groups / scale, 0.0).round().clamp(-top, top)
    return (levels * scale).view(rows, -1)[:, :cols].to(weight.dtype)


@torch.no_grad()
def quantize_rtn(model: nn.Module, pattern: Pattern) -> Masks:
    """Quantize every prunable matrix in place; return its keep-masks (all True)."""
    masks = {}
    for name, mod in prunable_matrices(model).items():
        weight = out_in(mod)
        weight.copy_(rtn(weight, pattern.bits, pattern.group))
        masks[name] = torch.ones_like(weight_of(mod), dtype=torch.bool)
    return masks
