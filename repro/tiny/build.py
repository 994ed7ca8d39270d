"""Build the tiny profile's shipped assets: corpus params, tokenizer, three trained models.

The tiny profile mirrors the paper's three architecture classes (Gemma 3, Gemma 2, Llama 3)
with models small enough to train and prune on two CPU cores, so CI and newcomers run the
real code path in minutes. Everything is seeded; the output folder is what the package
loads from repro/assets/tiny/.

    python -m repro.tiny.build repro/assets/tiny          # full build (minutes)
    python -m repro.tiny.build /tmp/tiny --quick          # same layout, few steps
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers
import torch
import transformers
from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig, PretrainedConfig

from repro.inputs.tiny_corpus import CorpusParams, documents
from repro.tiny.tokenizer import save_tokenizer, train_tokenizer
from repro.tiny.train import (
    TrainParams,
    heldout_loss,
    pack_sequences,
    train_causal_lm,
    unigram_entropy,
)

SEQ_LEN = 128
"""Training and evaluation rows: bos + 127 tokens of the packed document stream."""
PROBE_LAYER = 3
"""Decoder layer (0-based) whose output residual stream the tiny study probes."""


@dataclass(frozen=True)
class TinyShape:
    """Shape shared by the three tiny models, scaled-down from the paper's models."""

    hidden: int = 96
    """Residual stream width."""
    layers: int = 6
    """Decoder layers."""
    heads: int = 4
    """Query heads."""
    kv_heads: int = 2
    """Key/value heads (grouped-query attention, as in all three real models)."""
    head_dim: int = 24
    """Per-head width."""
    max_positions: int = 256
    """max_position_embeddings."""
    sliding_window: int = 32
    """Gemma local-attention window, below SEQ_LEN so the sliding masks matter."""


@dataclass(frozen=True)
class BuildPlan:
    """Sizes of one build; `quick` shrinks them so a test can exercise the whole builder."""

    train_docs: int
    """Documents of the train split (tokenizer training and LM training)."""
    valid_docs: int
    """Documents of the valid split for the held-out loss."""
    vocab_size: int
    """Target BPE vocabulary size."""
    train: TrainParams
    """LM optimisation settings, the same for all three models."""


FULL_PLAN = BuildPlan(18000, 400, 2048, TrainParams(steps=300, batch_size=32))
QUICK_PLAN = BuildPlan(400, 40, 2048, TrainParams(steps=6, batch_size=8, warmup_steps=2))


def _common(vocab: int, s: TinyShape, special: dict[str, int]) -> dict[str, Any]:
    return dict(
        vocab_size=vocab, hidden_size=s.hidden, intermediate_size=4 * s.hidden,
        num_hidden_layers=s.layers, num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads, head_dim=s.head_dim,
        max_position_embeddings=s.max_positions, tie_word_embeddings=True, **special,
    )


def _gemma3(vocab: int, s: TinyShape, special: dict[str, int]) -> PretrainedConfig:
    # Gemma 3 interleaves five local layers with one global layer.
    layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                   for i in range(s.layers)]
    return Gemma3TextConfig(**_common(vocab, s, special), query_pre_attn_scalar=s.head_dim,
                            sliding_window=s.sliding_window, layer_types=layer_types)


def _gemma2(vocab: int, s: TinyShape, special: dict[str, int]) -> PretrainedConfig:
    # Gemma 2 alternates local and global layers and keeps its logit softcapping defaults.
    layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention"
                   for i in range(s.layers)]
    return Gemma2Config(**_common(vocab, s, special), query_pre_attn_scalar=s.head_dim,
                        sliding_window=s.sliding_window, layer_types=layer_types)


def _llama(vocab: int, s: TinyShape, special: dict[str, int]) -> PretrainedConfig:
    return LlamaConfig(**_common(vocab, s, special))


