"""The paper study's Hub repositories, with stand-in content, for tests/hubserver.py.

Models: the shipped tiny models (repro/assets/tiny/models) under the paper's repository names,
all three gated as on the Hub; Llama keeps Meta's `original/` folder, which fetch must skip.
Datasets in the layouts of the paper's sources, their text from the tiny corpus generator:
allenai/c4 (JSON-gz shards under en/, read through `data_files`), HuggingFaceFW/fineweb
(parquet shards of the sample-10BT config, streamed) and Salesforce/wikitext (parquet per
config and split). SAEs in the folders sae-lens's registry names (pretrained_saes.yaml): Gemma
Scope's params.npz with the real shapes (sae-lens's gemma_2 loader takes d_in = 2304 from the
repository name), Gemma Scope 2's params.safetensors with d_in = 96, the stand-in Gemma 3's
hidden size (its gemma_3 loader reads the shapes from the file's header).

`derived_study` writes paper.toml with the stand-ins' layer counts, CPU, and stream sizes the
tiny models take (seq_len 128 <= their 256 positions), keeping every source as it is.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from hubserver import HubServer, Repo
from safetensors.torch import save as save_tensors

from repro.inputs.tiny_corpus import CorpusParams, documents
from repro.study.reader import profile_path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "repro" / "assets" / "tiny" / "models"
MODELS = {"google/gemma-3-1b-pt": "gemma-3-tiny", "google/gemma-2-2b": "gemma-2-tiny",
          "meta-llama/Llama-3.2-1B": "llama-tiny"}
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json",
               "tokenizer_config.json", "model.safetensors")
FINEWEB_DOCS = 21_000
"""Enough for the derived study: 20,000 skipped documents, then the SAE-training tokens."""
PAPER_LONG_DOCS = 26_000
"""Long FineWeb documents (~680 tokens) after those, for paper.toml's own stream sizes."""
GEMMA_SCOPE_D_IN = 2304


