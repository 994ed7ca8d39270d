"""Loading the study's language models, and running them one decoder layer at a time.

Any Hugging Face causal LM of a family in `repro.inputs.families` works (where the layers,
embeddings, final norm and head sit is known there and nowhere else). Differences inside a family
(rotary tables, sliding-window masks, GPT-2's positional arguments) are never special-cased because
layers are always called with the arguments the model itself passes them (see `record_layer_calls`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from repro.errors import ReproError
from repro.files import path_problem
from repro.inputs.families import decoder_layers, stack
from repro.study.sources import ModelSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hf_token() -> str | None:
    """The Hub token from the environment (never logged or stored)."""
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def location(spec: ModelSpec) -> str:
    """What `from_pretrained` reads: the Hub id, the local folder, or a packaged model's
    converted folder (repro.inputs.packaged)."""
    if spec.is_packaged:
        from repro.inputs.packaged import model_folder

        return str(model_folder(spec.source))
    return spec.source


def is_cached(spec: ModelSpec) -> bool:
    """Whether the model's config is already in the local Hugging Face cache (or on disk)."""
    if spec.is_packaged:
        from repro.inputs.packaged import is_fetched, model_folder

        return is_fetched(model_folder(spec.source))
    if spec.is_local:
        return os.path.isdir(spec.source) and os.path.isfile(
            os.path.join(spec.source, "config.json")
        )
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(spec.source, "config.json", revision=spec.revision)
    return isinstance(hit, str)


def check_access(spec: ModelSpec) -> None:
    """Fail early, in one line, where a load is bound to fail."""
    if spec.is_packaged:
        if not is_cached(spec):
            raise ReproError(f"model {spec.key} ({spec.source}) is not fetched; run `repro "
                             "fetch` with this study first (it downloads the package by name)")
        return
    if spec.is_local:
        if not is_cached(spec):
            config = os.path.join(spec.source, "config.json")
            what = (f"{config} {path_problem(Path(config))}" if os.path.isdir(spec.source)
                    else f"no model at {spec.source}")
            raise ReproError(f"model {spec.key}: {what}; run `repro build-tiny-assets` or fix "
                             f"models.{spec.key}.source")
        return
    if is_cached(spec):
        return
    if hub_offline():
        raise ReproError(
            f"model {spec.key} ({spec.source}) is not in the cache and HF_HUB_OFFLINE "
            "is set; run `repro fetch` with network access first"
        )
    if spec.gated and not hf_token():
        raise ReproError(
            f"model {spec.key} ({spec.source}) is gated and HF_TOKEN is not set; "
            "accept its licence on huggingface.co and export HF_TOKEN=..."
        )


def resolve_device(study_device: str, requested: str | None) -> torch.device:
    """The device to compute on: --device if given, else the study's; CUDA must exist."""
    name = requested or study_device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ReproError(
            "this profile needs a CUDA GPU and none is visible; run --profile tiny "
            "on a CPU, or start the container with --gpus all"
        )
    if name != "cpu" and not re.fullmatch(r"cuda(:[0-9]{1,4})?", name):
        raise ReproError(f"--device {name!r}: use cpu, cuda, cuda:N or auto")
    if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
        raise ReproError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA "
                         "GPU(s), numbered from 0; pick one of them (--device, LOCAL_RANK)")
    return torch.device(name)


def load_tokenizer(spec: ModelSpec) -> Any:
    from transformers import AutoTokenizer

    check_access(spec)
    try:
        return AutoTokenizer.from_pretrained(location(spec), revision=spec.revision,
                                             token=hf_token())
    except OSError as exc:
        raise ReproError(_load_failure(spec, exc)) from None


def load_model(spec: ModelSpec, *, dtype: str, device: torch.device) -> PreTrainedModel:
    """The model in eval mode, gradients off, checked against the study's declaration."""
    from transformers import AutoModelForCausalLM

    check_access(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location(spec), revision=spec.revision, token=hf_token(), dtype=DTYPES[dtype]
        )
    except OSError as exc:
        raise ReproError(_load_failure(spec, exc)) from None
    if type(model).__name__ != spec.architecture:
        raise ReproError(
            f"model {spec.key}: loaded {type(model).__name__}, the study says "
            f"{spec.architecture}; fix models.{spec.key}.architecture"
        )
    n = len(decoder_layers(model))
    if n != spec.n_layers:
        raise ReproError(
            f"model {spec.key}: has {n} decoder layers, the study says "
            f"{spec.n_layers}; fix models.{spec.key}.n_layers"
        )
    model.config.use_cache = False
    return to_device(model, device).eval().requires_grad_(False)


def to_device(model: PreTrainedModel, device: torch.device) -> PreTrainedModel:
    """`model.to(device)`, which moves the model in place and returns it, typed: transformers
    wraps its `to` with functools.wraps, which mypy cannot bind as a method."""
    module: nn.Module = model
    module.to(device)
    return model


def _load_failure(spec: ModelSpec, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    token = hf_token()
    if token:
        first = first.replace(token, "***")
    return (
        f"model {spec.key} ({spec.source}) could not be loaded: {first[:200]}; check the id, "
        "your licence acceptance and HF_TOKEN, or run `repro fetch` while online"
    )


class StopForward(Exception):
    """Raised by a hook to end a forward pass once what is needed has been seen."""


@dataclass
class LayerCall:
    """What the model passed to one decoder layer, apart from the hidden states."""

    args: tuple
    kwargs: dict[str, Any]


class _Recorder(nn.Module):
    """Stands in for a decoder layer: records its call and returns the input unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[LayerCall] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.inputs.append(hidden_states)
        self.calls.append(LayerCall(args, kwargs))
        return hidden_states


@contextmanager
def layers_swapped(model: nn.Module, replacements: dict[int, nn.Module]) -> Iterator[None]:
    """Decoder layers temporarily replaced by index; the originals always come back."""
    layers = decoder_layers(model)
    originals = {i: layers[i] for i in replacements}
    for i, module in replacements.items():
        layers[i] = module
    try:
        yield
    finally:
        for i, module in originals.items():
            layers[i] = module


def record_layer_calls(
    model: nn.Module, input_ids: torch.Tensor
) -> tuple[torch.Tensor, list[LayerCall]]:
    """Hidden states entering layer 0 and the exact arguments of every layer's call.

    The layers are swapped for recorders, so this costs an embedding lookup and the model's own
    mask and rotary construction, nothing more. Calling layer i as `layer(h, *c.args, **c.kwargs)`
    then reproduces the model's forward one layer at a time, whatever the family (Gemma 2/3 pass
    per-layer sliding-window masks and local/global rotary tables; Llama one of each).
    """
    recorders = [_Recorder() for _ in decoder_layers(model)]
    with layers_swapped(model, dict(enumerate(recorders))), torch.no_grad():
        stack(model)(input_ids=input_ids, use_cache=False)
    return recorders[0].inputs[0], [rec.calls[0] for rec in recorders]


def run_layer(layer: nn.Module, hidden: torch.Tensor, call: LayerCall) -> torch.Tensor:
    out = layer(hidden, *call.args, **call.kwargs)
    return out[0] if isinstance(out, tuple) else out
