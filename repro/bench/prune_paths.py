"""The pruning paths of `repro bench`: the project's Wanda beside the reference algorithm run
one sequence at a time (the same masks at batch 1), and the costs of magnitude, Wanda and
SparseGPT's own work per layer, for the estimate. Timing helpers: repro.bench.paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from repro.bench.paths import alternate, device_of, timed
from repro.inputs.families import (
    decoder_layers,
    family_of,
    in_features,
    layer_matrices,
    out_in,
    prunable_matrices,
    stack,
    weight_of,
)
from repro.inputs.models import layers_swapped
from repro.science import prune, sparsegpt


class _Catch(nn.Module):
    """The reference's Catcher, for every layer: keeps the call's input and the other
    arguments (Gemma 2/3 give each layer its own mask and rotary table, GPT-2 passes some
    positionally) and passes the input on."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.args: tuple = ()
        self.kwargs: dict[str, Any] = {}

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.inputs.append(hidden_states)
        self.args, self.kwargs = args, kwargs
        return hidden_states


def _reference_mask(module: nn.Module, sq_sums: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Pruned entries (True) of one matrix, in its own weight layout and with no transposing:
    an nn.Linear holds (out, in), a row per output; GPT-2's Conv1D holds (in, out), a column
    per output."""
    weight = weight_of(module).abs().to(sq_sums.dtype)
    pruned = torch.zeros_like(weight, dtype=torch.bool)
    if isinstance(module, nn.Linear):
        metric = weight * sq_sums.sqrt().reshape(1, -1)
        lowest = torch.sort(metric, dim=1, stable=True)[1][:, :int(weight.shape[1] * sparsity)]
        pruned.scatter_(1, lowest, True)
    else:
        metric = weight * sq_sums.sqrt().reshape(-1, 1)
        lowest = torch.sort(metric, dim=0, stable=True)[1][:int(weight.shape[0] * sparsity)]
        pruned.scatter_(0, lowest, True)
    return pruned


@torch.no_grad()
def reference_wanda(model: nn.Module, calibration: torch.Tensor, sparsity: float) -> dict:
    """locuslab/wanda's `prune_wanda` spelled out: one calibration sequence at a time, per
    layer sum ||x_j||^2 of every matrix's input, score |W| * sqrt(sum), sort each output's
    scores (stable), zero the lowest int(in_features * sparsity), then rerun the pruned layer
    to get the next layer's inputs. Norms are plain sums (the DESIGN's definition), not the
    reference's running mean, so the masks can be compared bit for bit."""
    device = device_of(model)
    catchers = [_Catch() for _ in decoder_layers(model)]
    with layers_swapped(model, dict(enumerate(catchers))):
        for seq in calibration:
            stack(model)(input_ids=seq[None].to(device), use_cache=False)
    inps = catchers[0].inputs
    masks = {}
    prefix = family_of(model).layers_path
    for i, layer in enumerate(decoder_layers(model)):
        subset = layer_matrices(layer)
        sums = {}
        for n, m in subset.items():
            weight = weight_of(m)
            n_in = weight.shape[1 if isinstance(m, nn.Linear) else 0]
            sums[n] = torch.zeros(n_in, device=device,
                                  dtype=torch.promote_types(weight.dtype, torch.float32))

        def add_batch(name: str, sums: dict = sums) -> Callable:
            def hook(_m: nn.Module, inp: tuple, _out: torch.Tensor) -> None:
                x = inp[0].reshape(-1, inp[0].shape[-1]).to(sums[name].dtype)
                sums[name] += (x * x).sum(dim=0)
            return hook

        handles = [m.register_forward_hook(add_batch(n)) for n, m in subset.items()]
        for x in inps:
            layer(x, *catchers[i].args, **catchers[i].kwargs)
        for h in handles:
            h.remove()
        for name, mod in subset.items():
            pruned = _reference_mask(mod, sums[name], sparsity)
            weight_of(mod)[pruned] = 0
            masks[f"{prefix}.{i}.{name}"] = ~pruned
        outs = []
        for x in inps:
            out = layer(x, *catchers[i].args, **catchers[i].kwargs)
            outs.append(out[0] if isinstance(out, tuple) else out)
        inps = outs
    return masks


