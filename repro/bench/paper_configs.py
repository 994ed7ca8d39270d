"""The paper's three architectures as declared configurations, so they can be built without
a download: `repro bench` times the hot paths on them with random weights.

Values are copied from each model's public `config.json` on the Hugging Face Hub:
  - https://huggingface.co/google/gemma-3-1b-pt/blob/main/config.json (Gemma3ForCausalLM,
    model_type gemma3_text; sliding_window_pattern 6 -> every 6th layer global,
    rope_local_base_freq 10000 for the sliding layers, rope_theta 1e6 for the global ones);
  - https://huggingface.co/google/gemma-2-2b/blob/main/config.json (Gemma2ForCausalLM;
    sliding and global layers alternate, soft-capping 50 / 30);
  - https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json (LlamaForCausalLM;
    llama3 rope scaling, tied embeddings).
Legacy keys (rope_theta, rope_local_base_freq, sliding_window_pattern, rope_scaling) are
written here in transformers 5's form (rope_parameters, layer_types). Parameter counts agree
with `repro.inputs.footprint.KNOWN_MODELS` (tests/test_bench.py checks them on the meta device).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class PaperArch:
    """One of the paper's models: its study key, Hub id, config class and config values."""

    key: str
    """Model key in studies/paper.toml."""
    source: str
    """Hugging Face Hub id the values come from."""
    config_class: str
    """transformers configuration class."""
    probe_layer: int
    """The study's probe layer (studies/paper.toml)."""
    values: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the configuration class, as in the public config.json."""

    @property
    def n_layers(self) -> int:
        return int(self.values["num_hidden_layers"])


def _gemma3_layer_types(n: int, pattern: int = 6) -> list[str]:
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]


def _gemma2_layer_types(n: int) -> list[str]:
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]


PAPER_ARCHS: dict[str, PaperArch] = {
    "gemma-3-1b": PaperArch("gemma-3-1b", "google/gemma-3-1b-pt", "Gemma3TextConfig", 13, {
        "vocab_size": 262144, "hidden_size": 1152, "intermediate_size": 6912,
        "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "query_pre_attn_scalar": 256,
        "sliding_window": 512, "attn_logit_softcapping": None, "final_logit_softcapping": None,
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                            "sliding_attention": {"rope_type": "default",
                                                  "rope_theta": 10000.0}},
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "tie_word_embeddings": True}),
    "gemma-2-2b": PaperArch("gemma-2-2b", "google/gemma-2-2b", "Gemma2Config", 12, {
        "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "query_pre_attn_scalar": 256,
        "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "tie_word_embeddings": True}),
    "llama-3.2-1b": PaperArch("llama-3.2-1b", "meta-llama/Llama-3.2-1B", "LlamaConfig", 8, {
        "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5, "mlp_bias": False, "attention_bias": False,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                            "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                            "original_max_position_embeddings": 8192},
        "bos_token_id": 128000, "eos_token_id": 128001, "tie_word_embeddings": True}),
}


def build_config(key: str, n_layers: int | None = None) -> Any:
    """The model's configuration; `n_layers` keeps only the first layers (same layer types)."""
    import transformers

    arch = PAPER_ARCHS[key]
    values = dict(arch.values)
    n = arch.n_layers if n_layers is None else n_layers
    if not 1 <= n <= arch.n_layers:
        raise ValueError(f"{key}: n_layers must lie in 1..{arch.n_layers}, got {n}")
    if arch.config_class == "Gemma3TextConfig":
        values["layer_types"] = _gemma3_layer_types(arch.n_layers)[:n]
    elif arch.config_class == "Gemma2Config":
        values["layer_types"] = _gemma2_layer_types(arch.n_layers)[:n]
    values["num_hidden_layers"] = n
    config = getattr(transformers, arch.config_class)(**values)
    config.use_cache = False
    return config


def build_model(key: str, *, n_layers: int | None = None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """The architecture with random weights (Linear and embeddings uniform with std 0.02, norms
    as the family initialises them), in eval mode.

    Built on the meta device and filled in place: transformers' own initialisation of a 1B
    model takes longer than the benchmarks that use it, and the values do not matter here.
    """
    from transformers import AutoModelForCausalLM

    config = build_config(key, n_layers)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                _tile_random(module.weight, gen)
            elif isinstance(module, nn.Linear):
                # uniform with std 0.02: faster than normal_, and no tied values in the scores
                module.weight.uniform_(-_HALF_WIDTH, _HALF_WIDTH, generator=gen)
            elif any(True for _ in module.parameters(recurse=False)):
                model._init_weights(module)  # norms: the family's own init (0 or 1 offsets)
        _restore_buffers(model, config)
    return model.eval().requires_grad_(False)


_HALF_WIDTH = 0.02 * 3**0.5
EMBED_ROWS = 4096
"""Distinct random rows of a benchmark model's embedding: filling 262144 x 1152 values one by
one costs seconds, and only the lookup and the LM-head matmul (value-blind) are timed."""


def _tile_random(weight: torch.Tensor, gen: torch.Generator) -> None:
    block = torch.empty(min(EMBED_ROWS, weight.shape[0]), weight.shape[1], dtype=weight.dtype,
                        device=weight.device).uniform_(-_HALF_WIDTH, _HALF_WIDTH, generator=gen)
    for start in range(0, weight.shape[0], len(block)):
        rows = weight[start:start + len(block)]
        rows.copy_(block[:len(rows)])


def _restore_buffers(model: nn.Module, config: Any) -> None:
    """Recompute the buffers that `to_empty` left uninitialised (computed at init, not loaded):
    rotary tables and Gemma's embedding scale sqrt(hidden_size). Any other buffer is an error
    rather than silent garbage."""
    rotary = model.get_submodule("model.rotary_emb")
    fresh = dict(type(rotary)(config).named_buffers())
    for name, buf in model.named_buffers():
        if name.startswith("model.rotary_emb."):
            buf.copy_(fresh[name.removeprefix("model.rotary_emb.")])
        elif name.endswith("embed_scale"):
            buf.fill_(config.hidden_size**0.5)
        else:
            raise RuntimeError(f"paper_configs: no rule to initialise buffer {name}")


def param_count(key: str, n_layers: int | None = None) -> int:
    """Parameters of the architecture (tied embeddings counted once), built on 'meta'."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(build_config(key, n_layers))
    return sum(p.numel() for p in model.parameters())


def layer_shapes(key: str) -> list[tuple[int, int]]:
    """(out, in) of every Linear of one decoder layer: q, k, v, o, gate, up, down."""
    v = PAPER_ARCHS[key].values
    d, h, kv, hd, ff = (v["hidden_size"], v["num_attention_heads"], v["num_key_value_heads"],
                        v["head_dim"], v["intermediate_size"])
    return [(h * hd, d), (kv * hd, d), (kv * hd, d), (d, h * hd), (ff, d), (ff, d), (d, ff)]


def layer_params(key: str) -> int:
    """Parameters of the Linear matrices of one decoder layer (what each token multiplies)."""
    return sum(rows * cols for rows, cols in layer_shapes(key))
