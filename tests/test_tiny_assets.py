"""Tests of the tiny profile's generated corpus, tokenizer and shipped models.

    PYTHONPATH=. python -m pytest tests/test_tiny_assets.py
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import repro.tiny
from repro.inputs.tiny_corpus import CONSTRUCTIONS, CorpusParams, annotated_documents, documents
from repro.tiny.build import MODELS, SEQ_LEN, build_tiny_assets, write_sha256sums
from repro.tiny.train import heldout_loss, pack_sequences, unigram_entropy

ASSETS = Path(repro.tiny.__file__).resolve().parent.parent / "assets" / "tiny"
ARCHITECTURES = {
    "gemma-3-tiny": "Gemma3ForCausalLM",
    "gemma-2-tiny": "Gemma2ForCausalLM",
    "llama-tiny": "LlamaForCausalLM",
}


@pytest.fixture(scope="module")
def corpus_params() -> CorpusParams:
    return CorpusParams.from_dict(json.loads((ASSETS / "corpus.json").read_text()))


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(ASSETS / "tokenizer")


@pytest.fixture(scope="module")
def train_entropy(corpus_params: CorpusParams, tokenizer) -> float:
    """Unigram entropy of freshly generated, tokenized train text: the context-free baseline."""
    return unigram_entropy(_packed(tokenizer, documents(corpus_params, "train", 3000)))


def _packed(tokenizer, texts: list[str]) -> torch.Tensor:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return pack_sequences(ids, SEQ_LEN, tokenizer.bos_token_id, tokenizer.eos_token_id)


def test_corpus_is_deterministic_per_split() -> None:
    params = CorpusParams()
    first = documents(params, "train", 50)
    assert first == documents(params, "train", 50)
    assert first != documents(params, "valid", 50)
    assert first != documents(CorpusParams(seed=1), "train", 50)
    assert documents(params, "train", 10) == first[:10]


def test_corpus_is_identical_in_a_fresh_process() -> None:
    code = ("import json; from repro.inputs.tiny_corpus import CorpusParams, documents; "
            "print(json.dumps(documents(CorpusParams(), 'eval', 30)))")
    root = Path(repro.tiny.__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert json.loads(out.stdout) == documents(CorpusParams(), "eval", 30)


def test_corpus_params_round_trip_and_validation() -> None:
    params = CorpusParams(seed=7, topic_zipf=1.5)
    assert CorpusParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    with pytest.raises(ValueError):
        CorpusParams(min_sentences=5, max_sentences=2)
    with pytest.raises(ValueError):
        CorpusParams(paragraph_prob=1.5)
    with pytest.raises(TypeError):
        CorpusParams.from_dict({"seed": 0, "unknown": 1})


def test_feature_frequencies_span_orders_of_magnitude() -> None:
    docs = annotated_documents(CorpusParams(), "frequency-check", 4000)
    constructions = collections.Counter(c for d in docs for c in d.constructions)
    topics = collections.Counter(d.topic for d in docs)
    assert set(constructions) <= set(CONSTRUCTIONS)
    assert max(constructions.values()) > 100 * min(constructions.values())
    assert max(topics.values()) > 10 * min(topics.values())
    # The protagonist persists: the intro's full name recurs later in most documents.
    recurring = sum(d.text.count(d.entity.split()[0]) >= 2 for d in docs)
    assert recurring > 0.8 * len(docs)


def test_tokenizer_round_trip_and_bos(tokenizer) -> None:
    text = documents(CorpusParams(), "tokenizer-check", 1)[0] + " \u00e9\u4e2d 12:05"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.unk_token_id not in ids
    assert len(tokenizer) <= 2048


def _builder_files(root: Path) -> list[str]:
    """Files build_tiny_assets writes (SHA256SUMS aside); a caller may keep others there."""
    owned = [root / "corpus.json",
             *(p for d in ("tokenizer", "models", "saes") for p in (root / d).rglob("*"))]
    return sorted(p.relative_to(root).as_posix() for p in owned if p.is_file())


def test_sha256sums_match_shipped_files() -> None:
    listed = {}
    for line in (ASSETS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    assert list(listed) == sorted(listed)
    assert "SHA256SUMS" not in listed
    assert set(_builder_files(ASSETS)) <= set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((ASSETS / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_shipped_model_has_learned(name: str, corpus_params: CorpusParams, tokenizer,
                                   train_entropy: float) -> None:
    folder = ASSETS / "models" / name
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == ARCHITECTURES[name]
    assert model.config._attn_implementation == "eager"
    assert model.dtype == torch.float32
    local_tok = AutoTokenizer.from_pretrained(folder)
    assert local_tok("a b")["input_ids"] == tokenizer("a b")["input_ids"]
    valid = _packed(tokenizer, documents(corpus_params, "valid", 60))
    loss = heldout_loss(model, valid)
    assert loss < train_entropy - 1.0, (loss, train_entropy)


def test_architectures_and_attention_layouts() -> None:
    assert set(MODELS) == set(ARCHITECTURES)
    configs = {n: json.loads((ASSETS / "models" / n / "config.json").read_text())
               for n in ARCHITECTURES}
    g3, g2 = configs["gemma-3-tiny"], configs["gemma-2-tiny"]
    assert set(g3["layer_types"]) == {"sliding_attention", "full_attention"}
    assert g2["layer_types"][:2] == ["sliding_attention", "full_attention"]
    assert g2["final_logit_softcapping"] and g2["attn_logit_softcapping"]
    for cfg in (g3, g2):
        assert cfg["sliding_window"] < SEQ_LEN
    for name, cfg in configs.items():
        assert cfg["architectures"] == [ARCHITECTURES[name]]
        assert cfg["num_hidden_layers"] > 3  # the probe layer (3) must exist
        assert cfg["attn_implementation"] == "eager"


def test_unigram_entropy_matches_definition() -> None:
    assert unigram_entropy([5, 5, 5]) == pytest.approx(0.0)
    assert unigram_entropy([0, 1, 2, 3]) == pytest.approx(torch.log(torch.tensor(4.0)).item())


@pytest.mark.slow  # trains three LMs and two SAEs for a few steps: ~1 min of CPU
def test_quick_build_has_the_shipped_layout(tmp_path: Path) -> None:
    summary = build_tiny_assets(tmp_path, quick=True)
    assert set(summary["models"]) == set(ARCHITECTURES)
    assert _builder_files(tmp_path) == _builder_files(ASSETS)
    listed = [line.split("  ", 1)[1]
              for line in (tmp_path / "SHA256SUMS").read_text().splitlines()]
    assert listed == _builder_files(tmp_path)
    before = (tmp_path / "SHA256SUMS").read_text()
    assert write_sha256sums(tmp_path).read_text() == before