def wanda(model: nn.Module, calibration: torch.Tensor, sparsity: float, *, batch_size: int,
          repeats: int) -> dict[str, Any]:
    """prune.prune_wanda vs `reference_wanda` on the same model and calibration tokens; the
    dense weights are restored before every call."""
    device = device_of(model)
    linears = prunable_matrices(model)
    dense = {n: weight_of(m).detach().clone() for n, m in linears.items()}

    def restore() -> None:
        with torch.no_grad():
            for n, m in linears.items():
                weight_of(m).copy_(dense[n])

    results: dict[str, dict] = {}

    def ours() -> None:
        restore()
        results["ours"] = prune.prune_wanda(model, calibration, sparsity, batch_size=batch_size)

    def reference() -> None:
        restore()
        results["reference"] = reference_wanda(model, calibration, sparsity)

    times = alternate({"project": ours, "reference": reference}, repeats, device)
    differ = sum(int((results["ours"][n] != results["reference"][n]).sum())
                 for n in results["ours"])
    restore()
    return {"times": times, "layers": len(decoder_layers(model)),
            "calibration_tokens": calibration.numel(), "masks_equal": differ == 0,
            "mask_entries_differing": differ}


def mask_costs(model: nn.Module, sparsity: float) -> dict[str, float]:
    """Seconds to compute one layer's Wanda masks (row sorts) and magnitude masks (one sort
    per matrix): the parts of pruning that do not grow with calibration tokens. Timed once,
    on the layer's first matrix, and scaled to the whole layer by element count (a sort is
    close to linear at these sizes)."""
    device = device_of(model)
    linears = layer_matrices(decoder_layers(model)[0])
    one = next(iter(linears.values()))
    scale = sum(weight_of(m).numel() for m in linears.values()) / weight_of(one).numel()
    norms = torch.ones(in_features(one), device=device)
    sort_s = timed(lambda: prune.wanda_mask(out_in(one), norms, sparsity), device)[0]
    mag_s = timed(lambda: prune.magnitude_mask(weight_of(one), sparsity), device)[0]
    return {"mask_seconds_per_layer": sort_s * scale, "magnitude_seconds_per_layer": mag_s * scale}


def sparsegpt_costs(model: nn.Module, n_tokens: int) -> dict[str, float]:
    """Seconds of SparseGPT's own work on the first layer: every matrix's Hessian sum, per
    calibration token, and every matrix's solve (factors and update, which do not depend on
    the tokens). Random inputs: the work does not depend on the values."""
    device = device_of(model)
    gen = torch.Generator(device=device).manual_seed(0)
    hessian_s = solve_s = 0.0
    for mod in layer_matrices(decoder_layers(model)[0]).values():
        hessian, solve = _sparsegpt_matrix_costs(mod, n_tokens, gen, device)
        hessian_s += hessian
        solve_s += solve
    return {"hessian_s_per_token": hessian_s / n_tokens, "sparsegpt_s_per_layer": solve_s}


def _sparsegpt_matrix_costs(mod: nn.Module, n_tokens: int, gen: torch.Generator,
                            device: torch.device) -> tuple[float, float]:
    """Seconds of one matrix's Hessian sum over `n_tokens` random inputs, and of its solve
    (the Hessian is freed on return, before the next matrix's is made)."""
    n = in_features(mod)
    x = torch.randn(n_tokens, n, device=device, generator=gen)
    h = torch.zeros(n, n, dtype=torch.float64, device=device)
    hessian_s = timed(lambda: h.add_(x.double().T @ x.double()), device)[0]
    solve_s = timed(lambda: sparsegpt.solve(out_in(mod), h, 0.5), device)[0]
    return hessian_s, solve_s
