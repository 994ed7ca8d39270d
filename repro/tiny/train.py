"""Train a tiny causal LM from a transformers config on a packed token stream (CPU, seeded).

The tiny profile needs models that have really learned their corpus, or pruning and SAE
features would be measured on noise. This is a plain nanoGPT-style loop (AdamW, linear
warm-up, cosine decay, gradient clipping) around the Hugging Face model classes, so the
trained weights load with AutoModelForCausalLM exactly like the paper's models.

    python -m repro.tiny.build  # trains the three tiny models through this module
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    """Optimisation settings of one tiny-model training run."""

    steps: int = 400
    """Optimizer steps."""
    batch_size: int = 32
    """Sequences per step."""
    lr: float = 3e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (end of the cosine)."""
    warmup_steps: int = 30
    """Linear warm-up steps from 0 to the peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay, applied to matrices only (not norms, not biases)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    seed: int = 0
    """Seeds the weight initialisation and the order of the training sequences."""
    attn_implementation: str = "eager"
    """Attention kernel; eager is deterministic on CPU and keeps Gemma 2's softcapping."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1):
            raise ValueError("need lr > 0 and 0 <= min_lr_ratio <= 1")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError("need 0 <= warmup_steps < steps")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            raise ValueError("need weight_decay >= 0 and grad_clip > 0")
        if self.attn_implementation not in ("eager", "sdpa"):
            raise ValueError("attn_implementation must be 'eager' or 'sdpa'")


def pack_sequences(docs: Sequence[Sequence[int]], seq_len: int, bos_id: int,
                   eos_id: int) -> torch.Tensor:
    """Concatenate documents (each followed by eos) and cut into rows of bos + seq_len-1.

    Every row starts with bos as the real models' inputs do; the remainder is dropped.
    """
    stream = [t for doc in docs for t in (*doc, eos_id)]
    body = seq_len - 1
    n = len(stream) // body
    if n == 0:
        raise ValueError("not enough tokens for one sequence")
    rows = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    return torch.cat([torch.full((n, 1), bos_id, dtype=torch.long), rows], dim=1)


def _lr_at(step: int, p: TrainParams) -> float:
    if step < p.warmup_steps:
        return p.lr * (step + 1) / p.warmup_steps
    progress = (step - p.warmup_steps) / max(1, p.steps - p.warmup_steps - 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return p.lr * (p.min_lr_ratio + (1.0 - p.min_lr_ratio) * cosine)


def _optimizer(model: PreTrainedModel, p: TrainParams) -> torch.optim.AdamW:
    decay = [w for w in model.parameters() if w.requires_grad and w.dim() >= 2]
    no_decay = [w for w in model.parameters() if w.requires_grad and w.dim() < 2]
    groups = [{"params": decay, "weight_decay": p.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=p.lr, betas=(0.9, 0.95))


def train_causal_lm(config: PretrainedConfig, tokens: torch.Tensor,
                    params: TrainParams) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Train a fresh model of `config` on rows of `tokens` (n_seq, seq_len); float32 CPU.

    Returns the model in eval mode and a record (params, steps, tokens seen, wall time,
    final training loss, the TrainParams) for training.json.
    """
    torch.manual_seed(params.seed)
    model = AutoModelForCausalLM.from_config(
        config, attn_implementation=params.attn_implementation, dtype=torch.float32
    )
    model.train()
    opt = _optimizer(model, params)
    order = torch.Generator().manual_seed(params.seed)
    perm, cursor, losses = torch.randperm(len(tokens), generator=order), 0, []
    start = time.perf_counter()
    for step in range(params.steps):
        if cursor + params.batch_size > len(perm):
            perm, cursor = torch.randperm(len(tokens), generator=order), 0
        batch = tokens[perm[cursor: cursor + params.batch_size]]
        cursor += params.batch_size
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, params)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            log.info("step %d/%d loss %.4f", step + 1, params.steps, losses[-1])
    model.eval()
    record = {
        "params": sum(w.numel() for w in model.parameters()),
        "steps": params.steps,
        "tokens_seen": params.steps * params.batch_size * tokens.shape[1],
        "wall_time_s": round(time.perf_counter() - start, 2),
        "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
        # Mean training loss per tenth of the run, to show the curve had flattened.
        "train_loss_curve": [round(sum(c) / len(c), 4) for c in _tenths(losses)],
        "train_params": dataclasses.asdict(params),
    }
    return model, record


def _tenths(values: list[float]) -> list[list[float]]:
    size = max(1, math.ceil(len(values) / 10))
    return [values[i: i + size] for i in range(0, len(values), size)]


@torch.no_grad()
def heldout_loss(model: PreTrainedModel, token_ids: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over every predicted position of token_ids.

    token_ids is (n_seq, seq_len) of unpadded rows, e.g. from pack_sequences.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(token_ids), batch_size):
        batch = token_ids[i: i + batch_size]
        logits = model(input_ids=batch).logits[:, :-1].float()
        targets = batch[:, 1:]
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                 reduction="sum").item()
        count += targets.numel()
    model.train(was_training)
    return total / count


def unigram_entropy(token_ids: torch.Tensor | Sequence[int]) -> float:
    """Entropy (nats) of the empirical token distribution: the loss of the best model that
    ignores context, so a trained model's held-out loss must sit well below it."""
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    counts = torch.bincount(ids).double()
    probs = counts[counts > 0] / ids.numel()
    return float(-(probs * probs.log()).sum())
