"""The activation streams SAEs train on: a model's probe activations at non-special tokens,
shuffled through a seeded buffer, one or more epochs, and the capture that lets later seeds
and epochs replay the model's pass instead of running it again.

Training itself (sae-lens's trainer and the batched one): repro.science.saes and
repro.science.sae_batch.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from repro.science.activations import probe

BUFFER_BATCHES = 64
"""Shuffle buffer size in training batches; half of it is emitted at each refill."""


class ProbeCapture:
    """The probe activations of one SAE-training stream, kept in host memory for the next seed
    of the same variant: the seeds of a run then share one pass of the model instead of one
    each (the paper's three gemma-3-1b seeds: 16.8M tokens x 1152 in bf16, 39 GB).

    Filled while the first seed streams (`recording`), replayed batch for batch by the next
    ones (`replay`), in the model's dtype, so every seed trains on exactly the tensors it
    would have computed itself.
    """

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []
        self.complete = False

    @staticmethod
    def fits(n_tokens: int, d_model: int, dtype: torch.dtype, share: float = 0.4) -> bool:
        """Whether keeping the stream takes at most `share` of the available host memory."""
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return n_tokens * d_model * dtype.itemsize <= share * available

    def recording(self, source: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        self.batches, self.complete = [], False  # a stream that stopped early starts over
        for batch in source:
            self.batches.append(batch.to("cpu", copy=True))
            yield batch
        self.complete = True

    def replay(self, device: torch.device) -> Iterator[torch.Tensor]:
        for batch in self.batches:
            yield batch.to(device)


class ShuffledStream:
    """sae-lens data provider: shuffled (batch_tokens, d_model) float32 batches drawn from a
    source of activation batches through a seeded shuffle buffer.

    `prime()` fills the first shuffle buffer without consuming it, so the activation norm
    scaling factor is estimated without spending training tokens (sae-lens's own estimate
    would draw its batches from the same iterator and lose them for training).
    """

    def __init__(self, source: Iterator[torch.Tensor], n_tokens: int, *, batch_tokens: int,
                 seed: int, epochs: int = 1) -> None:
        self.batch_tokens = batch_tokens
        self.generator = torch.Generator().manual_seed(seed)
        self.n_tokens = n_tokens
        """Activations per epoch."""
        self.epochs = epochs
        self._source = (acts.float() for acts in source)
        self._pool: torch.Tensor | None = None
        self._batches: Iterator[torch.Tensor] | None = None

    def prime(self) -> torch.Tensor:
        """The first buffer of activations (kept for training), filling it on first call."""
        if self._pool is None:
            parts, size = [], 0
            for acts in self._source:
                parts.append(acts)
                size += len(acts)
                if size >= BUFFER_BATCHES * self.batch_tokens:
                    break
            self._pool = torch.cat(parts)
        return self._pool

    def _shuffled(self) -> Iterator[torch.Tensor]:
        pool = self.prime()
        for acts in self._source:
            pool = torch.cat([pool, acts])
            if len(pool) >= BUFFER_BATCHES * self.batch_tokens:
                pool = pool[torch.randperm(len(pool), generator=self.generator).to(pool.device)]
                n_out = len(pool) // 2 // self.batch_tokens * self.batch_tokens
                yield from pool[:n_out].split(self.batch_tokens)
                pool = pool[n_out:]
        pool = pool[torch.randperm(len(pool), generator=self.generator).to(pool.device)]
        yield from pool.split(self.batch_tokens)

    def __iter__(self) -> ShuffledStream:
        return self

    def __next__(self) -> torch.Tensor:
        if self._batches is None:
            self._batches = self._shuffled()
        return next(self._batches)


class ActivationStream(ShuffledStream):
    """The shuffled stream of a model's probe activations over the non-special tokens of
    `input_ids`, `epochs` passes (the model runs once; later epochs replay its activations)."""

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, keep: torch.Tensor, *,
                 layer: int, batch_tokens: int, seq_batch: int, seed: int,
                 captured: ProbeCapture | None = None, epochs: int = 1) -> None:
        device = next(model.parameters()).device
        if epochs > 1 and captured is None:  # later epochs replay the first one's activations
            captured = ProbeCapture()
        if captured is not None and captured.complete:
            source = captured.replay(device)  # another seed already ran the model
        else:
            source = probe_batches(model, input_ids, keep, layer=layer, seq_batch=seq_batch)
            if captured is not None:
                source = captured.recording(source)
        if epochs > 1:  # each epoch reshuffles: the pool is drawn afresh from the generator
            assert captured is not None  # made above: later epochs replay it
            source = itertools.chain(source, *(_lazy(captured.replay, device)
                                               for _ in range(epochs - 1)))
        super().__init__(source, int(keep.sum()), batch_tokens=batch_tokens, seed=seed,
                         epochs=epochs)


def probe_batches(model: nn.Module, input_ids: torch.Tensor, keep: torch.Tensor, *, layer: int,
                  seq_batch: int) -> Iterator[torch.Tensor]:
    """The model's probe activations at the kept (non-special) positions, `seq_batch`
    sequences per forward, in order."""
    device = next(model.parameters()).device
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    for start in range(0, len(input_ids), seq_batch):
        with autocast:
            acts = probe(model, input_ids[start:start + seq_batch], layer)
        yield acts[keep[start:start + seq_batch].to(acts.device)]


def tensor_stream(acts: torch.Tensor, *, batch_tokens: int, seed: int,
                  epochs: int = 1) -> ShuffledStream:
    """The same shuffled stream over activations already in memory (no model): what the
    synthetic method controls (repro.science.method_controls) train their SAEs on."""
    chunk = BUFFER_BATCHES * batch_tokens
    source = itertools.chain.from_iterable(acts.split(chunk) for _ in range(epochs))
    return ShuffledStream(source, len(acts), batch_tokens=batch_tokens, seed=seed, epochs=epochs)


def _lazy(make: Callable[..., Iterator[torch.Tensor]], *args: Any) -> Iterator[torch.Tensor]:
    """`make(*args)`, called only when the first item is wanted (after earlier epochs ran)."""
    yield from make(*args)
