"""Deterministic token streams: Wanda calibration, SAE training, evaluation and perplexity.

Hub text goes through `datasets` (downloaded or streamed; local files of the same format
work the same way, which is how the tests exercise this path), unless `repro fetch` has
stored the source's rows as parquet in the cache (repro.inputs.hubcache.materialised_path): then
those are read, offline. The tiny profile reads the project's generated corpus. Three
samplings, named in the study file:
- windows: the Wanda reference's C4 calibration (random long document, random window);
- packed: documents in order, each tokenized with BOS, concatenated, cut into sequences;
- joined: texts joined by blank lines, tokenized once, cut into consecutive sequences
  (the reference's WikiText-2 perplexity).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from repro.errors import ReproError
from repro.study.sources import StreamSpec, TextSource

MAX_WINDOW_TRIES = 10_000
POOL_DOCS = 4096
"""Documents taken from an endless source (generated corpus, streamed dataset) for the
samplings that need a finite text (windows, joined); a finite source (a downloaded C4 shard,
WikiText-2 test) is used whole, as the reference does."""


def documents(source: TextSource) -> Iterable[str]:
    """The source's texts in their fixed order (an indexable list when not streaming)."""
    if source.kind == "tiny":
        return _tiny_documents(source)
    if source.kind == "package":
        from repro.inputs.packaged import documents as packaged_documents

        return packaged_documents(source.path, source.split)
    return _hub_documents(source)


def _tiny_documents(source: TextSource) -> Iterator[str]:
    from repro.inputs.tiny_corpus import CorpusParams
    from repro.inputs.tiny_corpus import documents as generate

    path = Path(source.path) if source.path else _default_corpus_params()
    if not path.is_file():
        raise ReproError(
            f"tiny corpus parameters {path} are missing; run `repro build-tiny-assets`"
        )
    params = CorpusParams.from_dict(json.loads(path.read_text()))
    block, done = 512, 0
    while True:  # grow the request; the generator is prefix-stable, so earlier texts repeat
        docs = generate(params, source.split, done + block)
        yield from docs[done:]
        done, block = len(docs), block * 2


def _default_corpus_params() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "tiny" / "corpus.json"


def _hub_documents(source: TextSource) -> Iterable[str]:
    from repro.inputs.hubcache import materialised_path, read_materialised

    stored = materialised_path(source)
    if stored.is_file():  # `repro fetch` stored the rows this source yields: read them offline
        return read_materialised(stored)
    import datasets

    kwargs: dict[str, Any] = {"split": source.split, "streaming": source.streaming}
    if source.data_files:
        kwargs["data_files"] = source.data_files
    path = source.path
    if Path(path).is_file():  # a local file of the same format as the Hub's
        path, kwargs["data_files"] = _builder_for(Path(path)), source.path
    try:
        ds = datasets.load_dataset(path, source.name or None, **kwargs)
    except (FileNotFoundError, ConnectionError, ValueError) as exc:
        raise ReproError(
            f"dataset {source.path} ({source.name or 'default'}, {source.split}) "
            f"could not be loaded: {str(exc).splitlines()[0][:160]}; run `repro fetch` "
            "while online, or check the study's data section"
        ) from None
    if source.text_field not in (ds.column_names or [source.text_field]):
        raise ReproError(
            f"dataset {source.path} has no column {source.text_field!r}; "
            f"set text_field to one of {ds.column_names}"
        )
    if source.streaming:
        return (row[source.text_field] for row in ds)
    return ds[source.text_field]


def _builder_for(path: Path) -> str:
    """The `datasets` builder for a local file, from its extensions (x.json.gz -> json)."""
    for suffix in path.suffixes:
        builder = {
            ".json": "json",
            ".jsonl": "json",
            ".parquet": "parquet",
            ".txt": "text",
            ".csv": "csv",
        }.get(suffix)
        if builder:
            return builder
    raise ReproError(f"{path}: cannot tell its format; use .jsonl, .json(.gz), .parquet or .txt")


def token_stream(spec: StreamSpec, tokenizer: Any) -> torch.Tensor:
    """The stream as an int64 tensor of shape (n_sequences, seq_len)."""
    docs = documents(spec.source)
    if spec.sampling == "packed":
        return _packed(spec, docs, tokenizer)
    pool = list(docs if hasattr(docs, "__len__") else islice(docs, POOL_DOCS))
    if spec.sampling == "windows":
        return _windows(spec, pool, tokenizer)
    return _joined(spec, pool, tokenizer)


def _windows(spec: StreamSpec, docs: list[str], tokenizer: Any) -> torch.Tensor:
    """Random windows of documents longer than seq_len, drawn as the Wanda reference does."""
    if not docs:
        raise ReproError(f"{spec.source.path or spec.source.split}: no documents to sample from")
    rng = random.Random(spec.seed)
    out = []
    for _ in range(spec.n_sequences):
        for _ in range(MAX_WINDOW_TRIES):
            ids = tokenizer(docs[rng.randint(0, len(docs) - 1)], verbose=False)["input_ids"]
            if len(ids) > spec.seq_len:
                break
        else:
            raise ReproError(
                f"calibration: found no document longer than seq_len={spec.seq_len} "
                f"tokens in {MAX_WINDOW_TRIES} draws; lower seq_len"
            )
        start = rng.randint(0, len(ids) - spec.seq_len - 1)
        out.append(ids[start : start + spec.seq_len])
    return torch.tensor(out, dtype=torch.long)


def _packed(spec: StreamSpec, docs: Iterable[str], tokenizer: Any) -> torch.Tensor:
    """Documents in order, each with BOS, concatenated; every sequence starts with BOS."""
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ReproError("the tokenizer has no BOS token; packed streams need one")
    body = spec.seq_len - 1
    need = spec.n_sequences * body
    buf: list[int] = []
    for batch in _batched(islice(docs, spec.skip_documents, None), 256):
        for ids in tokenizer(batch)["input_ids"]:
            buf.extend(ids if ids[:1] == [bos] else [bos, *ids])
        if len(buf) >= need:
            break
    if len(buf) < need:
        raise ReproError(
            f"stream {spec.source.path or spec.source.split}: only {len(buf)} tokens "
            f"available, {need} needed; lower n_sequences"
        )
    rows = torch.tensor(buf[:need], dtype=torch.long).view(spec.n_sequences, body)
    return torch.cat([torch.full((spec.n_sequences, 1), bos, dtype=torch.long), rows], dim=1)


def _joined(spec: StreamSpec, docs: Iterable[str], tokenizer: Any) -> torch.Tensor:
    """All texts joined by blank lines: up to n_sequences consecutive windows."""
    text = "\n\n".join(islice(docs, spec.skip_documents, None) if spec.skip_documents else docs)
    ids = tokenizer(text, verbose=False)["input_ids"]
    n = min(spec.n_sequences, len(ids) // spec.seq_len)
    if n == 0:
        raise ReproError(
            f"perplexity text has {len(ids)} tokens, fewer than seq_len={spec.seq_len}"
        )
    return torch.tensor(ids[: n * spec.seq_len], dtype=torch.long).view(n, spec.seq_len)


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def special_token_mask(ids: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """True at ordinary tokens; False at BOS/EOS/PAD, whose residuals are attention sinks."""
    special = [
        t
        for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        if t is not None
    ]
    return ~torch.isin(ids, torch.tensor(special, dtype=ids.dtype))
