"""What a study needs from the Hugging Face Hub and whether the local cache already holds it.

`repro fetch` downloads these items and `repro doctor` only looks at them, so both share the
file patterns and places defined here. Three kinds of item:
- models: a snapshot of the files `from_pretrained` reads (config, safetensors weights,
  tokenizer), in the Hub cache under HF_HOME;
- pre-trained SAEs: the folder of one sae-lens release/sae_id in its Hub repository;
- text: each Hub dataset a token stream reads, materialised by `repro fetch` as one parquet
  file under HF_HOME/repro-datasets/ (`repro.inputs.data` reads it from there when it exists).
  A streamed source is stored as the prefix of documents the study consumes, so an offline
  run sees exactly the documents an online run would.
Local sources (the tiny profile's shipped assets) are checked against the SHA256SUMS file
at the root of their asset folder instead.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from repro.study.sources import ModelSpec, StreamSpec, TextSource
from repro.study.spec import Study

MODEL_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.jinja", "*.tiktoken")
"""Files of a model repository that `from_pretrained` (model and tokenizer) can read."""
MODEL_IGNORE = ("original/*",)
"""Never fetched: Meta's original checkpoint folder duplicates the weights in .pth form."""
DATA_DIR = "repro-datasets"
"""Folder under HF_HOME holding the materialised text sources."""


def hf_home() -> Path:
    """HF_HOME as huggingface_hub resolves it (HF_HOME, else XDG_CACHE_HOME, else ~/.cache)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME)


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


@dataclass(frozen=True)
class HubItem:
    """One repository snapshot (possibly filtered to some files) that a study reads."""

    kind: str
    """'model' or 'sae'."""
    label: str
    """What the user reads: the model key or the SAE release/id."""
    repo_id: str
    """Hub repository id."""
    revision: str
    """Branch, tag or commit."""
    allow: tuple[str, ...]
    """allow_patterns of `snapshot_download`."""
    ignore: tuple[str, ...] = ()
    """ignore_patterns of `snapshot_download`."""
    gated: bool = False
    """Whether downloading needs an accepted licence and HF_TOKEN."""


def model_item(spec: ModelSpec) -> HubItem:
    """The snapshot of a Hub model that loading it (model and tokenizer) reads."""
    return HubItem("model", spec.key, spec.source, spec.revision, MODEL_PATTERNS, MODEL_IGNORE,
                   spec.gated)


def model_items(study: Study) -> list[HubItem]:
    """The Hub models of the study (local folders and packaged models are not Hub items)."""
    return [model_item(spec) for spec in study.models.values()
            if not spec.is_local and not spec.is_packaged]


def packaged_sources(study: Study) -> tuple[list[str], list[str]]:
    """The study's packaged models (their sources) and packaged texts (their names)."""
    models = [spec.source for spec in study.models.values() if spec.is_packaged]
    texts = [s.source.path for s in study.data.streams.values() if s.source.kind == "package"]
    return models, list(dict.fromkeys(texts))


def sae_items(study: Study) -> list[HubItem]:
    """The public pre-trained SAEs of the study, resolved through sae-lens's registry."""
    items = []
    for spec in study.models.values():
        sae = spec.pretrained_sae
        if sae is not None and sae.release:
            repo_id, folder = sae_location(sae.release, sae.sae_id)
            items.append(HubItem("sae", f"{sae.release}/{sae.sae_id}", repo_id, "main",
                                 (f"{folder}/*",)))
    return items


def sae_location(release: str, sae_id: str) -> tuple[str, str]:
    """(repo_id, folder) of an SAE, read from sae-lens's pretrained_saes.yaml.

    The YAML is read directly: importing sae_lens takes ~15 s, which `repro doctor` cannot
    afford. Unknown releases are taken as a repo id, as sae-lens itself does.
    """
    from repro.errors import ReproError

    directory = _sae_directory()
    if release not in directory:
        return release, sae_id
    entry = directory[release]
    for sae in entry.get("saes", []):
        if sae.get("id") == sae_id:
            return entry["repo_id"], str(sae["path"])
    raise ReproError(f"SAE id {sae_id!r} is not in sae-lens release {release!r}; fix "
                     "pretrained_sae.sae_id in the study file")


@functools.cache
def _sae_directory() -> dict:
    import yaml

    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained_saes.yaml"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)