def model_repo(repo_id: str, tiny: str, gated: bool = True) -> Repo:
    files = {name: (TINY / tiny / name).read_bytes() for name in MODEL_FILES}
    files["README.md"] = f"# {repo_id}\nStand-in: the tiny model {tiny}.\n".encode()
    files[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    if repo_id.startswith("meta-llama/"):
        files["original/params.json"] = b'{"dim": 96}'
        files["original/consolidated.00.pth"] = b"\0" * 4096
    return Repo("models", repo_id, files, gated=gated)


def _readme(configs: dict[str, dict[str, str]]) -> bytes:
    """A dataset card whose YAML names each config's files per split, as the Hub's do."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {path}" for split, path in splits.items()]
    return ("\n".join(lines) + "\n---\n# stand-in\n").encode()


def _parquet(table: pa.Table, row_group: int = 2000) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group)
    return sink.getvalue()


def c4_repo() -> Repo:
    docs = documents(CorpusParams(), "hub-c4", 1200)
    rows = ["\n".join(docs[i:i + 1 + i % 6]) for i in range(0, len(docs), 4)]  # some long

    def shard(texts: list[str]) -> bytes:
        lines = "".join(json.dumps({"text": t, "timestamp": "2019-04-25T12:57:54Z",
                                    "url": f"https://example.org/{i}"}) + "\n"
                        for i, t in enumerate(texts))
        return gzip.compress(lines.encode(), mtime=0)

    files = {"en/c4-train.00000-of-01024.json.gz": shard(rows),
             "en/c4-train.00001-of-01024.json.gz": shard(rows[::-1]),
             "en/c4-validation.00000-of-00008.json.gz": shard(rows[:20]),
             "README.md": _readme({"en": {"train": "en/c4-train.*.json.gz",
                                          "validation": "en/c4-validation.*.json.gz"}})}
    return Repo("datasets", "allenai/c4", files)


def fineweb_repo(long_docs: int = 0) -> Repo:
    """FineWeb's sample-10BT config: FINEWEB_DOCS corpus documents, then `long_docs` of eight
    each (PAPER_LONG_DOCS of them hold the 16.8M tokens paper.toml's SAE stream reads)."""
    docs = documents(CorpusParams(), "hub-fineweb", FINEWEB_DOCS + 8 * long_docs)
    texts = docs[:FINEWEB_DOCS] + ["\n".join(docs[i:i + 8])
                                   for i in range(FINEWEB_DOCS, len(docs), 8)]

    def shard(first: int, end: int) -> bytes:
        part = texts[first:end]
        ids = [f"<urn:uuid:{first + i:08d}>" for i in range(len(part))]
        return _parquet(pa.table({"text": part, "id": ids,
                                  "dump": ["CC-MAIN-2024-10"] * len(part),
                                  "token_count": [len(t.split()) for t in part]}))

    n = max(2, len(texts) // 15_000)
    bounds = [len(texts) * k // n for k in range(n + 1)]
    files = {f"sample/10BT/{k:03d}_00000.parquet": shard(bounds[k], bounds[k + 1])
             for k in range(n)}
    files["data/CC-MAIN-2024-10/000_00000.parquet"] = shard(0, 50)
    files["README.md"] = _readme({"default": {"train": "data/*/*"},
                                  "sample-10BT": {"train": "sample/10BT/*"}})
    return Repo("datasets", "HuggingFaceFW/fineweb", files)


def wikitext_repo() -> Repo:
    def lines(split: str, n: int) -> bytes:
        rows = []
        for i, doc in enumerate(documents(CorpusParams(), f"hub-wikitext-{split}", n)):
            rows += ["", f" = Article {i} = \n", ""]
            rows += [f" {p.strip()} \n" for p in doc.split("\n") if p.strip()]
        return _parquet(pa.table({"text": rows}))

    files = {f"wikitext-2-raw-v1/{s}-00000-of-00001.parquet": lines(s, n)
             for s, n in (("test", 120), ("train", 40), ("validation", 20))}
    files["wikitext-103-raw-v1/test-00000-of-00001.parquet"] = lines("test103", 10)
    files["README.md"] = _readme({
        c: {s: f"{c}/{s}-*" for s in ("test", "train", "validation")}
        for c in ("wikitext-2-raw-v1", "wikitext-103-raw-v1")})
    return Repo("datasets", "Salesforce/wikitext", files)


def gemma_scope_repo() -> Repo:
    """Gemma Scope (Gemma 2 2B, residual stream): params.npz per layer/width/L0 folder."""
    rng = np.random.default_rng(0)
    d_in, d_sae = GEMMA_SCOPE_D_IN, 16384
    w_enc = np.zeros((d_in, d_sae), np.float32)  # zero but for 96 rows, so that it compresses
    w_enc[:96] = rng.normal(0, 0.1, (96, d_sae))
    arrays = {"W_enc": w_enc, "W_dec": np.ascontiguousarray(w_enc.T),
              "b_enc": np.zeros(d_sae, np.float32), "b_dec": np.zeros(d_in, np.float32),
              "threshold": np.full(d_sae, 0.05, np.float32)}
    sink = io.BytesIO()  # an npz is a zip of .npy files; level 1 keeps building it quick
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array)
    params = sink.getvalue()
    files = {"layer_12/width_16k/average_l0_82/params.npz": params,
             "layer_12/width_16k/average_l0_176/params.npz": params,
             "README.md": b"# stand-in Gemma Scope\n"}
    return Repo("models", "google/gemma-scope-2b-pt-res", files)


def gemma_scope_2_repo(d_in: int = 96) -> Repo:
    """Gemma Scope 2 (Gemma 3 1B): config.json and params.safetensors per folder."""
    def folder(layer: int, l0: str, seed: int) -> dict[str, bytes]:
        g = torch.Generator().manual_seed(seed)
        w_enc = 0.1 * torch.randn(d_in, 16384, generator=g)
        tensors = {"w_enc": w_enc, "w_dec": w_enc.T.contiguous(), "b_enc": torch.zeros(16384),
                   "b_dec": torch.zeros(d_in), "threshold": torch.full((16384,), 0.05)}
        cfg = {"architecture": "jump_relu", "model_name": "gemma-v3-1b-pt", "width": 16384,
               "hf_hook_point_in": f"model.layers.{layer}.output", "l0": l0}
        base = f"resid_post/layer_{layer}_width_16k_l0_{l0}"
        return {f"{base}/params.safetensors": save_tensors(tensors),
                f"{base}/config.json": json.dumps(cfg).encode()}

    files = {**folder(13, "medium", 0), **folder(13, "small", 1),
             "README.md": b"# stand-in Gemma Scope 2\n"}
    return Repo("models", "google/gemma-scope-2-1b-pt", files)


def paper_repos() -> list[Repo]:
    """Every repository `repro fetch --profile paper` reads, with stand-in content."""
    models = [model_repo(repo_id, tiny) for repo_id, tiny in MODELS.items()]
    return [*models, c4_repo(), fineweb_repo(), wikitext_repo(), gemma_scope_repo(),
            gemma_scope_2_repo()]


def serve(repos: list[Repo], token: str | None = None) -> HubServer:
    """A started server holding the repositories; `token` is granted every gated one."""
    hub = HubServer()
    for repo in repos:
        hub.add(repo)
    if token:
        hub.tokens[token] = {r.repo_id for r in repos if r.gated}
    return hub.start()


STREAM_SIZES = {"calibration": (8, 128), "sae_train": (16, 128), "eval": (16, 128),
                "perplexity": (8, 128)}
"""(n_sequences, seq_len) of the derived study's streams."""


def derived_study(folder: Path) -> Path:
    """paper.toml with the stand-in models' shape (6 layers, probe layer 3, 256 positions),
    CPU and float32, and small streams; sources, skips, models' ids and SAEs as the paper's."""
    text = profile_path("paper").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^n_layers = \d+", "n_layers = 6", text)
    text = re.sub(r"(?m)^probe_layer = \d+", "probe_layer = 3", text)
    text = text.replace('device = "cuda"', 'device = "cpu"')
    text = text.replace('dtype = "bfloat16"', 'dtype = "float32"')
    for name, (n, seq_len) in STREAM_SIZES.items():
        head = text.index(f"[data.{name}]")
        end = text.find("\n\n", head)
        body = text[head:end if end >= 0 else len(text)]
        new = re.sub(r"(?m)^n_sequences = \d+", f"n_sequences = {n}", body)
        new = re.sub(r"(?m)^seq_len = \d+", f"seq_len = {seq_len}", new)
        text = text.replace(body, new)
    path = folder / "paper-derived.toml"
    path.write_text(text, encoding="utf-8")
    return path


def one_model_study(folder: Path, *, source: str = "google/gemma-2-2b", gated: bool = True,
                    revision: str = "main", architecture: str = "Gemma2ForCausalLM",
                    pretrained_sae: str = "", hub_text: bool = False) -> Path:
    """A study of one model (a Hub id or a folder) for the failure cases; its text is the
    tiny corpus (nothing to fetch), or the derived paper study's Hub sources."""
    model = (f'source = "{source}"\nrevision = "{revision}"\ngated = {str(gated).lower()}\n'
             f'architecture = "{architecture}"\nn_layers = 6\nprobe_layer = 3\n')
    if pretrained_sae:
        model += f"pretrained_sae = {pretrained_sae}\n"
    text = (f'[study]\nname = "one"\ndevice = "cpu"\n\n[models.m]\n{model}\n'
            '[[conditions]]\nmodel = "m"\nmethods = ["magnitude"]\nsparsities = [0.5]\n\n'
            '[sae]\nwidth = 64\nk = 4\nlr = 1e-3\nbatch_tokens = 256\n\n')
    if hub_text:
        paper = derived_study(folder).read_text(encoding="utf-8")
        text += paper[paper.index("# Wanda calibration"):]
    else:
        text += "".join(f'[data.{name}]\nsource = {{ kind = "tiny", split = "{name}" }}\n'
                        f'sampling = "packed"\nn_sequences = 4\nseq_len = 32\n\n'
                        for name in STREAM_SIZES)
    path = folder / "one.toml"
    path.write_text(text, encoding="utf-8")
    return path