MODELS: dict[str, Callable[[int, TinyShape, dict[str, int]], PretrainedConfig]] = {
    "gemma-3-tiny": _gemma3,
    "gemma-2-tiny": _gemma2,
    "llama-tiny": _llama,
}
"""Tiny model name -> config factory; one entry per architecture class of the paper."""


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_sha256sums(out: Path) -> Path:
    """SHA256SUMS in sha256sum format over every file under `out` but itself, sorted."""
    target = out / "SHA256SUMS"
    files = sorted(p for p in out.rglob("*") if p.is_file() and p != target)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out).as_posix()}"
             for p in files]
    target.write_text("\n".join(lines) + "\n")
    return target


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _train_one(name: str, config: PretrainedConfig, data: dict[str, Any], folder: Path,
               plan: BuildPlan) -> dict[str, Any]:
    """Train, evaluate and save one model folder (weights, config, tokenizer, record)."""
    model, record = train_causal_lm(config, data["train"], plan.train)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    # from_pretrained reads this key as its default kernel, so loaders get the trained one.
    config_path = folder / "config.json"
    _write_json(config_path, {**json.loads(config_path.read_text()),
                              "attn_implementation": plan.train.attn_implementation})
    save_tokenizer(data["tokenizer"], folder)
    record.update(
        model=name,
        architecture=type(model).__name__,
        heldout_loss_valid=heldout_loss(model, data["valid"]),
        unigram_entropy_train=data["entropy"],
        valid_tokens=int(data["valid"].numel()),
        seed=plan.train.seed,
        seq_len=SEQ_LEN,
        probe_layer=PROBE_LAYER,
        attn_implementation=plan.train.attn_implementation,
        torch_threads=torch.get_num_threads(),
        versions={"torch": torch.__version__, "transformers": transformers.__version__,
                  "tokenizers": tokenizers.__version__, "python": platform.python_version()},
    )
    _write_json(folder / "training.json", record)
    return record


def _build_saes(out: Path, quick: bool) -> dict[str, Any]:
    """The SAEs that play the public pre-trained SAEs of the tiny models (see
    repro.science.saes)."""
    from repro.science.pretrained_saes import SHIPPED_MODELS, build_shipped_sae

    settings = {"n_sequences": 64, "width": 256} if quick else None
    return {name: build_shipped_sae(out / "models" / name, out / "saes" / name,
                                    settings=settings)["n_tokens"]
            for name in SHIPPED_MODELS}


def build_tiny_assets(out: Path, *, quick: bool = False) -> dict[str, Any]:
    """Build corpus.json, tokenizer/, models/<name>/, saes/<name>/ and SHA256SUMS into `out`.

    Returns a summary: per model its parameter count, held-out loss, unigram entropy and
    training time, plus the total asset size and the build's wall time.
    """
    start = time.perf_counter()
    torch.set_num_threads(2)
    plan = QUICK_PLAN if quick else FULL_PLAN
    out = Path(out)
    # Only the builder's own outputs are removed, never anything else a caller keeps there.
    for stale in ("tokenizer", "models", "saes"):
        shutil.rmtree(out / stale, ignore_errors=True)
    for stale in ("corpus.json", "SHA256SUMS"):
        (out / stale).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    corpus = CorpusParams()
    _write_json(out / "corpus.json", corpus.to_dict())

    train_texts = documents(corpus, "train", plan.train_docs)
    tokenizer = train_tokenizer(train_texts, plan.vocab_size)
    save_tokenizer(tokenizer, out / "tokenizer")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    train = pack_sequences(_tokenize(tokenizer, train_texts), SEQ_LEN, bos, eos)
    valid_texts = documents(corpus, "valid", plan.valid_docs)
    valid = pack_sequences(_tokenize(tokenizer, valid_texts), SEQ_LEN, bos, eos)
    data = {"tokenizer": tokenizer, "train": train, "valid": valid,
            "entropy": unigram_entropy(train)}
    special = {"bos_token_id": bos, "eos_token_id": eos,
               "pad_token_id": tokenizer.pad_token_id}

    summary: dict[str, Any] = {"quick": quick, "train_tokens": int(train.numel()),
                               "vocab_size": len(tokenizer), "models": {}}
    for name, factory in MODELS.items():
        config = factory(len(tokenizer), TinyShape(), special)
        record = _train_one(name, config, data, out / "models" / name, plan)
        summary["models"][name] = {k: record[k] for k in (
            "architecture", "params", "heldout_loss_valid", "unigram_entropy_train",
            "wall_time_s")}
    summary["saes"] = _build_saes(out, quick)
    write_sha256sums(out)
    summary["total_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary["wall_time_s"] = round(time.perf_counter() - start, 1)
    return summary


def main(argv: list[str] | None = None) -> None:
    """CLI entry: build the assets and print the summary as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (its contents are replaced)")
    parser.add_argument("--quick", action="store_true", help="few steps, same layout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(json.dumps(build_tiny_assets(args.out, quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
