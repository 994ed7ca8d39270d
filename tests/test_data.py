"""Token streams: the reference's calibration windows, packing, joining, and the Hub path on
local files of the Hub's formats (no network)."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import torch
from conftest import word_tokenizer

from repro.errors import ReproError
from repro.inputs import data
from repro.study.sources import StreamSpec, TextSource

WORDS = [f"w{i}" for i in range(50)]


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40))) for _ in range(n)]


@pytest.fixture
def tok():
    return word_tokenizer(WORDS)


@pytest.fixture
def c4_like(tmp_path):
    """A gzipped JSON-lines shard laid out like C4's en/c4-train.*.json.gz."""
    path = tmp_path / "c4-train.00000-of-01024.json.gz"
    with gzip.open(path, "wt") as f:
        for d in make_docs(60):
            f.write(json.dumps({"text": d, "url": "x", "timestamp": "y"}) + "\n")
    return path


def reference_windows(docs: list[str], tok, n: int, seqlen: int, seed: int) -> list[list[int]]:
    """The Wanda reference's C4 sampling, spelled out with the global `random` module."""
    random.seed(seed)
    out = []
    for _ in range(n):
        while True:
            i = random.randint(0, len(docs) - 1)
            enc = tok(docs[i])["input_ids"]
            if len(enc) > seqlen:
                break
        i = random.randint(0, len(enc) - seqlen - 1)
        out.append(enc[i : i + seqlen])
    return out


def test_windows_match_reference_sampling_from_local_hub_file(tok, c4_like, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = TextSource(kind="hub", path=str(c4_like), split="train")
    spec = StreamSpec(source=source, n_sequences=7, seq_len=16, sampling="windows", seed=0)
    got = data.token_stream(spec, tok)
    assert got.shape == (7, 16)
    assert got.tolist() == reference_windows(make_docs(60), tok, 7, 16, 0)
    other = data.token_stream(
        StreamSpec(source=source, n_sequences=7, seq_len=16, sampling="windows", seed=1), tok
    )
    assert not torch.equal(got, other)


def test_packed_rows_start_with_bos_and_keep_document_order(tok) -> None:
    docs = make_docs(40)
    spec = StreamSpec(
        source=TextSource(kind="hub", path="unused"),
        n_sequences=5,
        seq_len=12,
        sampling="packed",
        skip_documents=3,
    )
    rows = data._packed(spec, iter(docs), tok)
    assert rows.shape == (5, 12) and (rows[:, 0] == tok.bos_token_id).all()
    flat = [t for d in docs[3:] for t in tok(d)["input_ids"]]
    assert rows[:, 1:].flatten().tolist() == flat[: 5 * 11]


def test_joined_is_the_reference_perplexity_text(tok) -> None:
    docs = make_docs(30)
    spec = StreamSpec(
        source=TextSource(kind="hub", path="unused"),
        n_sequences=1000,
        seq_len=10,
        sampling="joined",
    )
    rows = data._joined(spec, docs, tok)
    ids = tok("\n\n".join(docs))["input_ids"]
    assert rows.shape == (len(ids) // 10, 10)
    assert rows.flatten().tolist() == ids[: rows.numel()]


def test_parquet_and_text_fields(tok, tmp_path) -> None:
    import pandas as pd

    path = tmp_path / "wiki.parquet"
    pd.DataFrame({"page": make_docs(20)}).to_parquet(path)
    source = TextSource(kind="hub", path=str(path), split="train", text_field="page")
    assert list(data.documents(source)) == make_docs(20)
    with pytest.raises(ReproError, match="no column 'text'"):
        data.documents(TextSource(kind="hub", path=str(path), split="train"))


def test_too_short_documents_are_a_clear_error(tok, c4_like) -> None:
    spec = StreamSpec(
        source=TextSource(kind="hub", path=str(c4_like)),
        n_sequences=1,
        seq_len=500,
        sampling="windows",
    )
    with pytest.raises(ReproError, match="no document longer than seq_len=500"):
        data.token_stream(spec, tok)


def test_special_token_mask(tok) -> None:
    ids = torch.tensor([[1, 5, 6, 2, 0, 7]])
    assert data.special_token_mask(ids, tok).tolist() == [[False, True, True, False, False, True]]