def cached_snapshot(item: HubItem) -> tuple[Path | None, str]:
    """(snapshot folder, '') when every file of the item is cached, else (None, why not).

    huggingface_hub keeps the repository's file listing next to a snapshot it downloaded,
    so an interrupted download is told apart from a complete one without any network call.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(item.repo_id, revision=item.revision,
                                        allow_patterns=list(item.allow),
                                        ignore_patterns=list(item.ignore) or None,
                                        local_files_only=True))
    except IncompleteSnapshotError as exc:
        missing = re.search(r"(\d+) file\(s\) are missing", str(exc))
        return None, f"partly downloaded ({missing.group(1) if missing else 'some'} files missing)"
    except LocalEntryNotFoundError:
        return None, "not in the cache"
    if item.kind == "model" and not (folder / "config.json").is_file():
        return None, "cached without config.json"
    if item.kind == "sae" and not any(folder.glob(item.allow[0])):
        return None, "not in the cache"
    return folder, ""


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under a folder, following the Hub cache's symlinks to blobs."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---- text sources ---------------------------------------------------------------------------

def hub_sources(study: Study) -> dict[TextSource, list[tuple[str, StreamSpec]]]:
    """Each distinct Hub text source with the (stream name, stream) pairs that read it."""
    out: dict[TextSource, list[tuple[str, StreamSpec]]] = {}
    for name, stream in study.data.streams.items():
        if stream.source.kind == "hub" and not Path(stream.source.path).is_absolute():
            out.setdefault(stream.source, []).append((name, stream))
    return out


def source_key(source: TextSource) -> dict[str, str]:
    """What identifies the rows of a source (not how they are read: streaming or not)."""
    return {"path": source.path, "name": source.name, "split": source.split,
            "data_files": source.data_files, "text_field": source.text_field}


def materialised_path(source: TextSource) -> Path:
    """Where `repro fetch` stores a text source's rows (one parquet file with a `text` column)."""
    key = json.dumps(source_key(source), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    stem = "--".join(p for p in (source.path.replace("/", "--"), source.name, source.split) if p)
    return hf_home() / DATA_DIR / f"{stem}--{digest}.parquet"


def read_materialised(path: Path) -> list[str]:
    """The stored texts, in their original order."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["text"]).column("text").to_pylist()


def materialised_info(path: Path) -> dict | None:
    """The metadata `repro fetch` stored in the file (rows, whether complete), or None."""
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path).metadata or {}
    raw = meta.get(b"repro")
    return json.loads(raw) if raw else None


def covers(streams: list[tuple[str, StreamSpec]], models: list[str]) -> dict[str, list[int]]:
    """What a stored prefix serves: per model/stream, [documents skipped, tokens needed]."""
    return {f"{m}/{name}": [s.skip_documents, s.n_sequences * (s.seq_len - 1)]
            for m in models for name, s in streams}


def stored_covers(info: dict, source: TextSource, streams: list[tuple[str, StreamSpec]],
                  models: list[str]) -> bool:
    """Whether a stored source holds every row the study's streams read from it."""
    if not source.streaming:
        return bool(info.get("complete"))
    stored = info.get("covers", {})
    for key, (skip, need) in covers(streams, models).items():
        if key not in stored or stored[key][0] != skip or stored[key][1] < need:
            return False
    return True


# ---- local assets ---------------------------------------------------------------------------

def local_paths(study: Study) -> list[Path]:
    """Every local file or folder the study reads (models, SAEs, generated-corpus parameters)."""
    paths = [Path(s.source) for s in study.models.values() if s.is_local]
    paths += [Path(s.pretrained_sae.path) for s in study.models.values()
              if s.pretrained_sae is not None and s.pretrained_sae.path]
    for stream in study.data.streams.values():
        source = stream.source
        if source.kind == "tiny":
            paths.append(Path(source.path) if source.path else _default_corpus())
        elif Path(source.path).is_absolute():
            paths.append(Path(source.path))
    return list(dict.fromkeys(paths))


def _default_corpus() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "tiny" / "corpus.json"


def sums_root(path: Path) -> Path | None:
    """The nearest folder at or above `path` that holds a SHA256SUMS file."""
    for folder in (path, *path.parents):
        if (folder / "SHA256SUMS").is_file():
            return folder
    return None


def verify_sums(root: Path) -> tuple[int, int, list[str]]:
    """(files, bytes, problems) of the files SHA256SUMS lists under `root`."""
    files = total = 0
    problems: list[str] = []
    for line in (root / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        expected, _, rel = line.partition("  ")
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel} missing")
            continue
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(functools.partial(f.read, 1 << 20), b""):
                digest.update(block)
        files, total = files + 1, total + path.stat().st_size
        if digest.hexdigest() != expected:
            problems.append(f"{rel} differs")
    return files, total, problems


def free_bytes(path: Path) -> tuple[Path, int]:
    """(nearest existing folder, its free bytes) for a path that may not exist yet."""
    probe = Path(os.path.abspath(path))
    while not probe.exists():
        probe = probe.parent
    stat = os.statvfs(probe)
    return probe, stat.f_bavail * stat.f_frsize
