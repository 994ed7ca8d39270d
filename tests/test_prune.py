"""Pruning: exact counts, untouched modules, and Wanda against a slow, obviously-correct twin."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import feed_layer, make_model, random_ids

from repro.errors import ReproError
from repro.inputs.families import (
    decoder_layers,
    embeddings,
    family_of,
    final_norm,
    layer_matrices,
    prunable_matrices,
)
from repro.science import prune
from repro.study.methods import UNSTRUCTURED_PATTERN, Pattern


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


def reference_lowest(scores: list[float], sparsity: float, pattern: Pattern) -> list[int]:
    """The inputs one output row loses, by the reference's loops with Python's sorted (ties:
    lower input): the floor(s * in) lowest scores, or for N:M, at every column ii with
    ii % M == 0, the N lowest of columns ii .. ii + M - 1."""
    def lowest(cols: range, k: int) -> list[int]:
        return sorted(cols, key=lambda j: (scores[j], j))[:k]

    if not pattern.m:
        return lowest(range(len(scores)), math.floor(sparsity * len(scores)))
    return [j for ii in range(len(scores)) if ii % pattern.m == 0
            for j in lowest(range(ii, ii + pattern.m), pattern.n)]


def slow_magnitude_n_m(model: torch.nn.Module, pattern: Pattern) -> dict:
    """The reference's N:M magnitude loop, output row by output row, on |W|."""
    masks = {}
    for name, lin in prunable_matrices(model).items():
        w = lin.weight.T if type(lin).__name__ == "Conv1D" else lin.weight
        keep = torch.ones_like(w, dtype=torch.bool)
        for r, row in enumerate(w.tolist()):
            for j in reference_lowest([abs(x) for x in row], 0.5, pattern):
                keep[r, j] = False
        masks[name] = keep if w is lin.weight else keep.T
    return masks


def slow_wanda(model: torch.nn.Module, calibration: torch.Tensor, sparsity: float,
               pattern: Pattern = UNSTRUCTURED_PATTERN) -> dict:
    """The reference algorithm spelled out: for layer i, rebuild its inputs from scratch by
    running the whole model (layers < i already pruned) on one sequence at a time, sum x_j^2
    token by token, then pick every output's lowest scores (`reference_lowest`).
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

        feed_layer(model, layer, {lin: make_hook(n) for n, lin in linears.items()}, calibration)
        for name, w in per_output.items():
            keep = torch.ones_like(w, dtype=torch.bool)
            for r, row in enumerate(w.tolist()):
                scores = [abs(row[j]) * math.sqrt(sq[name][j]) for j in range(len(row))]
                for j in reference_lowest(scores, sparsity, pattern):
                    keep[r, j] = False
            with torch.no_grad():
                w.mul_(keep.to(w.dtype))
            masks[f"{prefix}.{i}.{name}"] = keep if w is linears[name].weight else keep.T
    return masks


@pytest.mark.parametrize(("sparsity", "pattern"),
                         [(0.3, "unstructured"), (0.5, "unstructured"), (0.5, "2:4"),
                          (0.5, "4:8"), (0.25, "1:4")])
def test_wanda_equals_slow_twin(arch: str, sparsity: float, pattern: str) -> None:
    model = make_model(arch, n_layers=3, hidden=16)
    calib = random_ids(6, 12)  # longer than the sliding window: the masks matter
    p = Pattern.parse(pattern)
    expected = slow_wanda(model, calib, sparsity, p)
    fast = copy.deepcopy(model)
    got = prune.prune_wanda(fast, calib, sparsity, batch_size=4, pattern=p)
    assert got.keys() == expected.keys()
    for name in got:
        assert torch.equal(got[name], expected[name]), name
        per_output = got[name].T if ".c_" in name else got[name]  # GPT-2's Conv1D: (in, out)
        if p.m:  # every group of M inputs of every output loses exactly N
            groups = (~per_output).reshape(per_output.shape[0], -1, p.m).sum(dim=2)
            assert (groups == p.n).all(), name
        else:
            row_zeros = (~per_output).sum(dim=1)
            assert (row_zeros == math.floor(sparsity * per_output.shape[1])).all(), name


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4"])
def test_magnitude_n_m_equals_slow_twin(arch: str, pattern: str) -> None:
    model = make_model(arch, n_layers=3, hidden=16)
    p = Pattern.parse(pattern)
    expected = slow_magnitude_n_m(model, p)
    before = {n: m.weight.clone() for n, m in prunable_matrices(model).items()}
    got = prune.prune_magnitude(model, p.sparsity, p)
    for name, mod in prunable_matrices(model).items():
        assert torch.equal(got[name], expected[name]), name
        assert torch.equal(mod.weight, before[name] * got[name]), name
    unstructured = prune.magnitude_mask(before[name], p.sparsity)  # the negative control
    assert not torch.equal(unstructured, got[name])


def test_n_m_ties_go_to_the_lower_column_and_groups_must_be_whole() -> None:
    keep = prune.n_m_mask(torch.ones(2, 8), Pattern(2, 4))
    assert keep.tolist() == [[False, False, True, True] * 2] * 2
    with pytest.raises(ReproError, match="whole groups of 4"):
        prune.n_m_mask(torch.ones(2, 6), Pattern(2, 4))


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


def test_the_registry_binds_every_declared_method_and_no_other() -> None:
    """repro/study/methods.py declares, repro/science/pruners.py binds: the two name the same
    methods, and each function prunes as declared (calibration, weight updates, patterns,
    whether it removes weights)."""
    from repro.science import pruners
    from repro.study.methods import EXAMPLE, METHODS, PRUNING_METHODS

    assert set(pruners.PRUNERS) == set(PRUNING_METHODS) == set(METHODS) - {"dense"}
    model = make_model("LlamaForCausalLM", n_layers=2, hidden=16)
    calib = random_ids(4, 12)
    for name, found in pruners.PRUNERS.items():
        assert found.method is METHODS[name]
        sparsity = 0.5 if found.method.prunes else 0.0
        for pattern in (EXAMPLE[kind] for kind in found.method.patterns):
            pruned = copy.deepcopy(model)
            masks = pruners.prune_variant(pruned, name, sparsity, pattern, calib, 2)
            assert prune.removed(masks) == sparsity, (name, pattern)
            moved = any(not torch.equal(m.weight, d.weight * masks[n])
                        for (n, m), d in zip(prunable_matrices(pruned).items(),
                                             prunable_matrices(model).values(), strict=True))
            assert moved == found.method.updates_weights, (name, pattern)
        if found.method.needs_calibration:
            with pytest.raises(ReproError, match="needs calibration"):
                pruners.prune_variant(copy.deepcopy(model), name, 0.5, "unstructured", None, 2)
    with pytest.raises(ReproError, match="magnitude, wanda, sparsegpt"):
        pruners.pruner("obd", "unstructured")
    with pytest.raises(ReproError, match="N:M with 0 < N < M"):
        pruners.pruner("wanda", "4:2")
