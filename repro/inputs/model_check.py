"""A model folder checked before a run writes anything: `repro all` and `repro prune` call
`check_model` from their preflight (repro.inputs.doctor.preflight).

What is read, in order, each problem one line naming the model, the file and the field:
1. config.json: a JSON object whose sizes the pipeline reads (hidden_size, layers, heads,
   vocabulary, positions, ...) are whole numbers >= 1 (`SIZE_RULE`; booleans and text refused),
   whose attention heads divide into key/value heads, whose dtype is a torch dtype;
2. transformers' own config class for its model_type (`AutoConfig`), which validates the rest;
3. the model built from that config on the meta device (no weight read): the study's
   architecture, a decoder layout repro knows, its layer count and positions, and every
   prunable matrix's inputs in whole groups of M for each N:M pattern the study prunes it with;
4. the weights: complete safetensors files whose tensors have the shapes the config builds
   (a config edited apart from its weights is refused here, not deep inside loading);
5. the tokenizer, loadable and no larger than the embedding;
6. the study's SAE width against this machine's memory, with the model's width.
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.files import path_problem
from repro.inputs import hubcache
from repro.study.rules import FieldError, whole
from repro.study.sources import ModelSpec
from repro.study.spec import Study

SIZE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size", "head_dim",
               "max_position_embeddings", "n_embd", "n_layer", "n_head", "n_positions",
               "n_inner", "ffn_dim", "sliding_window")
"""Sizes of config.json that build the model (Llama-like names, GPT-2's and OPT's)."""
SIZE_RULE = whole(1, 2**24, "a size of the model; 0 heads or layers build nothing",
                  optional=True)
MATCH_BYTES_PER_PAIR = 24
"""Matching two SAEs of width w holds w x w cosines: float32, scipy's float64 copy and its
work arrays, 22.4 bytes per pair measured at w = 16384 (5.6 GiB; repro.science.match)."""


@contextmanager
def quiet() -> Any:
    """No warnings or transformers log lines while a preflight looks at a model: a refusal
    must be the only line printed."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    levels = hf_logging.get_verbosity(), hub_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity(hub_logging.CRITICAL)  # its download retries log warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(levels[0])
        hub_logging.set_verbosity(levels[1])


def check_model(spec: ModelSpec, longest: int, groups: frozenset[int] = frozenset()) -> int | None:
    """Every check above for a model on disk; returns its residual width. A Hub model not yet
    in the cache has its config.json fetched (the run would fetch it first thing) and checked
    through step 3; its weights and tokenizer are checked when `repro fetch` has them.
    `groups`: the M of every N:M pattern the study prunes this model with."""
    from repro.inputs.models import location

    folder = (Path(location(spec)) if spec.is_local or spec.is_packaged
              else hubcache.cached_snapshot(hubcache.model_item(spec))[0])
    with quiet():
        complete = folder is not None
        if folder is None:
            folder = _fetch_config(spec)
        cfg = _read_config(spec, folder)
        model = _meta_model(spec, folder)
        _check_layout(spec, model, cfg, longest)
        _check_groups(spec, model, groups)
        if complete:
            _check_side_files(spec, folder)
            _check_weights(spec, folder, model, cfg)
            _check_tokenizer(spec, folder, model)
    return getattr(model.config.get_text_config(), "hidden_size", None)


def _fetch_config(spec: ModelSpec) -> Path:
    """The Hub's config.json of a model not in the cache (offline and gated models were
    refused before, repro.inputs.models.check_access): a source that is neither a folder nor a
    model on the Hub, e.g. a mistyped relative path, is refused before the run writes."""
    from huggingface_hub import hf_hub_download

    from repro.inputs.models import hf_token

    try:
        return Path(hf_hub_download(spec.source, "config.json", revision=spec.revision,
                                    token=hf_token())).parent
    except Exception as exc:  # noqa: BLE001 - no network, no such repo, no licence...
        text, token = _first(exc), hf_token()
        text = text.replace(token, "***") if token else text
        raise ReproError(f"model {spec.key}: {spec.source!r} is not a folder next to the study "
                         f"file and the Hugging Face Hub does not give its config.json "
                         f"({text}); fix models.{spec.key}.source, or run `repro fetch` while "
                         "online") from None


