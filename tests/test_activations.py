"""Probe capture equals hidden_states[L + 1], stops after the probe layer, and round-trips."""

from __future__ import annotations

import torch
from conftest import make_model, random_ids

from repro.inputs.families import decoder_layers, final_norm, stack
from repro.inputs.models import record_layer_calls, run_layer
from repro.science import activations
from repro.science.perplexity import perplexity


def test_probe_equals_hidden_states(arch: str) -> None:
    model = make_model(arch, n_layers=4)
    ids = random_ids(3, 20)
    full = model(input_ids=ids, output_hidden_states=True).hidden_states
    for layer in range(3):  # the last entry is after the final norm in some families
        got = activations.probe(model, ids, layer)
        torch.testing.assert_close(got, full[layer + 1], rtol=0, atol=1e-12)


def test_probe_stops_after_the_probe_layer(arch: str) -> None:
    model = make_model(arch, n_layers=4)
    called = []
    for i, layer in enumerate(decoder_layers(model)):
        layer.register_forward_pre_hook(lambda _m, _a, i=i: called.append(i))
    activations.probe(model, random_ids(1, 8), 1)
    assert called == [0, 1]


def test_layer_by_layer_replay_equals_forward(arch: str) -> None:
    model = make_model(arch, n_layers=4)
    ids = random_ids(2, 20)
    h, calls = record_layer_calls(model, ids)
    for layer, call in zip(decoder_layers(model), calls, strict=True):
        h = run_layer(layer, h, call)
    expected = stack(model)(input_ids=ids).last_hidden_state
    torch.testing.assert_close(final_norm(model)(h), expected, rtol=0, atol=1e-12)


def test_chunks_round_trip(tmp_path, arch: str) -> None:
    model = make_model(arch, dtype=torch.float32)
    ids = random_ids(10, 8)
    names = activations.write_chunks(
        model, ids, 2, tmp_path, batch_size=3, sequences_per_chunk=4, dtype=torch.float32
    )
    assert names == ["acts-00000.safetensors", "acts-00001.safetensors", "acts-00002.safetensors"]
    chunks = list(activations.read_chunks(tmp_path))
    acts = torch.cat([a for a, _ in chunks])
    tokens = torch.cat([t for _, t in chunks])
    assert torch.equal(tokens, ids)
    torch.testing.assert_close(acts, activations.probe(model, ids, 2))


def test_perplexity_matches_hand_computation(arch: str) -> None:
    model = make_model(arch)
    ids = random_ids(3, 10)
    logits = model(input_ids=ids).logits
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(-1, ids[:, 1:, None]).mean()
    assert abs(perplexity(model, ids, batch_size=2) - float(nll.exp())) < 1e-9
