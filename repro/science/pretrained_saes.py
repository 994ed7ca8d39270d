"""Pre-trained SAEs for RQ3: public ones through sae-lens (offline from the Hugging Face cache
once `repro fetch` has stored them), and the SAEs the tiny profile ships in their place.

The tiny profile ships one SAE per Gemma-like tiny model that plays the public pre-trained
SAE of RQ3; `repro build-tiny-assets` builds it after the tiny models.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import torch

from repro.errors import ReproError
from repro.science.saes import (
    check_layer,
    load_sae,
    patched,
    save_sae,
    save_training_record,
    train_sae,
)
from repro.study.locations import recorded_path
from repro.study.sources import PretrainedSae, StreamSpec, TextSource
from repro.study.spec import SaeSpec

SHIPPED = {"width": 1024, "k": 24, "lr": 1e-3, "batch_tokens": 1024, "n_sequences": 1024,
           "seq_len": 128, "seed": 1234, "split": "pretrained_sae"}
"""The shipped tiny SAEs: wider, denser and trained on other tokens than the study's SAEs,
as a public SAE would be."""
SHIPPED_MODELS = ("gemma-3-tiny", "gemma-2-tiny")
"""Tiny models that get a shipped SAE (llama has none, like Llama 3.2 1B in the paper)."""


# ---- pre-trained SAEs ----------------------------------------------------------------------

def _cached_file(repo_id: str, filename: str) -> str | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return hf_hub_download(repo_id, filename, local_files_only=True)
    except LocalEntryNotFoundError:
        return None


@contextlib.contextmanager
def _shapes_from_cache() -> Iterator[None]:
    """Let sae-lens's Gemma Scope 2 loader read tensor shapes from the local HF cache.

    `get_gemma_3_config_from_hf` asks the Hub for the safetensors header with an HTTP range
    request, even when the file is cached, which fails offline (HF_HUB_OFFLINE=1). While
    this is active the header is read from the cached file when there is one, and from the
    Hub otherwise; every other step of sae-lens's loader runs unchanged.
    """
    from huggingface_hub import constants as hub_constants
    from sae_lens.loading import pretrained_sae_loaders as loaders
    from safetensors import safe_open

    online = loaders.get_safetensors_tensor_shapes

    def shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
        path = _cached_file(repo_id, filename)
        if path is None and hub_constants.is_offline_mode():
            raise ReproError(f"{repo_id}/{filename} is not in the Hugging Face cache and "
                             "HF_HUB_OFFLINE is set; run `repro fetch` while online")
        if path is None:
            return online(repo_id, filename)
        with safe_open(path, "pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118

    with patched(loaders, "get_safetensors_tensor_shapes", shapes):
        yield


def load_pretrained(spec: PretrainedSae, device: torch.device | str, probe_layer: int) -> Any:
    """The public (paper) or shipped (tiny) SAE of RQ3, checked to read the probe layer.

    A release/sae_id goes through `SAE.from_pretrained` (sae-lens 6); with HF_HUB_OFFLINE=1
    it is read from the Hugging Face cache that `repro fetch` filled.
    """
    from sae_lens import SAE

    if spec.path:
        sae = load_sae(Path(spec.path), device)
        what = f"pretrained SAE {spec.path}"
    else:
        what = f"pretrained SAE {spec.release}/{spec.sae_id}"
        try:
            with _shapes_from_cache():
                sae = SAE.from_pretrained(spec.release, spec.sae_id, device=str(device),
                                          dtype="float32")
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ReproError(f"{what} could not be loaded ({first}); run `repro fetch` while "
                             "online, or check release and sae_id in the study file") from None
        sae = sae.eval().requires_grad_(False)
    check_layer(sae, probe_layer, what)
    return sae


def published_stats(spec: PretrainedSae) -> dict[str, Any]:
    """What the SAE's publisher recorded for it, for the verdict's sanity gates.

    A public SAE: sae-lens's own registry (pretrained_saes.yaml, in the installed package):
    its `l0` and `variance_explained` where given, else the L0 its path names (Gemma Scope's
    `average_l0_82`). A local SAE (the tiny profile's shipped ones): its training.json's L0
    at the end of training. A value nobody recorded is None.
    """
    if spec.path:
        record = Path(spec.path) / "training.json"
        try:
            l0 = json.loads(record.read_text(encoding="utf-8")).get("train_l0")
        except (OSError, ValueError):
            l0 = None
        return {"l0": l0, "explained_variance": None,
                "source": f"{recorded_path(record)} (train_l0)"}
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory().get(spec.release)
    if lookup is None:
        return {"l0": None, "explained_variance": None,
                "source": f"sae-lens registry has no release {spec.release}"}
    # the loader fills an unrecorded l0 with 0.0 and variance_explained with 1.0, values no
    # real SAE has: read them as not recorded
    l0 = lookup.expected_l0.get(spec.sae_id) or None
    path_l0 = re.search(r"average_l0_(\d+)", lookup.saes_map.get(spec.sae_id, ""))
    if l0 is None and path_l0:
        l0 = float(path_l0.group(1))
    ev = lookup.expected_var_explained.get(spec.sae_id)
    return {"l0": l0, "explained_variance": None if ev in (None, 1.0) else ev,
            "source": f"sae-lens {package_version('sae-lens')} registry, "
                      f"{spec.release}/{spec.sae_id}"}


# ---- the tiny profile's shipped SAEs --------------------------------------------------------

def build_shipped_sae(model_dir: Path, out_dir: Path, *, probe_layer: int = 3,
                      settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the SAE that plays a tiny model's public pre-trained SAE, saved by sae-lens.

    It sees the dense model on its own corpus split and seed, with its own width and k
    (SHIPPED), so RQ3 compares the dense-trained SAE with a genuinely different one. The
    corpus parameters are those of the asset folder the model sits in (models/<name>).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repro.inputs.data import special_token_mask, token_stream

    s = {**SHIPPED, **(settings or {})}
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    corpus = Path(model_dir).resolve().parent.parent / "corpus.json"
    stream = StreamSpec(TextSource(kind="tiny", path=str(corpus), split=s["split"]),
                        n_sequences=s["n_sequences"], seq_len=s["seq_len"], seed=s["seed"])
    ids = token_stream(stream, tokenizer)
    spec = SaeSpec(width=s["width"], k=s["k"], lr=s["lr"], batch_tokens=s["batch_tokens"])
    sae, record = train_sae(model, ids, special_token_mask(ids, tokenizer), layer=probe_layer,
                            spec=spec, seed=s["seed"], seq_batch=32,
                            metadata={"model_name": Path(model_dir).name,
                                      "context_size": s["seq_len"]})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_sae(sae, out_dir)
    record.update(model=Path(model_dir).name, split=s["split"], probe_layer=probe_layer)
    save_training_record(record, out_dir / "training.json")
    return record
