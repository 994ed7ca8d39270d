"""The family registry: each supported layout is found from the model's own modules, its parts
compose the model's forward, its prunable matrices are exactly the Linear/Conv1D modules of
its layers, GPT-2's Conv1D is pruned as the nn.Linear it equals, and an unknown layout is
refused in one line naming what was looked for."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import ARCHS, make_model, random_ids
from torch import nn

from repro.errors import ReproError
from repro.inputs import families
from repro.inputs.models import record_layer_calls, run_layer
from repro.science import prune

FAMILY = {"Gemma3ForCausalLM": "llama-like", "Gemma2ForCausalLM": "llama-like",
          "LlamaForCausalLM": "llama-like", "Qwen2ForCausalLM": "llama-like",
          "GPTNeoXForCausalLM": "gpt-neox", "GPT2LMHeadModel": "gpt-2"}
MATRICES_PER_LAYER = {"llama-like": 7, "gpt-neox": 4, "gpt-2": 4}


def test_every_test_architecture_has_its_family() -> None:
    assert set(FAMILY) == set(ARCHS)


def test_family_and_parts_are_the_models_own(arch: str) -> None:
    model = make_model(arch, n_layers=3)
    assert families.family_of(model).name == FAMILY[arch]
    assert families.embeddings(model) is model.get_input_embeddings()
    assert families.head(model) is model.get_output_embeddings()
    assert len(families.decoder_layers(model)) == 3


def _logits_from_parts(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Layer by layer from the recorded calls, then the registry's final norm and head."""
    h, calls = record_layer_calls(model, ids)
    for layer, call in zip(families.decoder_layers(model), calls, strict=True):
        h = run_layer(layer, h, call)
    logits = families.head(model)(families.final_norm(model)(h))
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma 2 soft-caps its logits after the head
        logits = torch.tanh(logits / cap) * cap
    return logits


def test_layers_final_norm_and_head_compose_the_forward(arch: str) -> None:
    """The registry's parts give the model's own logits: they are the parts the model really
    uses."""
    model = make_model(arch, n_layers=3)
    ids = random_ids(2, 16)
    torch.testing.assert_close(_logits_from_parts(model, ids), model(input_ids=ids).logits,
                               rtol=0, atol=1e-12)


def test_prunable_matrices_are_every_linear_or_conv1d_of_the_layers(arch: str) -> None:
    model = make_model(arch, n_layers=2)
    found = families.prunable_matrices(model)
    modules = dict(model.named_modules())
    prefix = families.family_of(model).layers_path
    expected = {n for n, m in modules.items() if n.startswith(prefix + ".")
                and type(m).__name__ in ("Linear", "Conv1D")}
    assert set(found) == expected
    assert len(found) == 2 * MATRICES_PER_LAYER[FAMILY[arch]]
    assert all(modules[n] is m for n, m in found.items())
    assert families.head(model) not in found.values()


OTHER_LLAMA_LIKE = ("MistralForCausalLM", "Phi3ForCausalLM", "OlmoForCausalLM",
                    "Olmo2ForCausalLM", "Qwen3ForCausalLM", "GemmaForCausalLM")
"""The other families docs/profiles.md names as llama-like: found, composed and pruned the
same."""


@pytest.mark.parametrize("arch", OTHER_LLAMA_LIKE)
def test_other_llama_like_families_are_found_and_compose(arch: str) -> None:
    import transformers

    config = getattr(transformers, arch.replace("ForCausalLM", "Config"))(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config).double().eval().requires_grad_(False)
    assert families.family_of(model).name == "llama-like"
    ids = random_ids(2, 12)
    torch.testing.assert_close(_logits_from_parts(model, ids), model(input_ids=ids).logits,
                               rtol=0, atol=1e-12)
    masks = prune.prune_wanda(model, ids, 0.5, batch_size=2)
    assert set(masks) == set(families.prunable_matrices(model)) and masks


def _as_linears(model: nn.Module) -> nn.Module:
    """The same GPT-2 with every Conv1D replaced by the nn.Linear it equals (weight.T)."""
    twin = copy.deepcopy(model)
    for name, mod in list(twin.named_modules()):
        if type(mod).__name__ == "Conv1D":
            lin = nn.Linear(mod.weight.shape[0], mod.weight.shape[1], dtype=mod.weight.dtype)
            with torch.no_grad():
                lin.weight.copy_(mod.weight.T)
                lin.bias.copy_(mod.bias)
            parent, _, child = name.rpartition(".")
            setattr(twin.get_submodule(parent), child, lin)
    return twin


@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_conv1d_is_pruned_as_the_linear_it_equals(method: str) -> None:
    model = make_model("GPT2LMHeadModel", n_layers=3)
    twin = _as_linears(model)
    ids = random_ids(4, 16)
    torch.testing.assert_close(twin(input_ids=ids).logits, model(input_ids=ids).logits,
                               rtol=0, atol=1e-12)
    if method == "wanda":
        got = prune.prune_wanda(model, ids, 0.5, batch_size=2)
        want = prune.prune_wanda(twin, ids, 0.5, batch_size=2)
    else:
        got, want = prune.prune_magnitude(model, 0.5), prune.prune_magnitude(twin, 0.5)
    assert got.keys() == want.keys() and len(got) == 12
    for name in got:
        assert torch.equal(got[name], want[name].T), name
    torch.testing.assert_close(twin(input_ids=ids).logits, model(input_ids=ids).logits,
                               rtol=0, atol=1e-12)


def test_an_unknown_layout_is_refused_naming_what_was_looked_for() -> None:
    import transformers

    config = transformers.OPTConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2,
                                    ffn_dim=64, num_attention_heads=4, word_embed_proj_dim=32)
    model = transformers.OPTForCausalLM(config)  # layers at model.decoder.layers
    with pytest.raises(ReproError) as err:
        families.decoder_layers(model)
    message = str(err.value)
    assert "\n" not in message and message.startswith("OPTForCausalLM has none of")
    for path in ("model.layers", "gpt_neox.layers", "transformer.h"):
        assert path in message