def _read_config(spec: ModelSpec, folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise ReproError(f"model {spec.key}: {path} {path_problem(path)}; restore "
                         "the model folder or run `repro fetch`") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ReproError(f"model {spec.key}: {path} is not valid JSON ({exc}); restore the "
                         "model's own config.json") from None
    if not isinstance(cfg, dict):
        raise ReproError(f"model {spec.key}: {path} holds {type(cfg).__name__}, not a JSON "
                         "object; restore the model's own config.json")
    for where, table in (("", cfg), ("text_config.", cfg.get("text_config"))):
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ReproError(f"model {spec.key}: {path}: {where.rstrip('.')} must be a JSON "
                             "object; restore the model's own config.json")
        _check_sizes(spec, path, table, where)
    arch = cfg.get("architectures")
    if not (isinstance(arch, list) and arch and all(isinstance(a, str) for a in arch)):
        raise ReproError(f"model {spec.key}: {path}: architectures = {arch!r} is not a list of "
                         "class names; restore the model's own config.json")
    if arch[0] != spec.architecture:
        raise ReproError(f"model {spec.key}: config.json says {arch[0]}, the study says "
                         f"{spec.architecture}; fix models.{spec.key}.architecture")
    return cfg


def _check_sizes(spec: ModelSpec, path: Path, table: dict[str, Any], where: str) -> None:
    """The sizes and dtype that build the model: whole numbers >= 1, heads that divide."""
    import torch

    for key in SIZE_FIELDS:
        if key in table and not (key in ("head_dim", "n_inner", "sliding_window")
                                 and table[key] is None):
            try:
                SIZE_RULE.check(f"{where}{key}", table[key])
            except FieldError as exc:
                raise exc.at(f"model {spec.key}: {path}",
                             fix="restore the model's own config.json") from None
    heads, kv = table.get("num_attention_heads"), table.get("num_key_value_heads")
    if isinstance(heads, int) and isinstance(kv, int) and heads % kv:
        raise ReproError(f"model {spec.key}: {path}: {where}num_attention_heads = {heads} is "
                         f"not a multiple of {where}num_key_value_heads = {kv} (each key/value "
                         "head serves a whole group); restore the model's own config.json")
    for key in ("dtype", "torch_dtype"):
        value = table.get(key)
        if value is not None and value != "auto" and not (
                isinstance(value, str) and isinstance(getattr(torch, value, None), torch.dtype)):
            raise ReproError(f"model {spec.key}: {path}: {where}{key} = {value!r} is not a torch "
                             "dtype (float32, bfloat16, float16, ...); restore the model's own "
                             "config.json")


def _meta_model(spec: ModelSpec, folder: Path) -> Any:
    """The model built from its config by transformers' own classes on the meta device: its
    layout without reading a weight."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # noqa: BLE001 - transformers refuses a config many ways
        raise ReproError(f"model {spec.key}: transformers cannot build a causal LM from "
                         f"{folder}/config.json ({_first(exc)}); fix that field or restore the "
                         "model's own config.json") from None


def _check_side_files(spec: ModelSpec, folder: Path) -> None:
    """The other JSON files from_pretrained reads: the generation config (through
    transformers' GenerationConfig) and a sharded checkpoint's index."""
    from transformers import GenerationConfig

    if (folder / "generation_config.json").exists():
        try:
            GenerationConfig.from_pretrained(folder)
        except Exception as exc:  # noqa: BLE001 - as AutoConfig, many ways to refuse
            raise ReproError(f"model {spec.key}: transformers cannot read "
                             f"{folder}/generation_config.json ({_first(exc)}); fix it or "
                             "restore the model's own file") from None
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = set(weight_map.values())
            ok = all(isinstance(f, str) and "/" not in f and (folder / f).is_file()
                     for f in files)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            ok = False
        if not ok:
            raise ReproError(f"model {spec.key}: {index} is not an index of the folder's "
                             "safetensors files (weight_map: tensor -> file); restore it")


def _first(exc: BaseException) -> str:
    """An exception's first lines, as one short piece of a refusal."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) or type(exc).__name__
    if len(lines) == 1 and len(text) < 40:  # a bare KeyError('x') says little alone
        text = f"{type(exc).__name__}: {text}"
    return text[:240]


def _check_layout(spec: ModelSpec, model: Any, cfg: dict[str, Any], longest: int) -> None:
    from repro.inputs.families import decoder_layers

    try:
        layers = len(decoder_layers(model))
    except ReproError as exc:
        raise ReproError(f"model {spec.key}: {exc}") from None
    positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if isinstance(positions, int) and longest > positions:
        raise ReproError(f"model {spec.key}: a token stream has seq_len {longest}, the model "
                         f"takes at most {positions} positions; lower data.*.seq_len")
    if layers != spec.n_layers:
        raise ReproError(f"model {spec.key}: config.json has {layers} decoder layers, the study "
                         f"says {spec.n_layers}; fix models.{spec.key}.n_layers")


def _check_groups(spec: ModelSpec, model: Any, groups: frozenset[int]) -> None:
    """N:M works on whole groups of M consecutive inputs (repro.science.prune.check_groups):
    a matrix whose input width M does not divide would fail only in the prune stage."""
    from repro.inputs.families import in_features, prunable_matrices

    widths = sorted({in_features(m) for m in prunable_matrices(model).values()})
    for m in sorted(groups):
        if any(w % m for w in widths):
            raise ReproError(f"model {spec.key}: pattern N:{m} needs every matrix's inputs in "
                             f"whole groups of {m}, and its matrices have {widths} inputs; "
                             "choose an M that divides them")


def _check_weights(spec: ModelSpec, folder: Path, model: Any, cfg: dict[str, Any]) -> None:
    """Every safetensors file holds all the data its header describes (a truncated download or
    copy otherwise fails deep inside loading), in the shapes the config builds."""
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files and not list(folder.glob("*.bin")):
        raise ReproError(f"model {spec.key}: {folder} has no weights (*.safetensors); restore "
                         "the model folder or run `repro fetch`")
    built = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    prefix = getattr(model, "base_model_prefix", "")
    for path in files:
        try:  # reads the header only, and checks that the data it describes is all there
            with safe_open(str(path), "pt") as f:
                stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError):
            raise ReproError(f"model {spec.key}: {path} is truncated or not a safetensors "
                             "file; copy or download the model again (`repro fetch`)") from None
        for name, shape in stored.items():
            want = built.get(name, built.get(f"{prefix}.{name}"))
            if want is not None and want != shape:
                raise ReproError(f"model {spec.key}: {path.name} holds {name} as "
                                 f"{list(shape)}, config.json builds {list(want)}"
                                 f"{_culprits(cfg, want, shape)}; the config does not describe "
                                 "these weights: restore the model's own config.json")


def _culprits(cfg: dict[str, Any], want: tuple, shape: tuple) -> str:
    """The config sizes that appear in the built shape and not in the stored one."""
    table = {**cfg, **(cfg.get("text_config") or {})}
    names = [f"{k} = {v}" for k, v in table.items() if isinstance(v, int)
             and not isinstance(v, bool) and v in want and v not in shape]
    return f" (from {', '.join(names[:3])})" if names else ""


def _check_tokenizer(spec: ModelSpec, folder: Path, model: Any) -> None:
    from repro.inputs.models import load_tokenizer

    try:
        tokenizer = load_tokenizer(spec)
    except ReproError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers' many ways of finding no tokenizer
        raise ReproError(f"model {spec.key}: no usable tokenizer in {folder} ({_first(exc)}); save "
                         "the model's tokenizer into the folder (tokenizer.save_pretrained)"
                         ) from None
    vocab = getattr(model.config.get_text_config(), "vocab_size", None)
    base = getattr(tokenizer, "vocab_size", None) or len(tokenizer)  # added tokens aside
    if isinstance(vocab, int) and base > vocab:
        raise ReproError(f"model {spec.key}: the tokenizer has {base} tokens, the model's "
                         f"embedding only {vocab}; use the model's own tokenizer")


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_sae_memory(study: Study, widths: dict[str, int]) -> None:
    """The SAEs of the study fit this machine: matching two of them holds width^2 cosines
    (MATCH_BYTES_PER_PAIR each) and training one holds its two width x d_model matrices with
    their gradients and Adam's two moments, and a batch of latent activations."""
    s = study.sae
    for key, d_model in widths.items():
        need = (MATCH_BYTES_PER_PAIR * s.width**2 + 4 * 2 * 4 * s.width * d_model
                + 4 * 3 * s.batch_tokens * s.width)
        have = memory_bytes()
        if need > have:
            raise ReproError(f"sae.width = {s.width} needs about {need / 2**30:.1f} GiB to train "
                             f"and match SAEs on model {key} (d_model {d_model}; width x width "
                             f"cosines take {MATCH_BYTES_PER_PAIR} bytes each), more than this "
                             f"machine's {have / 2**30:.1f} GiB; lower sae.width (the paper "
                             "uses 16384)")
