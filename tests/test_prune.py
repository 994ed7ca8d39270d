"""Pruning: exact counts, untouched modules, and Wanda against a slow, obviously-correct twin."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
from conftest import make_model, random_ids

from repro.inputs.families import (
    decoder_layers,
    embeddings,
    family_of,
    final_norm,
    layer_matrices,
    prunable_matrices,
)
from repro.inputs.models import StopForward
from repro.science import prune


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.6])
def test_magnitude_zeroes_exactly_floor_s_numel_smallest(arch: str, sparsity: float) -> None:
    model = make_model(arch)
    before = {n: m.weight.clone() for n, m in prunable_matrices(model).items()}
    prune.prune_magnitude(model, sparsity)
    for name, lin in prunable_matrices(model).items():
        w, w0 = lin.weight, before[name]
        zeroed = w == 0
        assert int(zeroed.sum()) == math.floor(sparsity * w.numel()), name
        assert w0[zeroed].abs().max() <= w0[~zeroed].abs().min(), name
        assert torch.equal(w[~zeroed], w0[~zeroed])


def test_magnitude_breaks_ties_by_position() -> None:
    w = torch.tensor([[1.0, -1.0, 1.0, 2.0]])
    keep = prune.magnitude_mask(w, 0.5)
    assert keep.tolist() == [[False, False, True, True]]


def test_non_linear_parameters_untouched(arch: str) -> None:
    model = make_model(arch)
    calib = random_ids(4, 16)
    linear_params = {f"{n}.weight" for n in prunable_matrices(model)}
    before = {n: p.clone() for n, p in model.named_parameters() if n not in linear_params}
    prune.prune_wanda(model, calib, 0.5, batch_size=2)
    after = dict(model.named_parameters())
    outside = [*embeddings(model).parameters(), *final_norm(model).parameters()]
    named = {n for n, p in model.named_parameters() if any(p is q for q in outside)}
    assert named and named <= before.keys()
    for name, p in before.items():
        assert torch.equal(p, after[name]), name


def slow_wanda(model: torch.nn.Module, calibration: torch.Tensor, sparsity: float) -> dict:
    """The reference algorithm spelled out: for layer i, rebuild its inputs from scratch by
    running the whole model (layers < i already pruned) on one sequence at a time, sum x_j^2
    token by token, then sort every output's scores with Python's sorted (ties: lower input).
    GPT-2's Conv1D holds its weight as (in, out): its outputs are the weight's columns."""
    model = copy.deepcopy(model)
    prefix = family_of(model).layers_path
    masks = {}
    for i, layer in enumerate(decoder_layers(model)):
        linears = layer_matrices(layer)
        per_output = {name: lin.weight.T if type(lin).__name__ == "Conv1D" else lin.weight
                      for name, lin in linears.items()}
        sq = {name: [0.0] * w.shape[1] for name, w in per_output.items()}

        def make_hook(name: str, sq: dict = sq):
            def hook(_m, inputs, _o):
                for token in inputs[0].reshape(-1, inputs[0].shape[-1]).tolist():
                    for j, x in enumerate(token):
                        sq[name][j] += x * x

            return hook

        def stop(_m, _i, _o):
            raise StopForward

        handles = [lin.register_forward_hook(make_hook(n)) for n, lin in linears.items()]
        handles.append(layer.register_forward_hook(stop))
        for seq in calibration:
            with contextlib.suppress(StopForward):
                model(input_ids=seq[None], use_cache=False)
        for h in handles:
            h.remove()
        for name, w in per_output.items():
            keep = torch.ones_like(w, dtype=torch.bool)
            k = math.floor(sparsity * w.shape[1])
            for r, row in enumerate(w.tolist()):
                scores = [abs(row[j]) * math.sqrt(sq[name][j]) for j in range(len(row))]
                for j in sorted(range(len(row)), key=lambda j: (scores[j], j))[:k]:
                    keep[r, j] = False
            with torch.no_grad():
                w.mul_(keep.to(w.dtype))
            masks[f"{prefix}.{i}.{name}"] = keep if w is linears[name].weight else keep.T
    return masks


@pytest.mark.parametrize("sparsity", [0.3, 0.5])
def test_wanda_equals_slow_twin(arch: str, sparsity: float) -> None:
    model = make_model(arch, n_layers=3, hidden=16)
    calib = random_ids(6, 12)  # longer than the sliding window: the masks matter
    expected = slow_wanda(model, calib, sparsity)
    fast = copy.deepcopy(model)
    got = prune.prune_wanda(fast, calib, sparsity, batch_size=4)
    assert got.keys() == expected.keys()
    for name in got:
        assert torch.equal(got[name], expected[name]), name
        per_output = got[name].T if ".c_" in name else got[name]  # GPT-2's Conv1D: (in, out)
        row_zeros = (~per_output).sum(dim=1)
        assert (row_zeros == math.floor(sparsity * per_output.shape[1])).all(), name


def test_wanda_differs_from_magnitude_and_uses_activations(arch: str) -> None:
    model = make_model(arch, n_layers=2)
    wanda = prune.prune_wanda(copy.deepcopy(model), random_ids(4, 16), 0.5, batch_size=4)
    mag = prune.prune_magnitude(copy.deepcopy(model), 0.5)
    assert any(not torch.equal(wanda[n], mag[n]) for n in wanda)


def test_wanda_tie_break_prefers_lower_column() -> None:
    w = torch.ones(2, 4)
    keep = prune.wanda_mask(w, torch.ones(4), 0.5)
    assert keep.tolist() == [[False, False, True, True]] * 2


def test_masks_round_trip_and_sparsity_report(tmp_path, arch: str) -> None:
    model = make_model(arch, dtype=torch.float32)
    masks = prune.prune_magnitude(model, 0.4)
    prune.save_masks(masks, tmp_path / "m.safetensors")
    loaded = prune.load_masks(tmp_path / "m.safetensors")
    assert all(torch.equal(loaded[n], masks[n]) for n in masks)
    report = prune.sparsity_report(model)
    total = sum(m.numel() for m in masks.values())
    zeros = sum(math.floor(0.4 * m.numel()) for m in masks.values())
    assert report["numel"] == total and report["zeros"] == zeros
    assert report["overall"] == pytest.approx(zeros / total)
