"""How much GPU memory and disk a study needs, estimated from the study file before a run.

`repro doctor` compares these numbers with what the machine has. They are estimates derived
from the code's data layout (what each stage writes), not measurements; the derivations are
written next to each number so that they can be checked and updated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from repro.inputs import hubcache
from repro.study.methods import METHODS
from repro.study.sources import ModelSpec, StreamSpec
from repro.study.spec import Study

GIB = 2**30

GPU_NEED_GIB = {"paper": 34.0, "paper-plus": 34.0, "tiny": 0.0}
"""Free memory a profile needs on its GPU (estimated). The peak is perplexity on gemma-2-2b
(2.61e9 params, 256k vocabulary), batch 4 x 2048 tokens in bf16:
  weights 2.61e9 x 2 B = 5.2 GB; dense copies of the pruned matrices that ModelHolder keeps to
  switch variants, 2.02e9 x 2 B = 4.0 GB; logits 4 x 2048 x 256000 = 2.1e9 values: bf16 4.2 GB,
  their float32 copy 8.4 GB, cross-entropy's float32 log-softmax 8.4 GB (Gemma 2's logit
  soft-capping briefly holds a second bf16 copy, 4.2 GB, before the float32 copies exist);
  => 5.2 + 4.0 + 4.2 + 8.4 + 8.4 = 30.2 GB = 28.1 GiB, plus ~20 % for allocator slack and
  layer activations = 34 GiB: an A100 40GB or larger. Wanda calibration (128 x 2048 x 2304
  bf16 inputs and outputs per layer, 2.4 GB) and SAE training (16384 x 2304 fp32 encoder and
  decoder with Adam, ~1.2 GB) stay below that. So does SparseGPT (paper-plus), in float64:
  a layer's seven Hessians on gemma-2-2b (five 2304^2, one 2048^2, one 9216^2) 0.9 GB, and
  the solve of the largest, three 9216^2 matrices at once, 2.0 GB. The tiny profile runs on
  the CPU."""

DEFAULT_GPU_NEED_GIB = GPU_NEED_GIB["paper"]
"""Need assumed for a study of one's own that runs on CUDA (--study FILE)."""


@dataclass(frozen=True)
class ModelFacts:
    """Sizes of one model that the estimates need."""

    d_model: int
    """Residual stream width (config hidden_size)."""
    n_params: int
    """Parameters (the pruned matrices are most of them)."""
    download_bytes: int
    """Bytes of the files `repro fetch` downloads (weights in their stored dtype, tokenizer)."""
    origin: str
    """Where the numbers come from: 'files' (config and weights on disk), 'table', 'assumed'."""


KNOWN_MODELS = {
    "google/gemma-3-1b-pt": ModelFacts(1152, 1_000_000_000, 2_010_000_000, "table"),
    "google/gemma-2-2b": ModelFacts(2304, 2_614_000_000, 10_470_000_000, "table"),
    "meta-llama/Llama-3.2-1B": ModelFacts(2048, 1_236_000_000, 2_480_000_000, "table"),
}
"""The paper's models before they are fetched: hidden_size and parameter count from their
config.json, download size from the Hub's file list (gemma-2-2b is stored in float32, the
other two in bfloat16). Once fetched, the numbers are read from the files instead."""
ASSUMED = ModelFacts(4096, 8_000_000_000, 16_000_000_000, "assumed")
"""Stand-in for an unknown model that is not fetched yet (an 8B model in bf16)."""
FULL_SOURCE_BYTES = 1_000_000_000
"""Stored size assumed for a whole (non-streamed) text source: the C4 shard's text is ~0.8 GB
before compression, WikiText-2's test split 1.3 MB."""
TEXT_BYTES_PER_TOKEN = 4
"""Raw text per token of a streamed source's stored prefix (English, ~4 characters/token)."""
TOKENS_PER_DOC = 700
"""Mean document length used for skipped documents (FineWeb sample-10BT: 10e9 GPT-2 tokens in
~15e6 documents)."""
MARGIN = 1.1
"""Tables, figures, per-feature statistics, manifests: 10 % on top of the large files."""
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def model_facts(spec: ModelSpec) -> ModelFacts:
    """Read the sizes from the model's files when they are on disk, else from KNOWN_MODELS."""
    from repro.inputs.models import location

    folder: Path | None = (Path(location(spec)) if spec.is_local or spec.is_packaged
                           else None)
    if folder is None:
        folder = hubcache.cached_snapshot(hubcache.model_item(spec))[0]
    if folder is not None and (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        text = config.get("text_config", config)
        dtype = text.get("dtype") or text.get("torch_dtype") or config.get("torch_dtype")
        weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        return ModelFacts(int(text["hidden_size"]), weights // _DTYPE_BYTES.get(dtype, 4),
                          hubcache.folder_bytes(folder), "files")
    return KNOWN_MODELS.get(spec.source, ASSUMED)


def gpu_need_gib(study: Study) -> float:
    if study.device != "cuda":
        return 0.0
    return GPU_NEED_GIB.get(study.name, DEFAULT_GPU_NEED_GIB)


def out_bytes(study: Study, facts: dict[str, ModelFacts]) -> dict[str, int]:
    """What `repro all` writes under --out, by kind of file.

    tokens: every stream as int64, per model; activations: eval tokens x d_model x dtype bytes
    per variant (dense and pruned); masks: one bit per parameter per pruned variant (bit-packed
    keep-masks; the count includes the embeddings, so it is an upper bound), and for a method
    that updates the weights it keeps (SparseGPT) the kept fraction of the parameters in the
    study's dtype; saes: encoder and decoder, width x d_model float32 each, per run.
    """
    streams = study.data.streams.values()
    act_bytes = _DTYPE_BYTES[study.dtype]
    parts = {"tokens": 8 * sum(s.n_tokens for s in streams) * len(study.models),
             "activations": 0, "masks": 0, "saes": 0}
    for v in study.variants:
        f = facts[v.model]
        parts["activations"] += study.data.eval.n_tokens * f.d_model * act_bytes
        parts["masks"] += 0 if v.is_dense else f.n_params // 8
        if METHODS[v.method].updates_weights:
            parts["masks"] += int((1 - v.sparsity) * f.n_params) * act_bytes
    for r in study.runs:
        parts["saes"] += 2 * study.sae.width * facts[r.variant.model].d_model * 4
    parts["other"] = int(sum(parts.values()) * (MARGIN - 1))
    return parts


def cache_bytes(study: Study, facts: dict[str, ModelFacts], missing_models: list[str],
                missing_saes: int, missing_text: list[bool]) -> int:
    """What `repro fetch` still has to write into the cache.

    missing_models: keys of models not cached; missing_saes: number of SAEs not cached (each
    2 x width x d_model float32, d_model of the largest model); missing_text: one flag per text
    source not stored yet, True when it is streamed (stored as a prefix).
    """
    total = sum(facts[k].download_bytes for k in missing_models)
    widest = max((f.d_model for f in facts.values()), default=0)
    total += missing_saes * 2 * study.sae.width * widest * 4
    prefix = max((s.n_tokens + s.skip_documents * TOKENS_PER_DOC for s in _streamed(study)),
                 default=0)
    for streamed in missing_text:
        total += TEXT_BYTES_PER_TOKEN * prefix if streamed else FULL_SOURCE_BYTES
    return total


def _streamed(study: Study) -> list[StreamSpec]:
    return [s for s in study.data.streams.values() if s.source.streaming]
