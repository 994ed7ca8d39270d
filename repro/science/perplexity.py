"""Perplexity of a (pruned) model on a token stream: the sanity check of Table 1."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def perplexity(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 1) -> float:
    """exp(mean next-token cross-entropy) over every predicted token of every sequence.

    Equal to the Wanda reference's exp(sum(loss_i * L) / (n * L)), since all sequences have the
    same length. Losses are summed in float64 so that long streams do not lose precision.
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(input_ids), batch_size):
        ids = input_ids[start:start + batch_size].to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                               reduction="sum")
        total += float(loss.double())
        count += ids[:, 1:].numel()
    return math.exp(total / count)
