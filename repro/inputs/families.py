"""Where each decoder-only family keeps its parts: the one place that knows model layouts.

A family is found from the loaded (or meta-device) model's own modules, never from its name:
the first entry of `FAMILIES` whose stack, layers, embeddings, final norm and head all exist.
Everything else in repro reaches a model through this module: the stack to run without its
head (`stack`), the decoder layers (`decoder_layers`), and the prunable matrices of a layer
(`layer_matrices`), which are `nn.Linear` and GPT-2's `Conv1D`. A Conv1D stores its weight
as (in, out), transposed to nn.Linear's (out, in); `out_in` gives every matrix as
(out, in), the orientation Wanda's per-output comparison is defined on.

Layer calls need no family code: the layers are always called with the arguments the model
itself passes them (`repro.inputs.models.record_layer_calls`), whatever they are.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from repro.errors import ReproError


@dataclass(frozen=True)
class Family:
    """The attribute names of one family's parts (a CausalLM wraps a stack of layers)."""

    name: str
    """What repro calls the family in messages."""
    examples: str
    """Model classes known to share the layout, for messages and docs/profiles.md."""
    stack: str
    """Attribute of the CausalLM holding the decoder stack (embeddings, layers, final norm)."""
    layers: str
    """Attribute of the stack holding the decoder layers (an nn.ModuleList)."""
    embeddings: str
    """Attribute of the stack holding the token embedding."""
    final_norm: str
    """Attribute of the stack holding the norm applied after the last layer."""
    head: str = "lm_head"
    """Attribute of the CausalLM holding the unembedding."""

    @property
    def layers_path(self) -> str:
        """Module-name prefix of the layers, e.g. `model.layers` (mask and matrix names)."""
        return f"{self.stack}.{self.layers}"


FAMILIES = (
    Family("llama-like", "Llama, Gemma 2/3, Qwen2/3, Mistral, Phi-3, OLMo, SmolLM2",
           stack="model", layers="layers", embeddings="embed_tokens", final_norm="norm"),
    Family("gpt-neox", "GPT-NeoX, Pythia",
           stack="gpt_neox", layers="layers", embeddings="embed_in",
           final_norm="final_layer_norm"),
    Family("gpt-2", "GPT-2, DistilGPT-2",
           stack="transformer", layers="h", embeddings="wte", final_norm="ln_f"),
)


def _has_parts(model: nn.Module, family: Family) -> bool:
    stack = getattr(model, family.stack, None)
    return (isinstance(stack, nn.Module)
            and isinstance(getattr(stack, family.layers, None), nn.ModuleList)
            and isinstance(getattr(stack, family.embeddings, None), nn.Module)
            and isinstance(getattr(stack, family.final_norm, None), nn.Module)
            and isinstance(getattr(model, family.head, None), nn.Module))


def family_of(model: nn.Module) -> Family:
    """The model's family; a layout repro does not know is refused in one line."""
    for family in FAMILIES:
        if _has_parts(model, family):
            return family
    looked = ", ".join(f"{f.layers_path} ({f.name})" for f in FAMILIES)
    raise ReproError(
        f"{type(model).__name__} has none of the decoder layouts repro knows (looked for "
        f"{looked}, each with its embeddings, final norm and lm_head); use a decoder-only "
        "causal LM of one of these families, or add its layout to repro.inputs.families.FAMILIES"
    )


def stack(model: nn.Module) -> nn.Module:
    """The decoder stack: embeddings, layers, final norm, without the head."""
    return getattr(model, family_of(model).stack)


def _in_stack(model: nn.Module, part: str) -> Any:
    """The stack's module named by the family's field `part` (layers, embeddings, ...)."""
    family = family_of(model)
    return getattr(getattr(model, family.stack), getattr(family, part))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return _in_stack(model, "layers")


def embeddings(model: nn.Module) -> nn.Module:
    return _in_stack(model, "embeddings")


def final_norm(model: nn.Module) -> nn.Module:
    return _in_stack(model, "final_norm")


def head(model: nn.Module) -> nn.Module:
    return getattr(model, family_of(model).head)


# ---- prunable matrices ----------------------------------------------------------------------

@functools.cache  # asked for every module of every layer; imported once
def _conv1d() -> type:
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def is_matrix(module: nn.Module) -> bool:
    """Whether pruning touches the module: nn.Linear, and GPT-2's Conv1D."""
    return isinstance(module, (nn.Linear, _conv1d()))


def weight_of(module: nn.Module) -> torch.Tensor:
    """A prunable matrix's weight as the module stores it (Conv1D: (in, out)); typed, where
    `module.weight` on an nn.Module is a tensor or a module to a type checker."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)  # nn.Linear's and Conv1D's are Parameters
    return weight


def out_in(module: nn.Module) -> torch.Tensor:
    """The module's weight as (out_features, in_features): a view, so in-place edits of it
    edit the weight."""
    weight = weight_of(module)
    return weight.T if isinstance(module, _conv1d()) else weight


def to_weight_shape(module: nn.Module, out_in_tensor: torch.Tensor) -> torch.Tensor:
    """A tensor laid out as `out_in(module)` (a mask, a score) in the weight's own layout."""
    return out_in_tensor.T if isinstance(module, _conv1d()) else out_in_tensor


def in_features(module: nn.Module) -> int:
    return out_in(module).shape[1]


def layer_matrices(layer: nn.Module) -> dict[str, nn.Module]:
    """Every prunable matrix inside one decoder layer, by its name within the layer."""
    return {name: mod for name, mod in layer.named_modules() if is_matrix(mod)}


def prunable_matrices(model: nn.Module) -> dict[str, nn.Module]:
    """All pruned matrices by their full module name (embeddings, head and norms excluded)."""
    prefix = family_of(model).layers_path
    return {f"{prefix}.{i}.{name}": mod
            for i, layer in enumerate(decoder_layers(model))
            for name, mod in layer_matrices(layer).items()}
