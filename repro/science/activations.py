"""Probe activations: the residual stream after decoder layer L (HF `hidden_states[L + 1]`).

A forward hook on layer L keeps its output and stops the forward pass there: the layers
above the probe cost compute and change nothing. Stored as chunks on disk so that a
paper-scale run never holds all activations in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from repro.inputs.families import decoder_layers, stack
from repro.inputs.models import StopForward


@contextmanager
def probe_hook(model: nn.Module, layer: int) -> Iterator[list[torch.Tensor]]:
    """While active, a forward pass stops after `layer` and leaves its output in the list."""
    seen: list[torch.Tensor] = []

    def hook(_mod: nn.Module, _inputs: tuple, output: torch.Tensor | tuple) -> None:
        seen.append(output[0] if isinstance(output, tuple) else output)
        raise StopForward

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@torch.no_grad()
def probe(model: nn.Module, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
    """Residual stream after `layer` for one batch, shape (batch, seq, d_model)."""
    device = next(model.parameters()).device
    with probe_hook(model, layer) as seen, suppress(StopForward):
        stack(model)(input_ids=input_ids.to(device), use_cache=False)
    return seen[0]


def iter_probe(
    model: nn.Module, input_ids: torch.Tensor, layer: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """Probe activations batch by batch, in order, on the model's device."""
    for start in range(0, len(input_ids), batch_size):
        yield probe(model, input_ids[start : start + batch_size], layer)


def write_chunks(
    model: nn.Module,
    input_ids: torch.Tensor,
    layer: int,
    folder: Path,
    *,
    batch_size: int,
    sequences_per_chunk: int,
    dtype: torch.dtype,
) -> list[str]:
    """Capture into folder/acts-00000.safetensors, ...: 'acts' (seq, len, d) and 'tokens'."""
    names: list[str] = []
    for start in range(0, len(input_ids), sequences_per_chunk):
        ids = input_ids[start : start + sequences_per_chunk]
        acts = torch.cat([a.to(dtype).cpu() for a in iter_probe(model, ids, layer, batch_size)])
        name = f"acts-{len(names):05d}.safetensors"
        save_file({"acts": acts.contiguous(), "tokens": ids.contiguous()}, str(folder / name))
        names.append(name)
    return names


def read_chunks(folder: Path) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(acts, tokens) chunk by chunk, in capture order."""
    for path in sorted(folder.glob("acts-*.safetensors")):
        with safe_open(str(path), "pt") as f:
            yield f.get_tensor("acts"), f.get_tensor("tokens")
