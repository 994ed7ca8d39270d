"""Shared fixtures: small random models of the study's three architecture classes and of the
other families repro supports (repro.inputs.families): Qwen2 (Llama-like), GPT-NeoX and GPT-2."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from repro.science.numerics import pin_cpu

# The same CPU arithmetic as `repro all`, before any test runs a kernel: in-process tests
# compute what the pipeline computes, and the CLI called in-process finds the pins in place.
pin_cpu()

ARCHS = ("Gemma3ForCausalLM", "Gemma2ForCausalLM", "LlamaForCausalLM", "Qwen2ForCausalLM",
         "GPTNeoXForCausalLM", "GPT2LMHeadModel")


def make_model(
    arch: str,
    *,
    n_layers: int = 4,
    hidden: int = 32,
    vocab: int = 97,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.nn.Module:
    """A randomly initialised model of `arch` with sliding-window layers where it has them
    (GPT-2 with its Conv1D matrices, GPT-NeoX with partial rotary and parallel residuals)."""
    import transformers

    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    if arch == "Gemma3ForCausalLM":
        types = ["sliding_attention"] * (n_layers - 1) + ["full_attention"]
        config = transformers.Gemma3TextConfig(
            **common, sliding_window=6, layer_types=types, query_pre_attn_scalar=hidden // 4
        )
    elif arch == "Gemma2ForCausalLM":
        config = transformers.Gemma2Config(
            **common, sliding_window=6, query_pre_attn_scalar=hidden // 4
        )
    elif arch == "GPTNeoXForCausalLM":
        config = transformers.GPTNeoXConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
            num_hidden_layers=n_layers, num_attention_heads=4, rotary_pct=0.5,
            max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
        )
    elif arch == "GPT2LMHeadModel":
        config = transformers.GPT2Config(
            vocab_size=vocab, n_embd=hidden, n_layer=n_layers, n_head=4, n_positions=128,
            bos_token_id=1, eos_token_id=2,
        )
    else:
        config = getattr(transformers, arch.replace("ForCausalLM", "Config"))(**common)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(config).to(dtype).eval().requires_grad_(False)
    with torch.no_grad():  # Gemma inits norms to zero offsets; perturb so norms matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


def random_ids(n: int, length: int, vocab: int = 97, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, length), generator=g)
    ids[:, 0] = 1
    return ids


def feed_layer(model: torch.nn.Module, layer: torch.nn.Module, hooks: dict,
               calibration: torch.Tensor) -> None:
    """The twins' way of seeing a layer's inputs: forward hooks (module -> hook) on the
    layer's matrices, the model run one sequence at a time and stopped after `layer`."""
    from repro.inputs.models import StopForward

    def stop(_m, _i, _o):
        raise StopForward

    handles = [m.register_forward_hook(hook) for m, hook in hooks.items()]
    handles.append(layer.register_forward_hook(stop))
    for seq in calibration:
        with contextlib.suppress(StopForward):
            model(input_ids=seq[None], use_cache=False)
    for h in handles:
        h.remove()


def word_tokenizer(words: list[str]):
    """A whitespace word-level tokenizer that prepends <bos>, as Gemma's and Llama's do."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


@pytest.fixture(scope="session")
def installed_tiny(tmp_path_factory: pytest.TempPathFactory):
    """The package installed as the image installs it, outside the checkout, and the tiny
    profile run through entrypoint.sh as `docker run repro:cpu` runs it (tests/installed.py).
    One run for the session: tests/test_container.py checks the install and its verdict,
    tests/test_end_to_end.py the run itself."""
    from installed import install_and_run

    return install_and_run(tmp_path_factory.mktemp("installed"))


def tiny_llama_study(name: str, model: Path, conditions: str, calibration: int = 8,
                     perplexity: tuple[int, int] = (4, 64)) -> str:
    """A study file of the tiny Llama at `model` with one [[conditions]] entry (`conditions`,
    its lines after `model =`), for the tests that run one method's prune and perplexity
    stages: `perplexity` is (sequences, length) of its joined perplexity stream."""
    return f"""\
[study]
name = "{name}"
[models.llama-tiny]
source = "{model}"
architecture = "LlamaForCausalLM"
n_layers = 6
probe_layer = 3
[[conditions]]
model = "llama-tiny"
{conditions}
[sae]
width = 64
k = 4
lr = 1e-3
batch_tokens = 256
[data.calibration]
source = {{ kind = "tiny", split = "calibration" }}
sampling = "windows"
n_sequences = {calibration}
seq_len = 64
[data.sae_train]
source = {{ kind = "tiny", split = "sae_train" }}
n_sequences = 4
seq_len = 64
[data.eval]
source = {{ kind = "tiny", split = "eval" }}
n_sequences = 4
seq_len = 64
[data.perplexity]
source = {{ kind = "tiny", split = "ppl" }}
sampling = "joined"
n_sequences = {perplexity[0]}
seq_len = {perplexity[1]}
"""
